"""docker-compose.yml agrees with the services' Settings classes.

Nothing here runs Docker: the file is parsed with PyYAML (anchors and `<<` merges resolved) and
each service's compose entry is checked against the variables its Settings class declares, so a
variable renamed in code and not in the compose file (or the other way round) fails here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from services.billing.app import BillingSettings
from services.classifier.app import ClassifierSettings
from services.intake.app import IntakeSettings
from services.metering.app import MeteringSettings

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"

SETTINGS: dict[str, type[BaseSettings]] = {
    "intake": IntakeSettings,
    "classifier": ClassifierSettings,
    "metering": MeteringSettings,
    "billing": BillingSettings,
}
INFRASTRUCTURE = ("kafka", "postgres")

# `${NAME}`, `${NAME:-default}` or `${NAME-default}`, as compose interpolates them.
_INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<sep>:?-)(?P<default>[^}]*))?\}")


def env_names(cls: type[BaseSettings]) -> dict[str, bool]:
    """{environment variable: required} for every field of a pydantic-settings class."""
    prefix = str(cls.model_config.get("env_prefix") or "")
    names: dict[str, bool] = {}
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        names[(alias or f"{prefix}{field_name}").upper()] = field.is_required()
    return names


def with_defaults(value: str) -> str:
    """A compose value as it is when the caller's environment sets none of its variables."""

    def default(match: re.Match[str]) -> str:
        if match["sep"] is None:
            raise AssertionError(f"{value!r}: ${{{match['name']}}} has no default")
        return match["default"]

    return _INTERPOLATION.sub(default, value).replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    entries = compose.get("services")
    assert isinstance(entries, dict), "docker-compose.yml has no services"
    return entries


def environment(entry: dict[str, Any]) -> dict[str, Any]:
    env = entry.get("environment") or {}
    if isinstance(env, list):  # the `- NAME=value` form
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    assert isinstance(env, dict)
    return env


def test_settings_classes_read_unprefixed_variables() -> None:
    """env_names() derives names from field names; that holds only while no prefix is set."""
    for name, cls in SETTINGS.items():
        assert not cls.model_config.get("env_prefix"), name
        assert "KAFKA_BOOTSTRAP_SERVERS" in env_names(cls), name


def test_defines_infrastructure_and_every_service(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= {*INFRASTRUCTURE, *SETTINGS}


@pytest.mark.parametrize("name", SETTINGS)
def test_service_runs_its_module(services: dict[str, dict[str, Any]], name: str) -> None:
    entry = services[name]
    command = entry.get("command")
    argv = shlex.split(command) if isinstance(command, str) else command
    assert argv == ["python", "-m", f"services.{name}"]
    assert "build" in entry, f"{name} should be built from the Dockerfile"


@pytest.mark.parametrize("name", SETTINGS)
def test_service_has_a_healthz_healthcheck(services: dict[str, dict[str, Any]], name: str) -> None:
    env = environment(services[name])
    port = env.get(f"{name.upper()}_PORT")
    assert port is not None, f"{name} should set {name.upper()}_PORT"
    test = services[name].get("healthcheck", {}).get("test")
    assert test, f"{name} has no healthcheck"
    command = test if isinstance(test, str) else " ".join(test)
    assert f":{with_defaults(str(port))}/healthz" in command
    published = [str(mapping) for mapping in services[name].get("ports", [])]
    assert any(mapping.endswith(f":{with_defaults(str(port))}") for mapping in published), (
        f"{name} should publish its port {port}: {published}"
    )


@pytest.mark.parametrize("name", SETTINGS)
def test_service_waits_for_healthy_infrastructure(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    depends_on = services[name].get("depends_on")
    assert isinstance(depends_on, dict), f"{name}: depends_on should name conditions"
    needed = {"kafka"} | ({"postgres"} if "DATABASE_URL" in env_names(SETTINGS[name]) else set())
    for dependency in needed:
        assert dependency in depends_on, f"{name} should depend on {dependency}"
        assert depends_on[dependency].get("condition") == "service_healthy", (name, dependency)


def test_metering_and_billing_are_the_services_with_a_database() -> None:
    with_database = {name for name, cls in SETTINGS.items() if "DATABASE_URL" in env_names(cls)}
    assert with_database == {"metering", "billing"}


@pytest.mark.parametrize("name", SETTINGS)
def test_service_sets_only_variables_it_reads(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    unread = set(environment(services[name])) - set(env_names(SETTINGS[name]))
    assert not unread, f"{name} sets variables {SETTINGS[name].__name__} does not read: {unread}"


@pytest.mark.parametrize("name", SETTINGS)
def test_service_sets_every_required_variable(
    services: dict[str, dict[str, Any]], name: str
) -> None:
    required = {var for var, is_required in env_names(SETTINGS[name]).items() if is_required}
    missing = required - set(environment(services[name]))
    assert not missing, f"{name} does not set required variables: {missing}"


@pytest.mark.parametrize("name", SETTINGS)
def test_compose_defaults_are_valid_settings(
    services: dict[str, dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing set in the caller's shell, each service would start (validation passes)."""
    cls = SETTINGS[name]
    for var in env_names(cls):
        monkeypatch.delenv(var, raising=False)
    for var, value in environment(services[name]).items():
        assert isinstance(value, str), f"{name}: quote {var}'s value in docker-compose.yml"
        monkeypatch.setenv(var, with_defaults(value))
    settings = cls()
    assert getattr(settings, "tierline_http_host", None) == "0.0.0.0"


def test_deploy_readme_documents_every_variable() -> None:
    readme = (COMPOSE_FILE.parent / "deploy" / "README.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", readme, flags=re.MULTILINE))
    read = {var for cls in SETTINGS.values() for var in env_names(cls)}
    assert documented == read, {"undocumented": read - documented, "unread": documented - read}
