"""A bad or missing environment variable stops a service at start, naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared.infra.auth import KeyRing, KeySettings, parse_admin_keys, parse_intake_keys
from tools.supervisor import REPO_ROOT

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
        ("metering", "TIERLINE_ADMIN_KEY", "admin-key-0123456789,short"),
        ("billing", "TIERLINE_ADMIN_KEY", "admin-key-0123456789, admin-key-0123456789"),
        ("console", "TIERLINE_ADMIN_KEY", "change-me-admin-key-0123456789"),
        ("intake", "TIERLINE_INTAKE_KEYS", "zendesk=change-me-intake-zendesk"),
        ("intake", "TIERLINE_INTAKE_KEYS", "zendesk=admin-key-0123456789"),
        ("billing", "TIERLINE_BODY_TIMEOUT_SECONDS", "0"),
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


def key_settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> KeySettings:
    for variable in ("TIERLINE_ADMIN_KEY", "TIERLINE_INTAKE_KEYS", "TIERLINE_LOCAL_RUN"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    return KeySettings()


def test_several_admin_keys_are_each_good(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = key_settings(
        monkeypatch,
        TIERLINE_ADMIN_KEY=" old-admin-key-0123456789 , new-admin-key-0123456789,",
        TIERLINE_INTAKE_KEYS="jira = k1",
    )
    ring = KeyRing.from_settings(settings)
    for key in ("old-admin-key-0123456789", "new-admin-key-0123456789"):
        caller = ring.identify(f"Bearer {key}")
        assert caller is not None and caller.role.value == "admin"
    intake = ring.identify("Bearer k1")
    assert intake is not None and intake.source == "jira"
    assert ring.identify("Bearer old-admin-key") is None


def test_admin_key_lists_are_trimmed_and_refuse_short_or_repeated_keys() -> None:
    assert parse_admin_keys(" a-key-of-sixteen-chars ,b-key-of-sixteen-chars") == [
        "a-key-of-sixteen-chars",
        "b-key-of-sixteen-chars",
    ]
    with pytest.raises(ValueError, match="at least 16"):
        parse_admin_keys("a-key-of-sixteen-chars,short")
    with pytest.raises(ValueError, match="twice"):
        parse_admin_keys("a-key-of-sixteen-chars, a-key-of-sixteen-chars")
    with pytest.raises(ValueError, match="at least one"):
        parse_admin_keys(" , ")


def test_intake_keys_split_at_the_first_equals_sign() -> None:
    assert parse_intake_keys("jira = a=b ") == {"a=b": "jira"}


def test_a_key_in_both_lists_stops_the_service_naming_the_variable() -> None:
    result = start("intake", TIERLINE_INTAKE_KEYS="jira=x,zendesk=admin-key-0123456789")
    assert result.returncode == 2
    assert "configuration error: TIERLINE_INTAKE_KEYS holds a key that TIERLINE_ADMIN_KEY" in (
        result.stderr
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TIERLINE_ADMIN_KEY", "change-me-admin-key-0123456789"),
        ("TIERLINE_INTAKE_KEYS", "servicenow=change-me-intake-servicenow"),
    ],
)
def test_published_default_keys_are_refused_outside_the_local_run(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    env = {"TIERLINE_ADMIN_KEY": "admin-key-0123456789", "TIERLINE_INTAKE_KEYS": "jira=k1"}
    env[variable] = value
    with pytest.raises(ValueError, match=f"{variable} holds a published default key"):
        key_settings(monkeypatch, **env)
    assert key_settings(monkeypatch, **env, TIERLINE_LOCAL_RUN="true").tierline_local_run
