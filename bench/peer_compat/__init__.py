"""Names the read-only peer kit imports; adapters over the current modules, no logic of their own.

The Kafka Streams peer benchmark (`../shared/peers/metering-vs-kstreams.sh --tierline .`, README
"Against Kafka Streams") is not ours to edit and was written against older module names. The
modules of this folder are importable as `shared.<module>` (one commented line in
shared/__init__.py extends the package's `__path__` to here), so the kit runs unchanged. Each one
only forwards to where the thing lives now; tests/unit/test_peer_compat.py imports every name the
kit imports and calls each the way the kit does.

`KIT_NAMES` is what the kit imports and the one function of ours each name calls (change the
right-hand side when the function moves; the test keeps the table and the kit in step). Two names
cannot live here because their package or module is real, so they are re-exported where the kit
looks: `shared.ledger` (shared/ledger/__init__.py) and `bench.run` (bench/run.py).
"""

from __future__ import annotations

from typing import Final

#: (module, name) the kit imports → what it is (or calls) in this repository.
KIT_NAMES: Final[dict[tuple[str, str], str]] = {
    ("services.classifier.handlers", "classified_messages"): (
        "services.classifier.handlers.classified_messages (no adapter: the kit imports it there)"
    ),
    ("shared.events", "CompletedWorkItem"): "shared.contracts.workitems.CompletedWorkItem",
    ("shared.events", "decode_classified"): "shared.contracts.workitems.decode_classified",
    ("shared.kafka", "BatchProducer"): "shared.infra.kafka.BatchProducer (bootstrap → connection)",
    ("shared.kafka", "end_offsets"): "shared.infra.kafka.end_offsets (bootstrap → connection)",
    ("shared.kafka", "ensure_topics"): "shared.infra.kafka.ensure_topics (bootstrap → connection)",
    ("shared.kafka", "partitions_of"): "shared.infra.kafka.partitions_of (bootstrap → connection)",
    ("shared.ledger", "NO_COMPLEXITY"): "shared.domain.usage.NO_COMPLEXITY (shared/ledger/)",
    ("shared.ledger", "UNCLASSIFIED"): "shared.domain.usage.UNCLASSIFIED (shared/ledger/)",
    ("shared.localinfra", "LocalInfra"): "tools.localinfra.LocalInfra",
    ("shared.localinfra", "free_port"): "tools.localinfra.free_port",
    ("shared.workload", "stream_items"): "tools.workload.stream_items",
    ("shared.supervisor", "ServiceProcess"): "tools.supervisor.ServiceProcess",
    ("shared.supervisor", "new_keys"): "tools.supervisor.new_keys",
    ("bench.run", "descendants"): "bench.resources.descendants (re-exported by bench/run.py)",
    ("bench.run", "profile"): "bench.phases.profile.profile (re-exported by bench/run.py)",
}
