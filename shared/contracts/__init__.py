"""Where the services meet: topic names and consumer groups (`topics`), the work-item records on
Kafka (`workitems`), and the AsyncAPI document generated from them (`asyncapi`)."""
