"""How many copies Tierline's topics get, and how many must be in sync (issue 14)."""

from __future__ import annotations

import argparse

import pytest

from shared.contracts.topics import AGREEMENTS, WORKITEMS_COMPLETED, dlq
from shared.infra.kafka import make_broker, topic_configs, topic_replication
from shared.infra.kafka_connection import KafkaConnection, bootstrap_list
from tools.cli import kafka_brokers


@pytest.mark.parametrize(("brokers", "copies"), [(1, 1), (2, 2), (3, 3), (5, 3)])
def test_unset_it_is_as_many_copies_as_brokers_up_to_three(brokers: int, copies: int) -> None:
    assert topic_replication(brokers, None) == copies


@pytest.mark.parametrize(("brokers", "configured"), [(5, 2), (3, 1), (3, 3), (5, 5)])
def test_the_setting_wins(brokers: int, configured: int) -> None:
    assert topic_replication(brokers, configured) == configured


def test_more_copies_than_brokers_is_refused_naming_the_setting() -> None:
    with pytest.raises(
        ValueError,
        match=r"TIERLINE_TOPIC_REPLICATION is 3 but the Kafka cluster has 1 live broker$",
    ):
        topic_replication(1, 3)


def test_a_cluster_without_brokers_is_refused() -> None:
    with pytest.raises(ValueError, match="no live broker"):
        topic_replication(0, None)


@pytest.mark.parametrize("topic", [WORKITEMS_COMPLETED, AGREEMENTS, dlq(WORKITEMS_COMPLETED)])
def test_three_copies_need_two_in_sync_for_a_write(topic: str) -> None:
    configs = topic_configs(topic, replication=3)
    assert configs["min.insync.replicas"] == "2"
    # What each topic has whatever its replication stays.
    assert {k: v for k, v in configs.items() if k != "min.insync.replicas"} == topic_configs(topic)


@pytest.mark.parametrize("replication", [1, 2])
def test_fewer_copies_keep_the_brokers_min_insync(replication: int) -> None:
    """With one or two copies a second in-sync copy would stop every write when one broker is
    down: the broker's default (1) stands."""
    assert "min.insync.replicas" not in topic_configs(WORKITEMS_COMPLETED, replication=replication)


def test_a_list_of_bootstrap_servers_reaches_the_faststream_broker_as_a_list() -> None:
    """FastStream takes a string for one address; a cluster's list must arrive split."""
    assert bootstrap_list(" 127.0.0.1:1, 127.0.0.1:2 ,") == ["127.0.0.1:1", "127.0.0.1:2"]
    broker = make_broker(KafkaConnection.plaintext("127.0.0.1:1,127.0.0.1:2"), client_id="unit")
    assert broker._connection_kwargs["bootstrap_servers"] == ["127.0.0.1:1", "127.0.0.1:2"]


@pytest.mark.parametrize(("text", "brokers"), [("1", 1), ("3", 3), ("5", 5)])
def test_up_takes_one_broker_or_a_cluster_of_three_or_more(text: str, brokers: int) -> None:
    assert kafka_brokers(text) == brokers


@pytest.mark.parametrize("text", ["0", "2", "10", "three", "-3"])
def test_up_refuses_a_cluster_that_cannot_lose_a_broker(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="must be 1, or 3 to 9 brokers"):
        kafka_brokers(text)
