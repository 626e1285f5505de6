"""Issue 10 point 4: the classifier with the longest titles and patterns SPEC §3 allows.

`(a+)+$` once stopped the whole classifier on a 41-character title. Each case of
`bench.hostile_rules` is classified here item by item, its cost per item printed beside the
typical item's (figures are read, never asserted), and every outcome checked: each case finishes,
and each item lands where its rules say.
"""

from __future__ import annotations

import time

import pytest

from bench.hostile_rules import CASES, MAX_PATTERN, MAX_RULES, MAX_TITLE, Case, record
from shared.domain.agreement.rules import classify

EXPECTED = {
    "typical": ("customer_support", "standard", "default"),
    "typical + (a+)+$, longest": ("customer_support", "standard", "default"),
    # no rule matches and there is no default: the queue's keyword places it
    "longest, no match": ("customer_support", "standard", "builtin:customer_support"),
    "longest, last matches": ("accounting", "basic", "last"),
}


def test_the_longest_case_is_as_long_as_the_spec_allows() -> None:
    longest = next(case for case in CASES if case.name == "longest, no match")
    rules = longest.agreement.classification.rules
    assert len(rules) == MAX_RULES
    patterns = [c.pattern.pattern for r in rules for c in r.when.values() if c.pattern]
    assert max(len(p) for p in patterns) >= MAX_PATTERN - 5
    assert len(longest.title(0)) == MAX_TITLE


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_case_finishes_and_classifies_as_its_rules_say(
    case: Case, capsys: pytest.CaptureFixture[str]
) -> None:
    items = [record(case.agreement.client_id, n, case.title(n)) for n in range(50)]
    started = time.perf_counter()
    decided = [classify(item, case.agreement) for item in items]
    seconds = (time.perf_counter() - started) / len(items)
    outcomes = {(d.service_line, d.complexity, d.rule_id) if d else None for d in decided}
    assert outcomes == {EXPECTED[case.name]}
    with capsys.disabled():
        print(f"\n  classify, {case.name}: {seconds * 1e6:.1f} µs/item", end="")
