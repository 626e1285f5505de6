"""A Kafka topic of a test's own, for tests on the real broker."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def new_topic(
    bootstrap: str,
    prefix: str,
    *,
    partitions: int = 1,
    configs: Mapping[str, str] | None = None,
) -> str:
    """Creates `<prefix>-<random>` with `partitions` and topic-level `configs`; its name."""
    topic = f"{prefix}-{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    name=topic,
                    num_partitions=partitions,
                    replication_factor=1,
                    topic_configs=dict(configs or {}),
                )
            ]
        )
    finally:
        await admin.close()
    return topic
