"""The import rules of the layout, read from the source with `ast` (nothing is imported):

- no service imports another: `services/<a>` never imports `services.<b>`;
- product code (`services/`, `shared/`) never imports developer tooling (`tools/`, `tests/`,
  `bench/`);
- `shared/` is layered (`SHARED_LAYERS`): every module lives in one layer and imports of `shared/`
  only its own layer and those below it;
- a pure module — one of `PURE_MODULES`, one under a package of `PURE_PACKAGES`, or a product
  module whose docstring says "Pure" — loads no I/O library (`IO_PACKAGES`) and reads neither the
  clock nor the environment, and neither does any module of this tree it imports, directly or
  through others (importing a module runs it, and its package's `__init__`).

Imports under `if TYPE_CHECKING:` are left out: they never run. The checker is tested on a small
synthetic tree at the end, so a broken rule is known to fail here.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PRODUCT = ("services", "shared")
TOOLING = ("tools", "tests", "bench")
IO_PACKAGES = frozenset(
    {"asyncpg", "aiokafka", "faststream", "fastapi", "httpx", "uvicorn", "pydantic_settings"}
)
#: Pure by decision, whatever their docstring says.
PURE_MODULES: tuple[str, ...] = ()
#: Every module under these packages is pure (the domain of the layout in issue 11).
PURE_PACKAGES = ("shared.domain",)
_SAYS_PURE = re.compile(r"\bPure\b")
#: The layers of `shared/` and what each may import of `shared/` besides itself: the domain nothing,
#: the contracts the domain, the plumbing the domain and the contracts, the ledger the domain and
#: the database plumbing. Every module of `shared/` lives in one of them.
SHARED_LAYERS: dict[str, tuple[str, ...]] = {
    "shared.domain": (),
    "shared.contracts": ("shared.domain",),
    "shared.infra": ("shared.domain", "shared.contracts"),
    "shared.ledger": ("shared.domain", "shared.infra.db"),
}

#: Pure modules allowed to break the rule for now, each with why (none today: the plain count
#: types moved from the ledger to the pure `shared.domain.usage`). Once a listed module no
#: longer breaks the rule, `test_known_exceptions_still_break_the_rule` fails until it is removed.
KNOWN_IMPURE: dict[str, str] = {}

#: `time.<name>` and `from time import <name>`: reading the clock.
_CLOCK_FUNCTIONS = frozenset(
    {"time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns"}
)
#: `<datetime|date>.<name>()`: reading the clock.
_NOW_METHODS = frozenset({"now", "utcnow", "today"})
#: `os.<name>` and `from os import <name>`: reading the environment.
_ENVIRONMENT = frozenset({"environ", "environb", "getenv", "getenvb"})


@dataclass(frozen=True)
class Violation:
    rule: str
    module: str
    detail: str


def report(found: list[Violation]) -> str:
    """One line a violation: the module, what it does, the rule it breaks."""
    return "\n".join(f"{v.module}: {v.detail} ({v.rule})" for v in found)


@dataclass
class Module:
    name: str
    path: Path
    docstring: str
    #: (line, the dotted name an import statement loads), relative imports resolved.
    imports: list[tuple[int, str]] = field(default_factory=list)
    #: (line, what it reads): the clock or the environment.
    impurities: list[tuple[int, str]] = field(default_factory=list)


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of `tree` except what sits in an `if TYPE_CHECKING:` body."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def parse_module(root: Path, path: Path) -> Module:
    tree = ast.parse(path.read_text(), filename=str(path))
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    module = Module(name, path, ast.get_docstring(tree) or "")
    for node in _runtime_nodes(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            module.imports.extend((line, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                above = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*above, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            module.imports.append((line, target))
            # `from package import submodule` loads the submodule too.
            module.imports.extend((line, f"{target}.{alias.name}") for alias in node.names)
            if target == "os":
                module.impurities.extend(
                    (line, f"os.{a.name}") for a in node.names if a.name in _ENVIRONMENT
                )
            if target == "time":
                module.impurities.extend(
                    (line, f"time.{a.name}") for a in node.names if a.name in _CLOCK_FUNCTIONS
                )
        elif isinstance(node, ast.Attribute):
            owner = node.value  # `os` in `os.environ`, `datetime` in `dt.datetime.now`
            base_name = (
                owner.id
                if isinstance(owner, ast.Name)
                else owner.attr
                if isinstance(owner, ast.Attribute)
                else ""
            )
            if base_name == "os" and node.attr in _ENVIRONMENT:
                module.impurities.append((line, f"os.{node.attr}"))
            elif base_name == "time" and node.attr in _CLOCK_FUNCTIONS:
                module.impurities.append((line, f"time.{node.attr}"))
            elif base_name in ("datetime", "date") and node.attr in _NOW_METHODS:
                module.impurities.append((line, f"{base_name}.{node.attr}"))
    return module


def load_tree(root: Path) -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for top in (*PRODUCT, *TOOLING):
        for path in sorted((root / top).rglob("*.py")):
            module = parse_module(root, path)
            modules[module.name] = module
    return modules


def in_tree(modules: dict[str, Module], dotted: str) -> list[str]:
    """The modules of the tree that importing `dotted` runs: it (or its longest prefix that is a
    module of the tree, for `module.attribute`) and every package above it."""
    parts = dotted.split(".")
    return [name for i in range(1, len(parts) + 1) if (name := ".".join(parts[:i])) in modules]


def is_product(name: str) -> bool:
    return name.split(".")[0] in PRODUCT


def pure_modules(modules: dict[str, Module]) -> list[str]:
    return sorted(
        name
        for name, module in modules.items()
        if is_product(name)
        and (
            name in PURE_MODULES
            or any(name == p or name.startswith(f"{p}.") for p in PURE_PACKAGES)
            or _SAYS_PURE.search(module.docstring)
        )
    )


def _first_per_statement(found: list[Violation]) -> list[Violation]:
    """One finding per import statement (`from a import b` loads `a` and maybe `a.b`)."""
    seen: dict[tuple[str, str], Violation] = {}
    for violation in found:
        seen.setdefault((violation.module, violation.detail.split(" imports ")[0]), violation)
    return list(seen.values())


def services_import_no_other_service(modules: dict[str, Module]) -> list[Violation]:
    found = []
    for name, module in modules.items():
        parts = name.split(".")
        if parts[0] != "services" or len(parts) < 2:
            continue
        for line, target in module.imports:
            other = target.split(".")
            if other[0] == "services" and len(other) > 1 and other[1] != parts[1]:
                found.append(
                    Violation("no service imports another", name, f"line {line} imports {target}")
                )
    return _first_per_statement(found)


def product_imports_no_tooling(modules: dict[str, Module]) -> list[Violation]:
    return _first_per_statement(
        [
            Violation("product code never imports tooling", name, f"line {line} imports {target}")
            for name, module in modules.items()
            if is_product(name)
            for line, target in module.imports
            if target.split(".")[0] in TOOLING
        ]
    )


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


def shared_is_layered(modules: dict[str, Module]) -> list[Violation]:
    found = []
    for name, module in modules.items():
        if name.split(".")[0] != "shared" or name == "shared":
            continue
        layer = next((layer for layer in SHARED_LAYERS if _within(name, layer)), None)
        if layer is None:
            found.append(Violation("shared/ is layered", name, "lives in no layer (SHARED_LAYERS)"))
            continue
        allowed = (layer, *SHARED_LAYERS[layer])
        for line, target in module.imports:
            if target.split(".")[0] != "shared" or any(a.startswith(f"{target}.") for a in allowed):
                continue  # not shared code, or a package above what may be imported
            if not any(_within(target, a) for a in allowed):
                found.append(Violation("shared/ is layered", name, f"line {line} imports {target}"))
    return _first_per_statement(found)


def impure_loads(modules: dict[str, Module], name: str) -> list[str]:
    """What breaks purity in `name` or in any module of the tree it loads, with the import path."""
    found: list[str] = []
    # Importing `name` runs it and the `__init__` of every package above it.
    paths = {
        loaded: [name] if loaded == name else [name, loaded] for loaded in in_tree(modules, name)
    }
    queue = [name, *(loaded for loaded in paths if loaded != name)]
    while queue:
        current = queue.pop(0)
        module = modules[current]
        via = " → ".join(paths[current])
        io_lines: set[int] = set()
        for line, target in module.imports:
            if target.split(".")[0] in IO_PACKAGES and line not in io_lines:
                io_lines.add(line)  # once per statement
                found.append(f"{via} (line {line}) imports {target}")
            for loaded in in_tree(modules, target):
                if loaded not in paths:
                    paths[loaded] = [*paths[current], loaded]
                    queue.append(loaded)
        found.extend(f"{via} (line {line}) reads {what}" for line, what in module.impurities)
    return found


def pure_modules_stay_pure(modules: dict[str, Module]) -> list[Violation]:
    return [
        Violation("pure modules load no I/O, clock or environment", name, detail)
        for name in pure_modules(modules)
        for detail in impure_loads(modules, name)
    ]


def check(modules: dict[str, Module]) -> list[Violation]:
    return [
        *services_import_no_other_service(modules),
        *product_imports_no_tooling(modules),
        *shared_is_layered(modules),
        *pure_modules_stay_pure(modules),
    ]


# --- the rules on this repository -------------------------------------------------------------


@pytest.fixture(scope="module")
def modules() -> dict[str, Module]:
    return load_tree(ROOT)


def test_no_service_imports_another(modules: dict[str, Module]) -> None:
    found = services_import_no_other_service(modules)
    assert not found, report(found)


def test_product_code_never_imports_tooling(modules: dict[str, Module]) -> None:
    found = product_imports_no_tooling(modules)
    assert not found, report(found)


def test_shared_is_layered(modules: dict[str, Module]) -> None:
    found = shared_is_layered(modules)
    assert not found, "\n".join(map(str, found))
    assert {n.split(".")[1] for n in modules if n.startswith("shared.")} == {
        layer.split(".")[1] for layer in SHARED_LAYERS
    }


def test_pure_modules_load_no_io_clock_or_environment(modules: dict[str, Module]) -> None:
    found = [v for v in pure_modules_stay_pure(modules) if v.module not in KNOWN_IMPURE]
    assert not found, report(found)


def test_known_exceptions_still_break_the_rule(modules: dict[str, Module]) -> None:
    """An exception that no longer applies is removed, so the rule covers that module again."""
    pure = set(pure_modules(modules))
    for name in KNOWN_IMPURE:
        assert name in pure, f"{name} is not a pure module (any more): remove it from KNOWN_IMPURE"
        assert impure_loads(modules, name), f"{name} is pure now: remove it from KNOWN_IMPURE"


def test_the_pure_modules_are_found(modules: dict[str, Module]) -> None:
    """The purity rule covers what it names, and what calls itself pure in the services."""
    pure = set(pure_modules(modules))
    assert set(PURE_MODULES) <= set(modules), set(PURE_MODULES) - set(modules)
    assert {"shared.domain.agreement.rules", "services.intake.parsing"} <= pure
    assert "services.classifier.handlers" not in pure  # says "classify (pure)", does I/O


def test_the_tree_is_read(modules: dict[str, Module]) -> None:
    """The rules run over the real tree: its services, shared code and tooling are all parsed,
    imports included (the product's plumbing imports the I/O libraries the pure modules may not)."""
    for top in (*PRODUCT, *TOOLING):
        assert any(name.startswith(f"{top}.") for name in modules), top
    io_importers = {
        name.split(".")[0]
        for name, module in modules.items()
        for _, target in module.imports
        if target.split(".")[0] in IO_PACKAGES
    }
    assert set(PRODUCT) <= io_importers, io_importers


# --- the checker on a synthetic tree ----------------------------------------------------------


def write(root: Path, files: dict[str, str]) -> dict[str, Module]:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for top in (*PRODUCT, *TOOLING):
        (root / top).mkdir(exist_ok=True)
        for folder in [root / top, *(p for p in (root / top).rglob("*") if p.is_dir())]:
            (folder / "__init__.py").touch()
    return load_tree(root)


CLEAN = {
    "shared/domain/money.py": '"""Money."""\nfrom decimal import Decimal\n',
    "shared/infra/kafka.py": (
        '"""Plumbing."""\nimport os\nimport aiokafka\nfrom shared.domain.money import Decimal\n'
        "X = os.environ\n"
    ),
    "services/a/app.py": (
        '"""App."""\nfrom shared.infra.kafka import X\nfrom services.a import rules\n'
    ),
    "services/a/rules.py": (
        '"""Rules. Pure: no I/O."""\n'
        "from typing import TYPE_CHECKING\n"
        "from shared.domain.money import Decimal\n"
        "from . import helpers\n"
        "if TYPE_CHECKING:\n    import asyncpg\n"
    ),
    "services/a/helpers.py": '"""Helpers."""\nfrom datetime import datetime\n',
    "services/b/app.py": '"""Another service."""\nimport shared.infra.kafka\n',
    "tools/cli.py": '"""Tooling."""\nimport services.a.app\nimport services.b.app\n',
    "tests/test_x.py": "import tools.cli\nimport services.b.app\n",
}


def test_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    modules = write(tmp_path, CLEAN)
    assert pure_modules(modules) == ["services.a.rules", "shared.domain", "shared.domain.money"]
    assert check(modules) == []


@pytest.mark.parametrize(
    ("relative", "text", "rule", "module", "detail"),
    [
        (
            "services/a/app.py",
            "import services.b.app\n",
            "no service imports another",
            "services.a.app",
            "imports services.b.app",
        ),
        (
            "services/a/app.py",
            "from ..b import app\n",
            "no service imports another",
            "services.a.app",
            "imports services.b",
        ),
        (
            "shared/infra/kafka.py",
            "def f():\n    from tools.cli import main\n",
            "product code never imports tooling",
            "shared.infra.kafka",
            "imports tools.cli",
        ),
        (
            "services/b/app.py",
            "from tests import test_x\n",
            "product code never imports tooling",
            "services.b.app",
            "imports tests",
        ),
        (
            "services/b/app.py",
            "import bench.run\n",
            "product code never imports tooling",
            "services.b.app",
            "imports bench.run",
        ),
        (
            "shared/domain/money.py",
            '"""Money. Pure."""\nimport httpx\n',
            "pure modules load no I/O, clock or environment",
            "shared.domain.money",
            "imports httpx",
        ),
        (
            "services/a/helpers.py",
            "from faststream.kafka import KafkaBroker\n",
            "pure modules load no I/O, clock or environment",
            "services.a.rules",
            "services.a.rules → services.a.helpers (line 1) imports faststream.kafka",
        ),
        (
            "services/a/helpers.py",
            "import datetime\nNOW = datetime.datetime.now()\n",
            "pure modules load no I/O, clock or environment",
            "services.a.rules",
            "reads datetime.now",
        ),
        (
            "shared/domain/money.py",
            '"""Money. Pure."""\nimport time\nT = time.monotonic()\n',
            "pure modules load no I/O, clock or environment",
            "shared.domain.money",
            "reads time.monotonic",
        ),
        (
            "shared/domain/money.py",
            '"""Money. Pure."""\nfrom os import getenv\n',
            "pure modules load no I/O, clock or environment",
            "shared.domain.money",
            "reads os.getenv",
        ),
        (
            "shared/__init__.py",
            "import asyncpg\n",
            "pure modules load no I/O, clock or environment",
            "shared.domain.money",
            "shared.domain.money → shared (line 1) imports asyncpg",
        ),
        (
            "shared/contracts/topics.py",
            "from shared.ledger.reads import counts\n",
            "shared/ is layered",
            "shared.contracts.topics",
            "line 1 imports shared.ledger.reads",
        ),
        (
            "shared/util.py",
            '"""Helpers."""\n',
            "shared/ is layered",
            "shared.util",
            "lives in no layer",
        ),
        (
            "shared/domain/tiers.py",
            "import os\nX = os.environ['X']\n",
            "pure modules load no I/O, clock or environment",
            "shared.domain.tiers",
            "reads os.environ",
        ),
    ],
)
def test_checker_finds_a_broken_rule(
    tmp_path: Path, relative: str, text: str, rule: str, module: str, detail: str
) -> None:
    modules = write(tmp_path, {**CLEAN, relative: text})
    found = check(modules)
    assert any(v.rule == rule and v.module == module and detail in v.detail for v in found), found
    assert all(v.rule == rule for v in found), found
