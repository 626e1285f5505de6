"""The read-only Kafka Streams peer kit (../shared/peers/metering_vs_kstreams.py) finds every name
it imports in this checkout, and each adapter of bench/peer_compat takes the call the kit makes.

The kit's imports are read from its source with `ast` when it is beside this checkout (the tests
that need it skip, saying so, only when it is absent); `KIT_NAMES` lists the same names, so they
are imported and called here in any case. The Kafka adapters are called on a real broker in
tests/integration/test_peer_compat_kafka.py.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bench.peer_compat import KIT_NAMES
from shared.domain.usage import NO_COMPLEXITY, UNCLASSIFIED, class_of
from tests.peer_kit import ROOT, kit_imports, kit_or_skip, load_kit, resolve

COMPAT = ROOT / "bench" / "peer_compat"


def test_the_kits_imports_are_read_wherever_they_sit() -> None:
    source = (
        "import os\nfrom shared.kafka import A, B\n"
        "def f():\n    from bench.run import c\n    import tools.x\n"
        "class K:\n    async def g(self):\n        from services.a.b import d as e\n"
        "from aiokafka import AIOKafkaConsumer\nfrom . import local\n"
    )
    assert kit_imports(source) == {
        ("shared.kafka", "A"),
        ("shared.kafka", "B"),
        ("bench.run", "c"),
        ("tools.x", ""),
        ("services.a.b", "d"),
    }


def test_the_table_lists_exactly_what_the_kit_imports() -> None:
    """A name the kit starts to import fails here until it has an adapter and a row."""
    found = kit_imports(kit_or_skip().read_text())
    assert ("shared.kafka", "BatchProducer") in found  # the parse saw the kit's imports
    assert found == set(KIT_NAMES), {
        "imported by the kit, not in KIT_NAMES": sorted(found - set(KIT_NAMES)),
        "in KIT_NAMES, no longer imported by the kit": sorted(set(KIT_NAMES) - found),
    }


def test_every_name_the_kit_imports_resolves() -> None:
    missing = []
    for module, name in sorted(kit_imports(kit_or_skip().read_text())):
        try:
            resolve(module, name)
        except (ImportError, AttributeError) as error:
            missing.append(f"from {module} import {name}: {error!r}")
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize(
    ("module", "name"), sorted(KIT_NAMES), ids=[f"{m}.{n}" for m, n in sorted(KIT_NAMES)]
)
def test_each_listed_name_resolves(module: str, name: str) -> None:
    """Without the kit too: each name the adapters promise is importable where the kit looks."""
    assert resolve(module, name) is not None


def test_the_ledger_names_are_the_domains() -> None:
    assert resolve("shared.ledger", "NO_COMPLEXITY") is NO_COMPLEXITY
    assert resolve("shared.ledger", "UNCLASSIFIED") is UNCLASSIFIED


def first_month_and_end(months: int) -> tuple[datetime, datetime]:
    first = datetime(2026, 5, 1, tzinfo=UTC)
    end = first
    for _ in range(months):
        end = (end + timedelta(days=32)).replace(day=1)
    return first, end


def test_a_streamed_item_is_encoded_and_decoded_as_the_kit_does() -> None:
    """stream_items → CompletedWorkItem → classified_messages(item, None)[0][1] → decode_classified,
    with the arguments and fields the kit's `workload` uses."""
    stream_items = resolve("shared.workload", "stream_items")
    completed_item = resolve("shared.events", "CompletedWorkItem")
    classified_messages = resolve("services.classifier.handlers", "classified_messages")
    decode_classified = resolve("shared.events", "decode_classified")
    first, end = first_month_and_end(2)
    generated = list(
        stream_items(["c000", "c001", "c002"], first, end, 200, seed=5, duplicate_ratio=0.2)
    )
    copies = Counter((str(g["client_id"]), str(g["id"])) for g in generated)
    assert len(generated) == 200 and max(copies.values()) > 1  # re-sent copies, same key
    for n, fields in enumerate(generated):
        item = completed_item(
            id=fields["id"],
            client_id=fields["client_id"],
            source=fields["source"],
            completed_at=datetime.fromisoformat(str(fields["completed_at"])),
            received_at=end + timedelta(days=1, milliseconds=n),
            key_source=fields["source"],
            queue=fields["queue"],
            title=fields["title"],
            units=fields["units"],
            handling_seconds=fields["handling_seconds"],
        )
        messages = classified_messages(item, None)
        assert messages[0][0] == "workitems.classified"  # the topic metering reads
        decoded = decode_classified(messages[0][1])
        assert (decoded.client_id, decoded.id) == (fields["client_id"], fields["id"])
        assert first <= decoded.completed_at < end
        # No agreement: the built-in rules place it, or it is unclassified.
        assert decoded.agreement_version is None
        assert (decoded.service_line is None) == (decoded.complexity is None)
        assert (decoded.units, decoded.handling_seconds) == (
            fields["units"],
            fields["handling_seconds"],
        )


