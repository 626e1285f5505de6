"""Every Kafka client of the services, the tools and the benchmark is built by `KafkaConnection`
(shared/infra/kafka_connection.py), so none can reach a secured cluster without its TLS and SASL
settings: a client class named anywhere else (called, subclassed, handed on as a factory) fails
this test. Type annotations may name them: they build nothing.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKED: Final = ("services", "shared", "tools", "bench")
THE_ONE_PLACE: Final = "shared/infra/kafka_connection.py"

#: What connects to Kafka, by the names it is imported under.
CLIENTS: Final = frozenset(
    {
        "aiokafka.AIOKafkaProducer",
        "aiokafka.producer.AIOKafkaProducer",
        "aiokafka.AIOKafkaConsumer",
        "aiokafka.consumer.AIOKafkaConsumer",
        "aiokafka.AIOKafkaClient",
        "aiokafka.client.AIOKafkaClient",
        "aiokafka.admin.AIOKafkaAdminClient",
        "aiokafka.admin.client.AIOKafkaAdminClient",
        "aiokafka.conn.AIOKafkaConnection",
        "aiokafka.conn.create_conn",
        "faststream.kafka.KafkaBroker",
        "faststream.kafka.broker.KafkaBroker",
        "faststream.kafka.broker.broker.KafkaBroker",
    }
)

#: Named elsewhere on purpose, with why.
ALLOWED: Final = {
    # The whole system's AsyncAPI document is generated from a broker that declares every
    # topic; it is never started (the contracts may not import the infra layer).
    ("shared/contracts/asyncapi.py", "faststream.kafka.KafkaBroker"),
}


def imported_names(tree: ast.Module) -> dict[str, str]:
    """Local name → the dotted name it stands for, from the module's imports (anywhere in it)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    names[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def dotted(node: ast.expr, names: dict[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return names.get(node.id)
    if isinstance(node, ast.Attribute):
        base = dotted(node.value, names)
        return f"{base}.{node.attr}" if base is not None else None
    return None


def annotation_nodes(tree: ast.Module) -> set[int]:
    """ids of every node inside a type annotation."""
    roots: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            roots.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns:
            roots.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
    return {id(inner) for root in roots for inner in ast.walk(root)}


def client_references(source: str) -> Iterator[tuple[int, str]]:
    """(line, client) of each place `source` names a Kafka client class outside annotations."""
    tree = ast.parse(source)
    names = imported_names(tree)
    in_annotations = annotation_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in in_annotations or not isinstance(node, ast.Name | ast.Attribute):
            continue
        if not isinstance(node.ctx, ast.Load):
            continue
        name = dotted(node, names)
        if name in CLIENTS:
            yield node.lineno, name


def checked_files() -> list[Path]:
    return sorted(path for folder in CHECKED for path in (ROOT / folder).rglob("*.py"))


def test_only_the_kafka_connection_builds_kafka_clients() -> None:
    found = {
        (path.relative_to(ROOT).as_posix(), line, client)
        for path in checked_files()
        for line, client in client_references(path.read_text())
    }
    outside = sorted(
        (path, line, client)
        for path, line, client in found
        if path != THE_ONE_PLACE and (path, client) not in ALLOWED
    )
    assert not outside, "build these through shared.infra.kafka_connection.KafkaConnection"
    # The one place does build each kind, and every exception is still needed.
    assert {client for path, _, client in found if path == THE_ONE_PLACE} >= {
        "aiokafka.AIOKafkaProducer",
        "aiokafka.AIOKafkaConsumer",
        "aiokafka.admin.AIOKafkaAdminClient",
        "faststream.kafka.KafkaBroker",
    }
    assert {(path, client) for path, _, client in found} >= ALLOWED


@pytest.mark.parametrize(
    "source",
    [
        "from aiokafka import AIOKafkaProducer\np = AIOKafkaProducer(bootstrap_servers='x')\n",
        "import aiokafka\nc = aiokafka.AIOKafkaConsumer('t')\n",
        "from aiokafka.admin import AIOKafkaAdminClient as Admin\nadmin = Admin()\n",
        "from faststream.kafka import KafkaBroker\nclass Mine(KafkaBroker): ...\n",
        "import functools\nfrom aiokafka import AIOKafkaConsumer\n"
        "make = functools.partial(AIOKafkaConsumer, group_id=None)\n",
        "def f():\n    from aiokafka.conn import create_conn\n    return create_conn('h', 1)\n",
    ],
)
def test_a_client_built_any_other_way_is_found(source: str) -> None:
    assert list(client_references(source))


def test_a_client_named_in_an_annotation_only_is_not_a_construction() -> None:
    source = (
        "from aiokafka import AIOKafkaProducer\n"
        "def f(p: AIOKafkaProducer | None) -> AIOKafkaProducer: ...\n"
        "x: list[AIOKafkaProducer] = []\n"
    )
    assert list(client_references(source)) == []
