"""Schemathesis against each service's own OpenAPI document, over HTTP, with real keys.

Used by tests/e2e/test_api_fuzz.py (a bounded run in the suite) and as a command for a larger
run that prints request counts and every finding:

    .venv/bin/python -m tests.e2e.fuzz --examples 500          # starts its own stack
    .venv/bin/python -m tests.e2e.fuzz --examples 500 --services metering,console

A finding is a response that breaks one of CHECKS: a 5xx, a status code the operation does not
document, a content type it does not document, or a body that contradicts the documented schema.
Each operation is driven with schema-valid (positive) and schema-invalid (negative) requests.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tools.supervisor import SERVICES, Stack

#: What every response must satisfy (issue 10: 0 server errors, 0 contradictions of the schema).
CHECKS: Final = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: Examples per operation and generation mode in the suite; FUZZ_EXAMPLES raises it.
DEFAULT_EXAMPLES: Final = 25
MODES: Final = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
REQUEST_TIMEOUT: Final = 30.0


@dataclass(frozen=True)
class Finding:
    service: str
    operation: str
    status: int
    check: str
    message: str
    reproduce: str

    def __str__(self) -> str:
        first_line = self.message.strip().splitlines()[0] if self.message.strip() else ""
        return (
            f"{self.service} {self.operation} -> {self.status} [{self.check}] {first_line}\n"
            f"    {self.reproduce}"
        )


@dataclass
class FuzzReport:
    requests: dict[str, int] = field(default_factory=dict)
    #: One finding per (service, operation, status, check): the first request that showed it.
    findings: dict[tuple[str, str, int, str], Finding] = field(default_factory=dict)

    def add(self, finding: Finding) -> None:
        key = (finding.service, finding.operation, finding.status, finding.check)
        self.findings.setdefault(key, finding)

    def of(self, service: str) -> list[Finding]:
        return [f for f in self.findings.values() if f.service == service]

    def summary(self) -> str:
        lines = [
            f"{service}: {count} requests, {len(self.of(service))} findings"
            for service, count in self.requests.items()
        ]
        lines.append(
            f"total: {sum(self.requests.values())} requests, {len(self.findings)} findings"
        )
        return "\n".join(lines)


def service_keys(stack: Stack) -> dict[str, str]:
    """The key each service is driven with: intake's own key for intake, the admin key else."""
    return {name: stack.intake_key if name == "intake" else stack.admin_key for name in SERVICES}


def _redacted(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "<key>")
    return text


def fuzz_service(
    service: str,
    base_url: str,
    key: str,
    *,
    examples: int,
    report: FuzzReport,
    on_request: Callable[[str], None] | None = None,
) -> None:
    """Drives every operation of `service`'s OpenAPI document; findings go into `report`."""
    assert base_url.startswith("http://127.0.0.1:"), "fuzz only a loopback address"
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=REQUEST_TIMEOUT)
    auth = {"Authorization": f"Bearer {key}"}
    session = requests.Session()
    report.requests.setdefault(service, 0)
    for result in schema.get_all_operations():
        if isinstance(result, Err):  # an operation schemathesis cannot read is a finding too
            raise AssertionError(f"{service}: invalid OpenAPI operation: {result.err()}")
        operation = result.ok()
        for mode in MODES:
            strategy = operation.as_strategy(generation_mode=mode)

            @settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,  # the suite's run is the same every time
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def drive(case: Any) -> None:
                headers = {**auth}
                response = case.call(
                    base_url=base_url, session=session, headers=headers, timeout=REQUEST_TIMEOUT
                )
                report.requests[service] += 1
                if on_request is not None:
                    on_request(service)
                try:
                    case.validate_response(response, checks=CHECKS, headers=headers)
                except FailureGroup as group:
                    for failure in group.exceptions:
                        _record(report, service, case, response, failure, headers, key)
                except Failure as failure:
                    _record(report, service, case, response, failure, headers, key)

            try:
                drive()
            except Unsatisfiable:  # nothing to negate (no parameters, no body): nothing to send
                continue


def _record(
    report: FuzzReport,
    service: str,
    case: Any,
    response: requests.Response,
    failure: Failure,
    headers: dict[str, str],
    key: str,
) -> None:
    report.add(
        Finding(
            service=service,
            operation=case.operation.label,
            status=response.status_code,
            check=failure.title,
            message=_redacted(f"{failure.message}\nresponse: {response.text[:300]}", [key]),
            reproduce=_redacted(case.as_curl_command(headers=headers), [key]),
        )
    )


def fuzz_stack(
    stack: Stack,
    *,
    examples: int,
    services: tuple[str, ...] = SERVICES,
    on_request: Callable[[str], None] | None = None,
) -> FuzzReport:
    report = FuzzReport()
    keys = service_keys(stack)
    for service in services:
        fuzz_service(
            service,
            stack.url(service),
            keys[service],
            examples=examples,
            report=report,
            on_request=on_request,
        )
    return report


def examples_from_env(environ: Mapping[str, str] = os.environ) -> int:
    text = environ.get("FUZZ_EXAMPLES", "").strip()
    if not text:
        return DEFAULT_EXAMPLES
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"FUZZ_EXAMPLES must be a positive integer, got {text!r}")
    return int(text)


# --- the larger run -----------------------------------------------------------------------------


@contextlib.contextmanager
def _own_stack(data_dir: Path) -> Iterator[Stack]:
    from tools.localinfra import LocalInfra, free_port

    with (
        LocalInfra(data_dir / "infra") as infra,
        Stack(
            infra.kafka_bootstrap,
            infra.database_url,
            data_dir / "logs",
            ports={name: free_port() for name in SERVICES},
            extra_env={"LOG_LEVEL": "WARNING", "BILLING_CLOSE_BARRIER_TIMEOUT_SECONDS": "10"},
        ) as stack,
    ):
        yield stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.fuzz", description=__doc__)
    parser.add_argument("--examples", type=int, default=200, help="per operation and mode")
    parser.add_argument("--services", default=",".join(SERVICES))
    args = parser.parse_args(argv)
    services = tuple(s.strip() for s in args.services.split(",") if s.strip())
    unknown = set(services) - set(SERVICES)
    if unknown:
        parser.error(f"unknown services {sorted(unknown)}; choose from {', '.join(SERVICES)}")
    counted = 0

    def progress(service: str) -> None:
        nonlocal counted
        counted += 1
        if counted % 500 == 0:
            print(f"  {counted} requests ({service})", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="tierline-fuzz-") as data:
        os.chmod(data, 0o755)  # PostgreSQL runs as another user when we are root
        with _own_stack(Path(data)) as stack:
            report = fuzz_stack(
                stack, examples=args.examples, services=services, on_request=progress
            )
    for finding in report.findings.values():
        print(finding)
    print(report.summary())
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
