"""Exactly once through a three-broker Kafka cluster while its brokers are SIGKILLed (issue 14).

In the spirit of Kafka's own TransactionsTest (apache/kafka
`tests/kafkatest/tests/core/transactions_test.py`: hard-bounce each broker in turn while data is
copied, then check the output holds every input exactly once), items go through the whole
pipeline — intake over HTTP, the classifier, metering, billing's close and its invoices — on a
local three-node KRaft cluster (`kafka_cluster`: topics with 3 copies, min.insync.replicas 2)
while the test SIGKILLs one broker at a time, every broker once per round (as TransactionsTest's
`bounce_brokers` does): each time, of the brokers not yet killed in the round, the leader of the
busiest `workitems.completed` (even kills) or `workitems.classified` (odd kills) partition, often
also the coordinator of the consumer groups. Each kill lands while a request is in flight; the
test waits until the victim leads nothing, lets more items be accepted without it, restarts it and
waits until every partition has all three copies in sync again before the next kill. Senders
retry a 503 or a dropped connection like a real client (a re-sent request is counted once by
design) and re-send 10 % of items on purpose. Then every client's usage and invoice must equal
the ground truth computed by the test (test_chaos's machinery): 0 lost, 0 counted twice, invoices
to the cent, no valid item dead-lettered; and every topic has 3 copies with min.insync.replicas 2
set on the topic itself.

Reduced size by default (CI). The full size (README):

    TIERLINE_CLUSTER_ITEMS=200000 TIERLINE_CLUSTER_KILLS=6 TIERLINE_CLUSTER_RATE=1500 \\
        ./tierline test tests/e2e/test_kafka_cluster.py -s -o timeout=3600
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from shared.contracts.topics import (
    ALL_TOPICS,
    CLASSIFIER_GROUP,
    METERING_GROUP,
    WORKITEMS_CLASSIFIED,
    WORKITEMS_COMPLETED,
)
from shared.domain.periods import Period
from shared.infra.kafka import end_offsets
from shared.infra.kafka_connection import KafkaConnection
from tests.e2e.conftest import Api
from tests.e2e.test_chaos import (
    Truth,
    close_and_compare,
    copies_to_send,
    dead_lettered_items,
    expected_usage,
    make_item,
    put_chaos_agreements,
    send,
)
from tests.e2e.test_pipeline import last_month
from tools.localinfra import LocalKafkaCluster

ITEMS = int(os.environ.get("TIERLINE_CLUSTER_ITEMS", "3000"))
KILLS = int(os.environ.get("TIERLINE_CLUSTER_KILLS", "3"))
RATE = float(os.environ.get("TIERLINE_CLUSTER_RATE", "150"))  # items/s offered
SENDERS: Final = 4
REQUEST_SIZE: Final = 25
#: How long the cluster may take to move leaders off a dead broker (KRaft fences it after
#: broker.session.timeout.ms, 9 s) or to bring a restarted one back in sync.
CLUSTER_WAIT: Final = 120.0
#: The partitions the pipeline writes on its way to metering.
HOT_TOPICS: Final = (WORKITEMS_COMPLETED, WORKITEMS_CLASSIFIED)


@pytest.fixture(scope="module")
def kafka_bootstrap(kafka_cluster: LocalKafkaCluster) -> str:
    """This module's stack runs on the cluster, not on the session's broker."""
    return kafka_cluster.bootstrap_servers


@pytest.fixture(scope="module")
def stack_options() -> dict[str, Any]:
    return {
        "env": {
            "INTAKE_PUBLISH_TIMEOUT_SECONDS": "3",
            "BILLING_CLOSE_BARRIER_TIMEOUT_SECONDS": "30",
            "BILLING_AUTO_CLOSE": "false",
        },
        "instances": {},
    }


# What metadata says about the cluster.


async def _admin(bootstrap: str, use: Callable[[AIOKafkaAdminClient], Awaitable[Any]]) -> Any:
    """`use` an admin client; a broker that just died may fail a request: asked again."""
    for attempt in range(30):
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="cluster-test")
        try:
            await admin.start()
            return await use(admin)
        except (KafkaError, OSError):
            if attempt == 29:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
    raise AssertionError("unreachable")


async def partitions(bootstrap: str, topics: list[str] | None = None) -> list[dict[str, Any]]:
    """Every partition of `topics` (all topics, the internal ones included, when None) with its
    topic, leader, replicas and in-sync replicas."""
    described = await _admin(bootstrap, lambda admin: admin.describe_topics(topics))
    return [
        {**partition, "topic": topic["topic"]}
        for topic in described
        for partition in topic["partitions"]
    ]


async def victim_for(bootstrap: str, topic: str, candidates: set[int]) -> int | None:
    """The leader of the busiest partition of `topic` among those led by `candidates` (or of
    the other hot topic when they lead none of `topic`'s); None if they lead nothing."""
    for chosen in (topic, *(t for t in HOT_TOPICS if t != topic)):
        ends = await end_offsets(KafkaConnection.plaintext(bootstrap), [chosen])
        leaders = {p["partition"]: p["leader"] for p in await partitions(bootstrap, [chosen])}
        led = [tp for tp in ends if leaders.get(tp.partition) in candidates]
        if led:
            return int(leaders[max(led, key=lambda tp: ends[tp]).partition])
    return None


async def roles(bootstrap: str, node: int) -> str:
    """What `node` does for the pipeline now: the hot partitions it leads, the groups it
    coordinates."""
    led = Counter(
        p["topic"] for p in await partitions(bootstrap, list(HOT_TOPICS)) if p["leader"] == node
    )

    async def coordinators(admin: AIOKafkaAdminClient) -> dict[str, int]:
        return {g: await admin.find_coordinator(g) for g in (CLASSIFIER_GROUP, METERING_GROUP)}

    coordinated = [g for g, n in (await _admin(bootstrap, coordinators)).items() if n == node]
    parts = [f"leader of {n} {topic} partitions" for topic, n in sorted(led.items())]
    parts += [f"coordinator of {group}" for group in coordinated]
    return ", ".join(parts) or "nothing"


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float) -> float:
    """Seconds until `condition` holds; fails naming `what` after `timeout`."""
    started = time.monotonic()
    while not await condition():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout:.0f}s"
        await asyncio.sleep(0.2)
    return time.monotonic() - started


