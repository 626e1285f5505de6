"""The code stays `ruff` and `mypy --strict` clean: a lint finding fails the suite like a bug."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_ruff_finds_nothing() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_applied() -> None:
    result = run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(600)
def test_mypy_strict_finds_nothing(tmp_path: Path) -> None:
    result = run(
        "mypy",
        "--cache-dir",
        str(tmp_path / "mypy"),
        "shared",
        "services",
        "tools",
        "tests",
        "bench",
    )
    assert result.returncode == 0, result.stdout + result.stderr
