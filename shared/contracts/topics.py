"""Topic names, consumer group ids and dead-letter topics: where the services meet on Kafka."""

from __future__ import annotations

from typing import Final

# --- topics ---------------------------------------------------------------------------------

WORKITEMS_COMPLETED: Final = "workitems.completed"
WORKITEMS_CLASSIFIED: Final = "workitems.classified"
WORKITEMS_UNCLASSIFIED: Final = "workitems.unclassified"
AGREEMENTS: Final = "agreements"
INVOICES: Final = "billing.invoices"
USAGE_ALERTS: Final = "usage.alerts"

#: Topics some service consumes; each has a `<topic>.dlq` for what cannot be processed.
#: `workitems.unclassified` is for people and downstream tools: metering reads every outcome,
#: unclassified included, from `workitems.classified`, so all copies of one (client_id, id)
#: reach it in one partition, in order, and the first copy is the one that counts.
CONSUMED_TOPICS: Final = (WORKITEMS_COMPLETED, WORKITEMS_CLASSIFIED, AGREEMENTS)
ALL_TOPICS: Final = (
    WORKITEMS_COMPLETED,
    WORKITEMS_CLASSIFIED,
    WORKITEMS_UNCLASSIFIED,
    AGREEMENTS,
    INVOICES,
    USAGE_ALERTS,
)
COMPACTED_TOPICS: Final = frozenset({AGREEMENTS})
#: A topic's dead-letter topic is its name with this suffix (`dlq`).
DLQ_SUFFIX: Final = ".dlq"

# --- consumer groups ----------------------------------------------------------------------------

#: The groups that commit the pipeline's offsets: the classifier's on `workitems.completed`,
#: metering's on `workitems.classified`. Billing's close barrier, the console's lag and the bench
#: read the same two.
CLASSIFIER_GROUP: Final = "tierline-classifier"
METERING_GROUP: Final = "tierline-metering"

# The work-item topics carry JSON records without headers: a header per record cost each
# consumer about 5 % of its CPU (every record's headers are parsed into a dict), and the
# payload's type is the topic's, documented in the AsyncAPI document.


def dlq(topic: str) -> str:
    return f"{topic}{DLQ_SUFFIX}"