# The load: senders that take item numbers only below what the bouncer has released, so items
# are still being sent at every step of every kill whatever the machine's speed.


@dataclass
class Load:
    released: int
    changed: asyncio.Condition
    next_item: int = 0
    #: Requests posted and not yet answered 202 (a retried request stays in flight).
    in_flight: int = 0

    async def release(self, up_to: int) -> None:
        async with self.changed:
            self.released = max(self.released, min(up_to, ITEMS))
            self.changed.notify_all()

    async def take(self) -> range:
        """The next item numbers to send (empty once every item was taken)."""
        async with self.changed:
            await self.changed.wait_for(
                lambda: self.next_item < self.released or self.next_item >= ITEMS
            )
            numbers = range(self.next_item, min(self.next_item + REQUEST_SIZE, self.released))
            self.next_item = max(self.next_item, numbers.stop)
            return numbers


async def gated_sender(
    api: Api,
    truth: Truth,
    load: Load,
    rng: random.Random,
    clients: list[str],
    period: Period,
    tz_of: dict[str, str],
) -> None:
    pause = REQUEST_SIZE / (RATE / SENDERS)
    while numbers := await load.take():
        batch = [
            copy
            for n in numbers
            for copy in copies_to_send(rng, truth, make_item(rng, n, clients, period, tz_of))
        ]
        started = time.monotonic()
        load.in_flight += 1
        try:
            await send(api, truth, batch)  # retries 503s and dropped connections
        finally:
            load.in_flight -= 1
        await asyncio.sleep(max(0.0, pause - (time.monotonic() - started)))


# The bouncer.


