"""The usage ledger, the only SQL two services share: metering writes it, billing and the console
read it (`reads`); `schema.sql` defines every table. README.md says who writes what and how a
close locks."""

# The names of the unclassified slot, here too because the read-only peer kit imports them from
# `shared.ledger` (bench/peer_compat/__init__.py).
from shared.domain.usage import NO_COMPLEXITY, UNCLASSIFIED

__all__ = ["NO_COMPLEXITY", "UNCLASSIFIED"]
