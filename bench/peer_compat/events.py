"""`shared.events` of the peer kit: the records between the stages (bench/peer_compat)."""

from shared.contracts.workitems import CompletedWorkItem, decode_classified

__all__ = ["CompletedWorkItem", "decode_classified"]
