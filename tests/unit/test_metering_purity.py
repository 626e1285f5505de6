"""Metering's pure modules load no I/O: not asyncpg, not the ledger's SQL, no Kafka or HTTP."""

from __future__ import annotations

import subprocess
import sys

PURE = [
    "services.metering.counting",
    "services.metering.alerts",
    "services.metering.level_alerts",
    "shared.contracts.usage",
    "services.metering.items",
    "shared.contracts.items",
    "shared.domain.usage",
]
IO = [
    "asyncpg",
    "aiokafka",
    "faststream",
    "fastapi",
    "httpx",
    "shared.ledger.reads",
    "shared.infra.db",
]


def test_the_pure_modules_of_metering_import_no_io() -> None:
    # A fresh interpreter: this one has loaded everything already.
    program = (
        f"import sys\nfor name in {PURE!r}: __import__(name)\n"
        f"print(sorted(m for m in {IO!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_check_would_see_an_io_import() -> None:
    program = "import sys, services.metering.store; print('asyncpg' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "True"
