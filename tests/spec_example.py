"""SPEC §3's example agreement: the one copy the tests and the bench use.

`SPEC_YAML` is the example verbatim (comments included); `spec_body` is the same agreement as a
JSON body; `spec_agreement` is it with rules that place the tests' workload by queue.
`SPEC_TERMS_YAML` is §11's example of the optional sections verbatim; `SPEC_YAML +
SPEC_TERMS_YAML` is the example agreement with service levels and a commitment, and
`SPEC_SERVICE_LEVELS` / `SPEC_COMMITMENT` are those sections as a JSON body has them.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Final

import yaml

SPEC_YAML: Final = """\
client_id: acme
name: ACME Corp
currency: USD                 # ISO 4217; amounts use the currency's minor units (JPY: 0, USD: 2)
timezone: America/New_York    # IANA; periods are calendar months in this zone
effective_from: 2026-01-01
classification:
  rules:                      # ordered; the first rule whose every condition holds wins
    - id: ap-invoices-large
      when: {queue: "AP Invoices", units: {gte: 20}}
      then: {service_line: accounting, complexity: complex}
    - id: password-reset
      when: {title: {regex: "(?i)password reset"}}
      then: {service_line: it_support, complexity: basic}
  default: {service_line: customer_support, complexity: standard}   # optional
pricing:
  weights: {basic: 1, standard: 2, complex: 5}   # weighted units per item (decimals allowed)
  unit_basis: {data_entry: units}                # these lines weigh item.units; others count 1
  tiers:                                         # ordered, ascending
    - {name: Essential,    up_to: 1000,  fee: "10000.00",
       scope: {data_entry: [basic, standard], customer_support: [basic, standard]}}
    - {name: Professional, up_to: 5000,  fee: "35000.00",
       scope: {data_entry: all, customer_support: all, accounting: [basic, standard],
               hr: [basic, standard], it_support: all, procurement: [basic, standard]}}
    - {name: Enterprise,   up_to: 15000, fee: "90000.00", scope: all}
  overage_rate: "7.50"                           # per weighted unit above the top tier's up_to
  scope_policy: {mode: upgrade, min_items: 10, out_of_scope_rate: "12.00"}
"""

SPEC_TERMS_YAML: Final = """\
service_levels:
  at_risk_percent: "10"        # of the period's tier fee: the pool that service credits draw on
  calendar: {days: [mon, tue, wed, thu, fri], hours: ["09:00", "18:00"], holidays: [2026-12-25]}
  levels:                      # ordered; pool_percent adds up to at most 100
    - {id: ap-turnaround, service_line: accounting, complexity: [basic, standard],
       within_hours: 24, clock: business, target_percent: "95", pool_percent: "60"}
    - {id: care-turnaround, service_line: customer_support,
       within_hours: 4, target_percent: "90", pool_percent: "40"}
commitment:
  annual_minimum: "400000.00"  # per contract year
"""

_BODY: Final[dict[str, Any]] = {
    **yaml.safe_load(SPEC_YAML),
    "effective_from": "2026-01-01",  # YAML reads a date; a JSON body carries the string
}

#: Rules that place the tests' workload by queue (instead of the example's two rules).
QUEUE_RULES: Final = (
    {
        "id": "cs",
        "when": {"queue": "Customer Care"},
        "then": {"service_line": "customer_support", "complexity": "basic"},
    },
    {
        "id": "keying",
        "when": {"queue": "Data Entry"},
        "then": {"service_line": "data_entry", "complexity": "standard"},
    },
    {
        "id": "desk",
        "when": {"queue": "IT Desk"},
        "then": {"service_line": "it_support", "complexity": "complex"},
    },
)


def spec_body(client_id: str = "acme") -> dict[str, Any]:
    """SPEC §3's example as a JSON agreement body (a fresh copy each call) for `client_id`."""
    return {**copy.deepcopy(_BODY), "client_id": client_id}


def spec_agreement(client_id: str) -> dict[str, Any]:
    """SPEC §3's example agreement, with rules that place items by queue."""
    return {**spec_body(client_id), "classification": {"rules": copy.deepcopy(list(QUEUE_RULES))}}


#: SPEC §11's example sections as a JSON agreement body carries them (dates as strings).
_TERMS: Final[dict[str, Any]] = json.loads(json.dumps(yaml.safe_load(SPEC_TERMS_YAML), default=str))
#: SPEC §11's example `service_levels` section, as a JSON agreement body carries it.
SPEC_SERVICE_LEVELS: Final[dict[str, Any]] = _TERMS["service_levels"]
#: SPEC §11's example `commitment` section.
SPEC_COMMITMENT: Final[dict[str, Any]] = _TERMS["commitment"]


def spec_body_with_levels(client_id: str = "acme") -> dict[str, Any]:
    """`spec_body` with SPEC §11's example service levels."""
    return {**spec_body(client_id), "service_levels": copy.deepcopy(SPEC_SERVICE_LEVELS)}
