"""Names several parts must spell alike come from one definition: the dead-letter counter every
consumer exposes, and the consumer groups (their services, billing's close barrier, the console)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from services.classifier.handlers import ClassifierMetrics
from services.console.app import GROUPS
from services.metering.handlers import MeteringMetrics
from shared.contracts.topics import (
    CLASSIFIER_GROUP,
    METERING_GROUP,
    WORKITEMS_CLASSIFIED,
    WORKITEMS_COMPLETED,
)


def dead_letter_lines(registry: CollectorRegistry) -> list[str]:
    return [
        line
        for line in generate_latest(registry).decode().splitlines()
        if "tierline_dead_letters" in line and "_created" not in line
    ]


def test_the_classifier_and_metering_expose_the_same_dead_letter_counter() -> None:
    classifier, metering = CollectorRegistry(), CollectorRegistry()
    ClassifierMetrics(classifier).dead_letters.labels(topic=WORKITEMS_COMPLETED).inc()
    MeteringMetrics(metering).dead_letters.labels(topic=WORKITEMS_COMPLETED).inc()
    assert (
        dead_letter_lines(classifier)
        == dead_letter_lines(metering)
        == [
            "# HELP tierline_dead_letters_total Messages sent to a dead-letter topic",
            "# TYPE tierline_dead_letters_total counter",
            'tierline_dead_letters_total{topic="workitems.completed"} 1.0',
        ]
    )


def test_the_group_ids_keep_their_deployed_names_and_the_console_watches_both() -> None:
    # A renamed group would start from nothing: the committed offsets live under these names.
    assert (CLASSIFIER_GROUP, METERING_GROUP) == ("tierline-classifier", "tierline-metering")
    assert GROUPS == {
        CLASSIFIER_GROUP: (WORKITEMS_COMPLETED,),
        METERING_GROUP: (WORKITEMS_CLASSIFIED,),
    }
