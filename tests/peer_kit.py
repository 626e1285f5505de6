"""The read-only Kafka Streams peer kit beside this checkout (../shared/peers), for the tests of
the names it imports (bench/peer_compat): where it is, what it imports, and the module itself."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[1]
KIT: Final = ROOT.parent / "shared" / "peers" / "metering_vs_kstreams.py"
#: The top-level packages of this repository: an import of one of them is a name the kit needs.
OURS: Final = ("shared", "services", "bench", "tools")


def kit_imports(source: str) -> set[tuple[str, str]]:
    """(module, name) of every `from <ours> import <name>` in `source`, wherever it sits (the kit
    imports inside its functions), and (module, "") for a plain `import <ours>...`."""
    found: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in OURS:
                found |= {(node.module, alias.name) for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {(a.name, "") for a in node.names if a.name.split(".")[0] in OURS}
    return found


def resolve(module: str, name: str) -> Any:
    """What `from module import name` binds: an attribute of the module, else its submodule
    `name` (the module itself for name "")."""
    loaded = importlib.import_module(module)
    if not name:
        return loaded
    if not hasattr(loaded, name) and hasattr(loaded, "__path__"):
        try:
            importlib.import_module(f"{module}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{module}.{name}":
                raise  # the submodule exists but fails to import: say why
    return getattr(loaded, name)


def kit_or_skip() -> Path:
    """The kit's script; skips the test, saying so, when the kit is not beside this checkout."""
    if not KIT.is_file():
        pytest.skip(f"the peer kit is absent: no {KIT} beside this checkout")
    return KIT


def load_kit() -> ModuleType:
    """The kit's script as a module (it imports only the standard library at the top; our names
    are imported inside the functions that use them, as they run)."""
    spec = importlib.util.spec_from_file_location("metering_vs_kstreams", kit_or_skip())
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being built
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module
