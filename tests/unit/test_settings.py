"""A bad or missing environment variable stops a service at start, naming the variable."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from shared.infra.auth import (
    KeyRing,
    KeySettings,
    Role,
    parse_admin_keys,
    parse_client_keys,
    parse_intake_keys,
)
from tools.supervisor import REPO_ROOT

GOOD = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/postgres",
    "TIERLINE_ADMIN_KEY": "admin-key-0123456789",
    "TIERLINE_INTAKE_KEYS": "zendesk=k1",
}


#: Variables the tests set or leave unset on purpose: never inherited from the caller's shell.
KEY_VARIABLES = ("TIERLINE_ADMIN_KEY", "TIERLINE_INTAKE_KEYS", "TIERLINE_CLIENT_KEYS")


def start(service: str, **overrides: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in GOOD and k not in KEY_VARIABLES}
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
        ("intake", "TIERLINE_TOPIC_REPLICATION", "0"),
        ("metering", "TIERLINE_TOPIC_REPLICATION", "three"),
        ("classifier", "CLASSIFIER_PORT", "http"),
        ("intake", "LOG_LEVEL", "LOUD"),
        ("metering", "TIERLINE_ADMIN_KEY", "admin-key-0123456789,short"),
        ("billing", "TIERLINE_ADMIN_KEY", "admin-key-0123456789, admin-key-0123456789"),
        ("console", "TIERLINE_ADMIN_KEY", "change-me-admin-key-0123456789"),
        ("intake", "TIERLINE_INTAKE_KEYS", "zendesk=change-me-intake-zendesk"),
        ("intake", "TIERLINE_INTAKE_KEYS", "zendesk=admin-key-0123456789"),
        ("billing", "TIERLINE_INTAKE_KEYS", "zendesk=k1, jira = k1"),
        # SPEC §13: a key that appears twice, in one list or across lists, stops the service.
        ("billing", "TIERLINE_CLIENT_KEYS", "acme=client-key-1,globex= client-key-1"),
        ("metering", "TIERLINE_CLIENT_KEYS", "acme=client-key-1,acme=client-key-1"),
        ("metering", "TIERLINE_CLIENT_KEYS", "acme=k1"),
        ("console", "TIERLINE_CLIENT_KEYS", "acme=admin-key-0123456789"),
        ("intake", "TIERLINE_CLIENT_KEYS", "Acme=client-key-1"),
        ("intake", "TIERLINE_CLIENT_KEYS", "acme"),
        ("billing", "TIERLINE_CLIENT_KEYS", "acme=change-me-client-acme"),
        ("billing", "TIERLINE_BODY_TIMEOUT_SECONDS", "0"),
        ("metering", "METERING_SERVICE_LEVEL_WATCH_SECONDS", "0"),
        ("billing", "BILLING_CLOSE_CONCURRENCY", "0"),
        # A close may not take every connection: the API and the outbox need some meanwhile.
        ("billing", "BILLING_CLOSE_CONCURRENCY", "8"),
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
    for variable in (*KEY_VARIABLES, "TIERLINE_LOCAL_RUN"):
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


def test_client_keys_split_on_commas_then_at_the_first_equals_sign_each_part_trimmed() -> None:
    assert parse_client_keys("") == {}
    assert parse_client_keys(" acme = k=1 , globex=k2,, acme=k3 ") == {
        "k=1": "acme",
        "k2": "globex",
        "k3": "acme",  # a client may hold several keys: one can be rotated
    }
    with pytest.raises(ValueError, match="twice"):
        parse_client_keys("acme=k1,globex=k1")
    with pytest.raises(ValueError, match="client_id=key"):
        parse_client_keys("acme=")
    with pytest.raises(ValueError, match="not a client id"):
        parse_client_keys("ACME=k1")


def test_every_key_names_its_caller_and_an_admin_key_its_audit_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SPEC §13: audit entries name an admin key `admin:` + the first 8 hex digits of its
    SHA-256; a client key reads one client only."""
    admin = "old-admin-key-0123456789"
    ring = KeyRing.from_settings(
        key_settings(
            monkeypatch,
            TIERLINE_ADMIN_KEY=f"{admin},new-admin-key-0123456789",
            TIERLINE_INTAKE_KEYS="jira=k1",
            TIERLINE_CLIENT_KEYS="acme=c1, globex = c2",
        )
    )
    caller = ring.identify(f"Bearer {admin}")
    assert caller is not None and caller.role is Role.ADMIN
    assert caller.name == "admin:" + hashlib.sha256(admin.encode()).hexdigest()[:8]
    acme, globex = ring.identify("Bearer c1"), ring.identify("Bearer c2")
    assert acme is not None and (acme.role, acme.client_id, acme.name) == (
        Role.CLIENT,
        "acme",
        "client:acme",
    )
    assert globex is not None and globex.client_id == "globex"
    assert ring.identify("Bearer c1 ") == acme
    assert ring.identify("Bearer c3") is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TIERLINE_CLIENT_KEYS": "acme=k1"}, "TIERLINE_CLIENT_KEYS holds a key that"),
        (
            {"TIERLINE_CLIENT_KEYS": "acme=admin-key-0123456789"},
            "TIERLINE_CLIENT_KEYS holds a key that",
        ),
        ({"TIERLINE_INTAKE_KEYS": "jira=admin-key-0123456789"}, "TIERLINE_INTAKE_KEYS holds"),
    ],
)
def test_a_key_in_two_lists_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    base = {"TIERLINE_ADMIN_KEY": "admin-key-0123456789", "TIERLINE_INTAKE_KEYS": "jira=k1"}
    with pytest.raises(ValueError, match=message):
        key_settings(monkeypatch, **{**base, **env})


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
