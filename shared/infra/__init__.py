"""The plumbing every service shares: Kafka (`kafka`, `agreement_view`), PostgreSQL (`db`), HTTP
(`http`: one `run_service` for every entry point), `auth`, `logs`, `settings`, and the named crash
points of the fault tests (`faults`)."""
