"""schemathesis, driven by each service's own OpenAPI document with real keys, finds nothing:
no 5xx, no undocumented status code or content type, no body that contradicts the schema.

The suite runs a bounded number of examples per operation and generation mode (FUZZ_EXAMPLES,
default tests/e2e/fuzz.py DEFAULT_EXAMPLES); `python -m tests.e2e.fuzz --examples N` runs a
larger one and prints request counts and findings.
"""

from __future__ import annotations

import pytest

from tests.e2e.fuzz import FuzzReport, examples_from_env, fuzz_service, service_keys
from tools.supervisor import SERVICES, Stack


@pytest.mark.parametrize("service", SERVICES)
def test_schemathesis_finds_nothing(stack: Stack, service: str) -> None:
    report = FuzzReport()
    fuzz_service(
        service,
        stack.url(service),
        service_keys(stack)[service],
        examples=examples_from_env(),
        report=report,
    )
    assert report.requests[service] > 0, "schemathesis sent no request"
    findings = report.of(service)
    assert not findings, "\n".join(str(finding) for finding in findings)