def test_the_kits_own_workload_runs_on_our_names() -> None:
    """The kit's `workload` itself, a few hundred records: first copies decode to their own key,
    re-sent copies repeat a key already sent."""
    kit = load_kit()
    seen: set[tuple[str, str]] = set()
    resent = 0
    for key, value, first in kit.workload(300, 5, 2, 0.2, 7):
        assert isinstance(key, bytes) and isinstance(value, bytes)
        if first is None:
            resent += 1
            continue
        client, item_id, month, line, complexity, units, handling = first
        assert key == client.encode() and (client, item_id) not in seen
        seen.add((client, item_id))
        assert class_of(line, complexity) is not None or (line, complexity) == (
            UNCLASSIFIED,
            NO_COMPLEXITY,
        )
        assert len(month) == 7 and units >= 1 and handling >= 0
    assert resent > 0 and len(seen) + resent == 300


def test_local_infra_is_built_as_the_kit_builds_it(tmp_path: Path) -> None:
    """LocalInfra(data_dir), ports set before the start, pids read, a context manager, the topics'
    files under <data_dir>/kafka/data (nothing is started here)."""
    local_infra = resolve("shared.localinfra", "LocalInfra")
    infra = local_infra(tmp_path)
    infra.kafka.port, infra.kafka.controller_port = 19092, 19093
    infra.postgres.port = 15432
    assert (infra.kafka.port, infra.kafka.controller_port, infra.postgres.port) == (
        19092,
        19093,
        15432,
    )
    assert infra.kafka.pid is None and infra.postgres.pid is None
    assert callable(infra.__enter__) and callable(infra.__exit__)
    assert infra.kafka.log_dir == tmp_path / "kafka" / "data"
    assert isinstance(resolve("shared.localinfra", "free_port")(), int)


def test_a_metering_process_is_built_as_the_kit_builds_it(tmp_path: Path) -> None:
    service_process = resolve("shared.supervisor", "ServiceProcess")
    admin_key, intake_keys = resolve("shared.supervisor", "new_keys")()
    assert admin_key and all("=" in pair for pair in intake_keys.split(","))
    env = {"TIERLINE_ADMIN_KEY": admin_key, "TIERLINE_INTAKE_KEYS": intake_keys}
    process = service_process("metering-2", 18099, dict(env), tmp_path / "m.log", module="metering")
    assert (process.name, process.url, process.pid) == (
        "metering-2",
        "http://127.0.0.1:18099",
        None,
    )
    assert process.env["METERING_PORT"] == "18099"
    assert not process.alive() and process.tail() == "" and process.stop() is None


def test_descendants_finds_a_child_and_profile_takes_pid_and_seconds() -> None:
    descendants = resolve("bench.run", "descendants")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in descendants(os.getpid())
    finally:
        child.kill()
        child.wait()
    profile: Any = resolve("bench.run", "profile")
    inspect.signature(profile).bind(1234, 15)  # the kit: profile(process.pid, int(seconds))


def test_the_kafka_adapters_take_a_bootstrap_string() -> None:
    """The call shapes only (tests/integration/test_peer_compat_kafka.py calls them on a broker)."""
    kafka: Any = resolve("shared", "kafka")
    inspect.signature(kafka.BatchProducer).bind("127.0.0.1:9", client_id="peer-bench-loader")
    inspect.signature(kafka.end_offsets).bind("127.0.0.1:9", ["workitems.classified"])
    inspect.signature(kafka.ensure_topics).bind("127.0.0.1:9", partitions=6)
    inspect.signature(kafka.partitions_of).bind("127.0.0.1:9", "workitems.classified")


def test_no_product_code_imports_the_kits_names() -> None:
    """`shared.kafka`, `shared.events`, ... exist only beside bench/ (not in the image): the
    product imports the real modules. The ledger's two names are the domain's, imported there."""
    adapters = {f"shared.{path.stem}" for path in COMPAT.glob("*.py") if path.stem != "__init__"}
    assert {"shared.kafka", "shared.events", "shared.localinfra"} <= adapters
    found = {
        f"{path.relative_to(ROOT)} imports {target}"
        for top in ("services", "shared")
        for path in sorted((ROOT / top).rglob("*.py"))
        for module, name in kit_imports(path.read_text())
        for target in (module, f"{module}.{name}")
        if any(target == a or target.startswith(f"{a}.") for a in adapters)
    }
    assert not found, sorted(found)
