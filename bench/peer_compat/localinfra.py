"""`shared.localinfra` of the peer kit: the local Kafka and PostgreSQL (bench/peer_compat)."""

from tools.localinfra import LocalInfra, free_port

__all__ = ["LocalInfra", "free_port"]
