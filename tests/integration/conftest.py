"""The e2e stack fixtures, for the integration tests that scrape a running stack
(test_metrics_scrape.py). Module-scoped like in tests/e2e: a module that asks gets its own stack."""

from tests.e2e.conftest import api, run_id, stack, stack_options

__all__ = ["api", "run_id", "stack", "stack_options"]
