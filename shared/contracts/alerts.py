"""The usage alerts (`usage.alerts`): one typed definition each, which metering builds, stores in
its outbox (`metering.alerts.body`), publishes and documents in AsyncAPI.

- `UsageAlert` (`bpo.usage.threshold`, SPEC §5): an open period's W crossed 80 % / 100 % of its
  tier, or scope moved it up.
- `ServiceLevelWarning` (`bpo.usage.service_level`, SPEC §11): mid-period, a service level's
  attainment is below its target — the credit it would bring if the period closed now.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, Self

from pydantic import Field, RootModel, model_validator

from shared.contracts.invoice import PeriodKey, TierChoice
from shared.contracts.wire import CloudEvent, Document, Fixed, Plain, require_minor_digits
from shared.domain.rating import AlertKind

ALERT_TYPE: Final = "bpo.usage.threshold"
SERVICE_LEVEL_TYPE: Final = "bpo.usage.service_level"
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


class ServiceLevelWarningData(Document):
    """A level of an open period missed so far (measured > 0, attainment below target)."""

    client_id: str
    period: PeriodKey
    #: The level's id in the agreement.
    service_level: str
    measured: int = Field(ge=1)
    met: int = Field(ge=0)
    attainment_percent: Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]{2}$")]
    target_percent: Plain
    #: The amount of the `service_credit` line the level would add if the period closed now (at
    #: the fee of `current_tier`): negative, or 0.00 when the level's pool share is 0.
    credit_at_stake: Fixed
    currency: str
    #: The tier the period lands in if it closed now, whose fee the credit is a share of.
    current_tier: TierChoice

    @model_validator(mode="after")
    def _money_in_currency(self) -> Self:
        require_minor_digits(self.currency, [self.credit_at_stake])
        return self


class ServiceLevelWarning(CloudEvent[ServiceLevelWarningData]):
    """CloudEvents 1.0: a service level of an open period is below its target; once per level,
    client and period."""

    type: Literal["bpo.usage.service_level"] = SERVICE_LEVEL_TYPE
    source: Literal["/tierline/metering"] = ALERT_SOURCE


class UsageAlertEvent(RootModel[UsageAlert | ServiceLevelWarning]):
    """What `usage.alerts` carries: a threshold alert, or a service-level warning."""
