"""Fixtures of the integration tests: a connection pool on the test database, and the e2e stack
fixtures for the tests that scrape a running stack (test_metrics_scrape.py). Module-scoped like
in tests/e2e: a module that asks gets its own pool, or its own stack."""

from collections.abc import AsyncIterator

import asyncpg
import pytest

from shared.infra.db import apply_schema, create_pool
from tests.e2e.conftest import api, run_id, stack, stack_options

__all__ = ["api", "pool", "run_id", "stack", "stack_options"]


@pytest.fixture(scope="module")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool on the test database, with the schema applied."""
    pool = await create_pool(database_url, size=8)  # the close races hold several at once
    await apply_schema(pool)
    yield pool
    await pool.close()
