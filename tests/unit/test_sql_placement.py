"""SQL lives only in the stores and the shared ledger (issue 11): a string in product code that
holds SQL text (SELECT, INSERT, UPDATE, DELETE, LOCK) is found with `ast` outside
`services/*/store.py`, `services/*/*_store.py`, `shared/ledger/` and `shared/infra/db.py` only
as a failure here. Docstrings are prose and are left out; the checker is tried on a small
synthetic tree at the end, so a broken rule is known to fail here.
"""

from __future__ import annotations

import ast
import re
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("services", "shared")
#: Where SQL may be written, as paths relative to the repository root.
SQL_PLACES = (
    "services/*/store.py",
    "services/*/*_store.py",
    "shared/ledger/*",
    "shared/infra/db.py",
)
#: SQL statements, not the words alone (an HTTP method `DELETE` is no SQL).
_SQL = re.compile(
    r"\bSELECT\s|\bINSERT\s+INTO\b|\bUPDATE\s+[\w.\"]+(\s+(AS\s+)?\w+)?\s+SET\b"
    r"|\bDELETE\s+FROM\b|\bLOCK\s+TABLE\b"
)


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the string nodes that are docstrings (of the module, a class or a function)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def sql_outside_its_places(root: Path) -> list[str]:
    """Every `path:line: text` of a non-docstring string with SQL text outside `SQL_PLACES`;
    and every `.sql` file outside them."""
    found = []
    for top in PRODUCT:
        for path in sorted((root / top).rglob("*")):
            relative = path.relative_to(root).as_posix()
            if not path.is_file() or any(fnmatch(relative, p) for p in SQL_PLACES):
                continue
            if path.suffix == ".sql":
                found.append(f"{relative}: an SQL file")
            if path.suffix != ".py":
                continue
            tree = ast.parse(path.read_text(), filename=relative)
            docstrings = _docstrings(tree)
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and id(node) not in docstrings
                    and _SQL.search(node.value)
                ):
                    found.append(f"{relative}:{node.lineno}: {node.value.strip()[:60]!r}")
    return found


def test_sql_is_written_only_in_the_stores_and_the_ledger() -> None:
    assert sql_outside_its_places(ROOT) == []


def test_the_product_is_read() -> None:
    """The allowed places do hold SQL, so the pattern and the walk see it."""
    stores = [ROOT / "services/billing/store.py", ROOT / "shared/ledger/reads.py"]
    for path in stores:
        assert _SQL.search(path.read_text()), path


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_checker_passes_sql_in_its_places_and_prose(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "services/a/store.py": 'Q = "SELECT 1"\n',
            "services/a/redrive_store.py": 'Q = "DELETE FROM t"\n',
            "shared/ledger/schema.sql": "LOCK TABLE t;\n",
            "shared/infra/db.py": 'Q = "SELECT 1"\n',
            "services/a/logic.py": '"""We never SELECT x FROM t here."""\n\ndef f() -> str:\n'
            '    """Nor UPDATE t SET x = 1."""\n    return "DELETE /v1/x; select nothing"\n',
        },
    )
    assert sql_outside_its_places(root) == []


def test_checker_finds_sql_out_of_place(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "services/a/closing.py": 'async def f(c):\n    await c.execute("LOCK TABLE t")\n',
            "shared/infra/http.py": 'Q = f"SELECT {1}"\n',
            "services/a/queries.sql": "SELECT 1;\n",
            "services/b/api.py": 'Q = """UPDATE b.t AS x\n SET y = 1"""\nR = "DELETE FROM t"\n',
        },
    )
    found = sql_outside_its_places(root)
    assert [f.split(":")[0] for f in found] == [
        "services/a/closing.py",
        "services/a/queries.sql",
        "services/b/api.py",
        "services/b/api.py",
        "shared/infra/http.py",
    ]
