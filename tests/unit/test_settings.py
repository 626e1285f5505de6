"""A bad or missing environment variable stops a service at start, naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.auth import parse_intake_keys
from shared.supervisor import REPO_ROOT

GOOD = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/postgres",
    "TIERLINE_ADMIN_KEY": "admin-key-0123456789",
    "TIERLINE_INTAKE_KEYS": "zendesk=k1",
}


def start(service: str, **overrides: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in GOOD}
    env.update(GOOD)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run(
        [sys.executable, "-m", f"services.{service}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("service", "variable", "value"),
    [
        ("billing", "BILLING_CLOSE_GRACE_HOURS", "soon"),
        ("billing", "BILLING_AUTO_CLOSE", "perhaps"),
        ("metering", "DATABASE_URL", "mysql://nope"),
        ("intake", "TIERLINE_INTAKE_KEYS", "zendesk"),
        ("intake", "TIERLINE_ADMIN_KEY", "short"),
        ("classifier", "TIERLINE_TOPIC_PARTITIONS", "0"),
        ("classifier", "CLASSIFIER_PORT", "http"),
        ("intake", "LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_value_stops_the_service_naming_it(service: str, variable: str, value: str) -> None:
    result = start(service, **{variable: value})
    assert result.returncode == 2
    assert f"configuration error: {variable}" in result.stderr


@pytest.mark.parametrize("service", ["intake", "classifier", "metering", "billing"])
def test_a_missing_bootstrap_server_stops_every_service(service: str) -> None:
    result = start(service, KAFKA_BOOTSTRAP_SERVERS=None)
    assert result.returncode == 2
    assert "configuration error: KAFKA_BOOTSTRAP_SERVERS is required" in result.stderr


def test_intake_keys_map_each_key_to_its_source() -> None:
    assert parse_intake_keys("zendesk=a, jira=b") == {"a": "zendesk", "b": "jira"}
    with pytest.raises(ValueError, match="twice"):
        parse_intake_keys("zendesk=a,jira=a")
    with pytest.raises(ValueError, match="source=key"):
        parse_intake_keys("zendesk=")