@dataclass
class Kill:
    node: int
    #: What the victim did for the pipeline when it was killed (`roles`).
    roles: str
    #: Hot partitions it led then.
    led: int
    #: Items acknowledged before the kill, and requests in flight at that instant.
    acked_before: int
    in_flight: int
    #: Seconds until it led nothing (its partitions had new leaders).
    moved_after: float
    #: Items acknowledged after its partitions moved and before its restart: it was not needed.
    acked_while_down: int
    #: Seconds from the restart until every partition had all its copies in sync again.
    back_after: float

    def __str__(self) -> str:
        return (
            f"node {self.node} ({self.roles}) killed with {self.in_flight} requests in flight "
            f"and {self.acked_before} items acked; leaders moved after {self.moved_after:.1f}s; "
            f"{self.acked_while_down} items acked while it was down; all in sync "
            f"{self.back_after:.1f}s after its restart"
        )


async def bounce(
    cluster: LocalKafkaCluster,
    load: Load,
    truth: Truth,
    *,
    number: int,
    segment: int,
    candidates: set[int],
) -> Kill:
    """Kill a broker while items are in flight — of `candidates`, the leader of the busiest
    partition of a hot topic (workitems.completed on even kills, workitems.classified on odd
    ones) — let more items be accepted without it, restart it, and wait until every copy is in
    sync again. Releases three segments of items on the way."""
    bootstrap = cluster.bootstrap_servers
    base = (3 * number + 1) * segment

    def acked() -> int:
        return len(truth.counted)

    await load.release(base)

    async def a_quarter_accepted() -> bool:
        return acked() >= base - segment * 3 // 4

    await until(a_quarter_accepted, "items accepted before the kill", CLUSTER_WAIT)
    # A broker restarted earlier leads again once the controller restores preferred leaders.
    chosen: list[int] = []

    async def a_candidate_leads() -> bool:
        found = await victim_for(bootstrap, HOT_TOPICS[number % 2], candidates)
        chosen[:] = [] if found is None else [found]
        return found is not None

    await until(a_candidate_leads, f"one of nodes {sorted(candidates)} leading", CLUSTER_WAIT)
    [victim] = chosen
    held = await roles(bootstrap, victim)
    led = [p for p in await partitions(bootstrap, list(HOT_TOPICS)) if p["leader"] == victim]
    while load.in_flight == 0:
        if load.next_item >= load.released:  # the senders wait for items: give them some
            await load.release(load.released + REQUEST_SIZE)
        await asyncio.sleep(0.002)
    acked_before, in_flight = acked(), load.in_flight
    # Killed from the event loop itself: no answer to a request in flight can arrive between
    # the count above and the SIGKILL.
    cluster.kill(victim)
    await load.release(base + segment)

    async def leads_nothing() -> bool:
        leaders = {p["leader"] for p in await partitions(bootstrap, list(HOT_TOPICS))}
        return victim not in leaders and -1 not in leaders

    moved_after = await until(leads_nothing, f"partitions of node {victim} moving", CLUSTER_WAIT)
    acked_at_move = acked()
    await load.release(base + 2 * segment)

    async def accepted_more() -> bool:
        return acked() >= min(load.released, acked_at_move + segment // 2)

    await until(accepted_more, f"items accepted with node {victim} down", CLUSTER_WAIT)
    acked_while_down = acked() - acked_at_move
    restarted = time.monotonic()
    await asyncio.to_thread(cluster.restart, victim)

    async def back_in_sync() -> bool:
        return all(len(p["isr"]) == len(p["replicas"]) for p in await partitions(bootstrap))

    await until(back_in_sync, f"node {victim} back in sync", CLUSTER_WAIT)
    return Kill(
        node=victim,
        roles=held,
        led=len(led),
        acked_before=acked_before,
        in_flight=in_flight,
        moved_after=moved_after,
        acked_while_down=acked_while_down,
        back_after=time.monotonic() - restarted,
    )


#: DescribeConfigs' `config_source` of a setting made on the topic itself (not inherited from
#: the broker's defaults, which on this cluster say 2 as well).
TOPIC_CONFIG: Final = 1


async def topic_layout(bootstrap: str) -> dict[str, tuple[set[int], str | None]]:
    """Each Tierline topic's replication factors (over its partitions) and the
    min.insync.replicas set on the topic itself (None when it only inherits the broker's)."""
    layout: dict[str, set[int]] = {}
    for partition in await partitions(bootstrap, list(ALL_TOPICS)):
        layout.setdefault(partition["topic"], set()).add(len(partition["replicas"]))

    async def describe(admin: AIOKafkaAdminClient) -> Any:
        return await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in ALL_TOPICS]
        )

    own_min_isr: dict[str, str | None] = {}
    for response in await _admin(bootstrap, describe):
        assert response.API_VERSION >= 1  # v0 has no config_source
        for _, _, _, topic, entries in response.resources:
            own_min_isr[topic] = next(
                (
                    value
                    for name, value, _, source, *_ in entries
                    if name == "min.insync.replicas" and source == TOPIC_CONFIG
                ),
                None,
            )
    return {topic: (factors, own_min_isr[topic]) for topic, factors in layout.items()}


