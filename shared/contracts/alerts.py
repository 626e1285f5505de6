"""The usage alert of SPEC §5 (`usage.alerts`): one typed definition that metering builds,
stores in its outbox (`metering.alerts.body`), publishes and documents in AsyncAPI."""

from __future__ import annotations

from typing import Final, Literal

from shared.contracts.invoice import PeriodKey, TierChoice
from shared.contracts.wire import CloudEvent, Document, Plain
from shared.domain.rating import AlertKind

ALERT_TYPE: Final = "bpo.usage.threshold"
ALERT_SOURCE: Final = "/tierline/metering"


class UsageAlertData(Document):
    client_id: str
    period: PeriodKey
    threshold: AlertKind
    #: The tier whose threshold was crossed (for `scope`, the tier scope moved the period to).
    tier: str
    up_to: Plain | None
    weighted_units: Plain
    current_tier: TierChoice


class UsageAlert(CloudEvent[UsageAlertData]):
    """CloudEvents 1.0: an open period crossed 80 % / 100 % of its tier, or scope moved it up."""

    type: Literal["bpo.usage.threshold"] = ALERT_TYPE
    source: Literal["/tierline/metering"] = ALERT_SOURCE
