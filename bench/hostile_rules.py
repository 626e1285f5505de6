"""The classifier's cost per item with the longest titles and patterns SPEC §3 allows.

    python -m bench.hostile_rules                 # 2,000 items per case, three rounds
    python -m bench.hostile_rules --items 200     # a quick look

A hostile (or merely careless) agreement has 500 rules, each a 1,000-character pattern full of
nested quantifiers — `(a+)+$`, the pattern that once stopped the classifier on a 41-character
title — and its items carry 500-character titles built to make a backtracking engine try every
split. Each case classifies the same number of `workitems.completed` records into the
`workitems.classified` bodies the classifier publishes (decide + encode, as the hot path does),
and prints µs per item and items per second of one core. The cases:

- typical: SPEC §3's example agreement (a few rules) and short titles;
- typical + (a+)+$, longest: the same agreement with issue 10's `(a+)+$` rule first, and
  500-character titles of `a`s ending in `!` (a backtracking engine never finishes one);
- longest, no match: every one of the 500 rules is evaluated and fails, on a 500-character title;
- longest, last matches: the same, but the title matches only the last rule.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.classifier.handlers import classified_messages
from shared.contracts.workitems import CompletedWorkItem
from shared.domain.agreement.agreement import Agreement, parse_agreement
from tests.spec_example import spec_body

MAX_RULES = 500
MAX_PATTERN = 1000
MAX_TITLE = 500


def _pricing() -> dict[str, Any]:
    return {
        "weights": {"basic": 1, "standard": 2, "complex": 5},
        "tiers": [{"name": "Only", "up_to": None, "fee": "100.00"}],
    }


def typical_agreement(*extra_rules: dict[str, Any]) -> Agreement:
    """SPEC §3's rules and default, after `extra_rules` (the pricing does not matter here)."""
    spec = spec_body()
    return parse_agreement(
        {
            "client_id": "typical",
            "currency": "USD",
            "classification": {
                **spec["classification"],
                "rules": [*extra_rules, *spec["classification"]["rules"]],
            },
            "pricing": _pricing(),
        }
    )


def hostile_pattern(n: int) -> str:
    """A 1,000-character pattern of nested quantifiers ending in `$` that a 500-character run
    of `a`s followed by `!` never matches, distinct per rule."""
    head, unit, tail = f"(?:r{n}|", "(a+)+", ")$"
    units = (MAX_PATTERN - len(head) - len(tail)) // len(unit)
    return head + unit * units + tail


def longest_agreement() -> Agreement:
    rules = [
        {
            "id": f"hostile-{n}",
            "when": {"title": {"regex": hostile_pattern(n)}},
            "then": {"service_line": "hr", "complexity": "complex"},
        }
        for n in range(MAX_RULES - 1)
    ]
    rules.append(
        {
            "id": "last",
            "when": {"title": {"regex": "(x+x+)+y$"}},
            "then": {"service_line": "accounting", "complexity": "basic"},
        }
    )
    return parse_agreement(
        {
            "client_id": "longest",
            "currency": "USD",
            "classification": {"rules": rules},
            "pricing": _pricing(),
        }
    )


def record(client: str, n: int, title: str) -> CompletedWorkItem:
    now = datetime.now(UTC)
    return CompletedWorkItem(
        id=f"i-{n}",
        client_id=client,
        source="bench",
        completed_at=now,
        received_at=now,
        key_source="bench",
        queue="Customer Care",
        title=title,
    )


@dataclass(frozen=True)
class Case:
    name: str
    agreement: Agreement
    title: Callable[[int], str]


#: The rule of issue 10 that once stopped the classifier on a 41-character title.
REDOS_RULE: dict[str, Any] = {
    "id": "redos",
    "when": {"title": {"regex": "(a+)+$"}},
    "then": {"service_line": "hr", "complexity": "complex"},
}

CASES = (
    Case("typical", typical_agreement(), lambda n: f"Refund request #{n} for order {n * 7}"),
    Case(
        "typical + (a+)+$, longest",
        typical_agreement(REDOS_RULE),
        lambda n: "a" * (MAX_TITLE - 1) + "!",
    ),
    Case("longest, no match", longest_agreement(), lambda n: "a" * (MAX_TITLE - 1) + "!"),
    Case("longest, last matches", longest_agreement(), lambda n: "x" * (MAX_TITLE - 1) + "y"),
)


def per_item_seconds(case: Case, items: int) -> float:
    records = [record(case.agreement.client_id, n, case.title(n)) for n in range(items)]
    started = time.perf_counter()
    for item in records:
        classified_messages(item, case.agreement)
    return (time.perf_counter() - started) / items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000, help="items per case and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the median is shown")
    args = parser.parse_args()
    print(f"{'case':<28}{'µs/item':>10}{'items/s (1 core)':>18}")
    results = {}
    for case in CASES:
        rounds = [per_item_seconds(case, args.items) for _ in range(args.rounds)]
        seconds = statistics.median(rounds)
        results[case.name] = seconds
        print(f"{case.name:<28}{seconds * 1e6:>10.1f}{1 / seconds:>18,.0f}")
    typical = results["typical"]
    for name, seconds in results.items():
        if name != "typical":
            print(f"{name}: {seconds / typical:.1f}× the typical item's cost")


if __name__ == "__main__":
    main()