async def test_exactly_once_while_brokers_die(
    api: Api, run_id: str, kafka_cluster: LocalKafkaCluster
) -> None:
    assert KILLS >= 1 and ITEMS >= (3 * KILLS + 1) * REQUEST_SIZE * 4
    bootstrap = kafka_cluster.bootstrap_servers
    rng = random.Random(int(os.environ.get("TIERLINE_CLUSTER_SEED", "20261203")))
    period = last_month()
    clients, tz_of, agreements = await put_chaos_agreements(api, f"cluster{{n}}-{run_id}")

    # The services created their topics on three brokers: three copies, two in sync.
    layout = await topic_layout(bootstrap)
    assert layout == {topic: ({3}, "2") for topic in ALL_TOPICS}, layout

    truth, load = Truth(), Load(released=0, changed=asyncio.Condition())
    segment = ITEMS // (3 * KILLS + 1)
    started = time.monotonic()
    senders = [
        asyncio.create_task(
            gated_sender(api, truth, load, random.Random(rng.random()), clients, period, tz_of)
        )
        for _ in range(SENDERS)
    ]
    kills: list[Kill] = []
    try:
        for number in range(KILLS):
            # Like TransactionsTest's bounce_brokers: every broker once per round.
            this_round = kills[len(kills) - len(kills) % kafka_cluster.size :]
            candidates = set(kafka_cluster.nodes) - {kill.node for kill in this_round}
            kill = await bounce(
                kafka_cluster, load, truth, number=number, segment=segment, candidates=candidates
            )
            kills.append(kill)
            print(f"\nkill {number + 1}: {kill}", flush=True)
        await load.release(ITEMS)
        await asyncio.gather(*senders)
    finally:
        for task in senders:
            task.cancel()
    sent_seconds = time.monotonic() - started

    mismatches = await close_and_compare(api, truth, agreements, period)
    lost = counted_twice = 0
    for client in clients:
        usage, unclassified = expected_usage(truth, client)
        got = await api.usage(client, period.key)
        difference = got["items"] + got["unclassified_items"] - sum(u.items for u in usage)
        difference -= unclassified
        lost += max(0, -difference)
        counted_twice += max(0, difference)
    dead_valid = len(await dead_lettered_items(api, truth))
    print(
        f"\nkafka cluster: {len(truth.counted)} items ({truth.sent_copies} copies sent, "
        f"{truth.duplicates} re-sent duplicates) in {sent_seconds:.1f}s through {len(kills)} "
        f"SIGKILLed brokers (nodes {[k.node for k in kills]}); {truth.requests} requests, "
        f"{truth.retries} retried {dict(truth.statuses)}; lost {lost}, counted twice "
        f"{counted_twice}; valid items dead-lettered {dead_valid}; mismatches {len(mismatches)}"
    )
    assert len(truth.counted) == ITEMS
    assert len(kills) == KILLS
    for kill in kills:  # each kill hit a leader with items in flight, and writes went on
        assert kill.led > 0 and kill.in_flight > 0 and kill.acked_before > 0, kill
        assert kill.acked_while_down > 0, kill
    assert {kill.node for kill in kills} == set(kafka_cluster.nodes) or KILLS < 3
    assert (lost, counted_twice, dead_valid) == (0, 0, 0)
    assert not mismatches, "\n".join(mismatches)
