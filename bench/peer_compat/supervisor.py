"""`shared.supervisor` of the peer kit: a service as a process, and keys (bench/peer_compat)."""

from tools.supervisor import ServiceProcess, new_keys

__all__ = ["ServiceProcess", "new_keys"]
