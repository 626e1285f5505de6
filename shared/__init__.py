import os

# The peer benchmark kit (../shared/peers, read-only) imports old names under `shared.`
# (shared.kafka, shared.events, ...): bench/peer_compat holds adapters for them. No module of
# shared/ has those names; in the image (no bench/) the extra folder is simply absent.
__path__.append(os.path.join(os.path.dirname(os.path.abspath(__path__[0])), "bench", "peer_compat"))
