"""The usage ledger's plain values: a class's summed counts and the usage that is rated from them.
Pure: no I/O (the SQL that reads them is shared/ledger/reads.py's)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from shared.domain.agreement.fields import (
    COMPLEXITIES,
    SERVICE_LINES,
    ServiceClass,
)
from shared.domain.rating import ClassUsage

#: The class of an item the classifier could not classify (counted, never billed).
UNCLASSIFIED: Final = "unclassified"
NO_COMPLEXITY: Final = "none"

_CLASSES: Final[dict[tuple[str, str], ServiceClass]] = {
    (line, complexity): ServiceClass(line, complexity)
    for line in SERVICE_LINES
    for complexity in COMPLEXITIES
}


def class_of(service_line: str, complexity: str) -> ServiceClass | None:
    """The class a stored (service_line, complexity) names, or None: an unclassified item, or a
    row written before metering refused classes no agreement knows (read as unclassified, never
    billed). The one test of "classified" for counts and item documents alike."""
    return _CLASSES.get((service_line, complexity))


@dataclass(frozen=True)
class ClassCount:
    service_line: str
    complexity: str
    items: int
    units: int
    handling_seconds: int
    late_items: int

    @property
    def classified(self) -> bool:
        """Whether the count is of a class the agreements know. Metering refuses any other
        before writing; a row written before it did is read as unclassified (never billed),
        so it cannot make usage or a close fail."""
        return class_of(self.service_line, self.complexity) is not None

    @property
    def service_class(self) -> ServiceClass:
        """The class of a classified count (see `classified`)."""
        found = class_of(self.service_line, self.complexity)
        if found is None:
            raise ValueError(f"{self.service_line}/{self.complexity} is not a class")
        return found


def billable_usage(counts: list[ClassCount]) -> list[ClassUsage]:
    """The usage that is rated: every classified count (unclassified items are never billed)."""
    return [
        ClassUsage(c.service_class, c.items, c.units, c.handling_seconds)
        for c in counts
        if c.classified
    ]
