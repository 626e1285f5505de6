"""`shared.workload` of the peer kit: the bench's item stream (bench/peer_compat)."""

from tools.workload import stream_items

__all__ = ["stream_items"]
