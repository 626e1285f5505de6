"""docker-compose.yml agrees with the services' Settings classes.

Nothing here runs Docker: the file is parsed with PyYAML (anchors and `<<` merges resolved) and
each service's compose entry is checked against the variables its Settings class declares, so a
variable renamed in code and not in the compose file (or the other way round) fails here.
The image the compose file builds (Dockerfile) and the installed package hold the product only:
no developer tooling (tools/, tests/, bench/).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from pydantic_settings import BaseSettings

from services.billing.app import BillingSettings
from services.classifier.app import ClassifierSettings
from services.console.app import ConsoleSettings
from services.intake.app import IntakeSettings
from services.metering.app import MeteringSettings
from shared.infra.auth import KeyRing, KeySettings

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"

SETTINGS: dict[str, type[BaseSettings]] = {
    "intake": IntakeSettings,
    "classifier": ClassifierSettings,
    "metering": MeteringSettings,
    "billing": BillingSettings,
    "console": ConsoleSettings,
}
INFRASTRUCTURE = ("kafka", "postgres")
#: Third-party images for watching it; the Settings checks below do not apply to them.
MONITORING = ("prometheus", "grafana", "kafka-ui")
DEPLOY = COMPOSE_FILE.parent / "deploy"

# `${NAME}`, `${NAME:-default}`, `${NAME-default}` or `${NAME:?message}`, as compose interpolates
# them (`:?` stops compose, printing the message, when NAME is unset or empty).
_INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<sep>:?[-?])(?P<default>[^}]*))?\}")

#: What an operator sets for each required secret in these tests (valid, not a published default).
OPERATOR_SECRETS = {
    "TIERLINE_ADMIN_KEY": "operator-admin-key-0123456789",
    "TIERLINE_INTAKE_KEYS": "servicenow=operator-intake-key-1,zendesk=operator-intake-key-2",
    "POSTGRES_PASSWORD": "operator-db-password",
    "GRAFANA_ADMIN_PASSWORD": "operator-grafana-password",
    "KAFKA_UI_PASSWORD": "operator-kafka-ui-password",
}


def env_names(cls: type[BaseSettings]) -> dict[str, bool]:
    """{environment variable: required} for every field of a pydantic-settings class."""
    prefix = str(cls.model_config.get("env_prefix") or "")
    names: dict[str, bool] = {}
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        names[(alias or f"{prefix}{field_name}").upper()] = field.is_required()
    return names


def with_defaults(value: str) -> str:
    """A compose value as it is when the caller's environment sets only the required secrets."""

    def default(match: re.Match[str]) -> str:
        if match["sep"] is None:
            raise AssertionError(f"{value!r}: ${{{match['name']}}} has no default")
        if "?" in match["sep"]:
            assert match["name"] in OPERATOR_SECRETS, f"{match['name']} is required: test it"
            return OPERATOR_SECRETS[match["name"]]
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


def set_compose_environment(
    monkeypatch: pytest.MonkeyPatch, cls: type[BaseSettings], entry: dict[str, Any]
) -> dict[str, Any]:
    """The caller's shell emptied of `cls`'s variables, then set as compose sets them for
    `entry` (defaults applied); returns compose's values as written."""
    for var in env_names(cls):
        monkeypatch.delenv(var, raising=False)
    env = environment(entry)
    for var, value in env.items():
        monkeypatch.setenv(var, with_defaults(str(value)))
    return env


def test_settings_classes_read_unprefixed_variables() -> None:
    """env_names() derives names from field names; that holds only while no prefix is set."""
    for name, cls in SETTINGS.items():
        assert not cls.model_config.get("env_prefix"), name
        assert "KAFKA_BOOTSTRAP_SERVERS" in env_names(cls), name


def test_defines_infrastructure_and_every_service(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) >= {*INFRASTRUCTURE, *SETTINGS, *MONITORING}


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


def test_metering_billing_and_the_console_are_the_services_with_a_database() -> None:
    with_database = {name for name, cls in SETTINGS.items() if "DATABASE_URL" in env_names(cls)}
    assert with_database == {"metering", "billing", "console"}


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
    for var, value in set_compose_environment(monkeypatch, cls, services[name]).items():
        assert isinstance(value, str), f"{name}: quote {var}'s value in docker-compose.yml"
    settings = cls()
    assert getattr(settings, "tierline_http_host", None) == "0.0.0.0"


def test_deploy_readme_documents_every_variable() -> None:
    readme = (COMPOSE_FILE.parent / "deploy" / "README.md").read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", readme, flags=re.MULTILINE))
    read = {var for cls in SETTINGS.values() for var in env_names(cls)}
    assert documented == read, {"undocumented": read - documented, "unread": documented - read}


# --- Prometheus, Grafana and Kafka UI -----------------------------------------------------------


def mounted_sources(entry: dict[str, Any]) -> dict[str, str]:
    """{container path: host path} of an entry's bind mounts (`./host:/container[:ro]`)."""
    mounts: dict[str, str] = {}
    for volume in entry.get("volumes", []):
        source, target, *_ = str(volume).split(":")
        if source.startswith("."):
            mounts[target] = source
    return mounts


def test_monitoring_mounts_exist(services: dict[str, dict[str, Any]]) -> None:
    for name in ("prometheus", "grafana"):
        for source in mounted_sources(services[name]).values():
            assert (COMPOSE_FILE.parent / source).exists(), f"{name} mounts missing {source}"


def test_prometheus_scrapes_every_service_on_its_port(services: dict[str, dict[str, Any]]) -> None:
    mounts = mounted_sources(services["prometheus"])
    config = yaml.safe_load(
        (COMPOSE_FILE.parent / mounts["/etc/prometheus/prometheus.yml"]).read_text()
    )
    targets = {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in config["scrape_configs"]
    }
    for name in SETTINGS:
        port = with_defaults(str(environment(services[name])[f"{name.upper()}_PORT"]))
        assert targets.get(name) == [f"{name}:{port}"], (name, targets.get(name))


def test_grafana_dashboard_uses_the_provisioned_datasource() -> None:
    datasources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    uids = {source["uid"] for source in datasources}
    assert any(source["url"] == "http://prometheus:9090" for source in datasources)
    dashboard = json.loads((DEPLOY / "grafana/dashboards/tierline.json").read_text())
    assert dashboard["panels"], "the dashboard has no panels"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"] and all(target["expr"] for target in panel["targets"]), panel[
            "title"
        ]


def test_grafana_dashboard_covers_what_operators_watch() -> None:
    dashboard = json.loads((DEPLOY / "grafana/dashboards/tierline.json").read_text())
    queries = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for metric in (
        "tierline_intake_requests_total",
        "tierline_classifier_items_total",
        "tierline_metering_items_total",
        "tierline_consumer_lag",
        "tierline_dead_letters_total",
        "tierline_dead_letter_messages",
        "tierline_classifier_batch_size_bucket",
        "tierline_metering_batch_size_bucket",
        "tierline_metering_db_seconds_bucket",
        "tierline_billing_db_seconds_bucket",
        "tierline_billing_periods_closed_total",
        "tierline_billing_invoiced_amount_total",
    ):
        assert metric in queries, f"no panel shows {metric}"


def test_kafka_ui_browses_the_compose_kafka(services: dict[str, dict[str, Any]]) -> None:
    entry = services["kafka-ui"]
    assert str(entry["image"]).startswith("provectuslabs/kafka-ui")
    assert environment(entry)["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == "kafka:9092"
    assert entry["depends_on"]["kafka"]["condition"] == "service_healthy"


# --- secrets: none has a default --------------------------------------------------------------

SECRETS = (
    "TIERLINE_ADMIN_KEY",
    "TIERLINE_INTAKE_KEYS",
    "POSTGRES_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
    "KAFKA_UI_PASSWORD",
    "SPRING_SECURITY_USER_PASSWORD",
    "GF_SECURITY_ADMIN_PASSWORD",
)


def test_no_secret_has_a_default_value() -> None:
    """Compose must refuse to start until every key and password is set: `${NAME:?message}`."""
    for match in _INTERPOLATION.finditer(COMPOSE_FILE.read_text()):
        if match["name"] in SECRETS:
            assert match["sep"] == ":?", f"${{{match['name']}}} must be required, not defaulted"
            assert match["default"].strip(), f"${{{match['name']}:?}} should say what to set"
    assert "change-me" not in COMPOSE_FILE.read_text()


def test_every_secret_a_container_reads_is_required(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, entry in services.items():
        for var, value in environment(entry).items():
            if var in SECRETS or var == "DATABASE_URL":
                names = {m["name"]: m["sep"] for m in _INTERPOLATION.finditer(str(value))}
                assert names and all(sep == ":?" for sep in names.values()), (name, var, value)


def test_grafana_has_no_anonymous_access(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["grafana"])
    assert env.get("GF_AUTH_ANONYMOUS_ENABLED") == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in env
    assert with_defaults(str(env["GF_SECURITY_ADMIN_PASSWORD"])) != "admin"


def test_kafka_ui_asks_for_a_login(services: dict[str, dict[str, Any]]) -> None:
    env = environment(services["kafka-ui"])
    assert env.get("AUTH_TYPE") == "LOGIN_FORM"
    assert env.get("SPRING_SECURITY_USER_NAME")
    assert env.get("SPRING_SECURITY_USER_PASSWORD")


@pytest.mark.parametrize("name", SETTINGS)
def test_client_keys_pass_through_to_every_service_that_reads_them(
    services: dict[str, dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TIERLINE_CLIENT_KEYS is optional (no client keys when unset) and, when set in the shell
    or `.env`, reaches every service that checks keys: a key it holds is good there."""
    cls = SETTINGS[name]
    value = environment(services[name]).get("TIERLINE_CLIENT_KEYS")
    if "TIERLINE_CLIENT_KEYS" not in env_names(cls):
        assert value is None, f"{name} does not read TIERLINE_CLIENT_KEYS"
        return
    assert value == "${TIERLINE_CLIENT_KEYS:-}", f"{name}: pass TIERLINE_CLIENT_KEYS through"
    set_compose_environment(monkeypatch, cls, services[name])
    assert cast(KeySettings, cls()).tierline_client_keys == ""
    shell = {"TIERLINE_CLIENT_KEYS": "acme=operator-client-key-1"}
    monkeypatch.setenv(
        "TIERLINE_CLIENT_KEYS", _INTERPOLATION.sub(lambda m: shell[m["name"]], value)
    )
    ring = KeyRing.from_settings(cast(KeySettings, cls()))
    caller = ring.identify("Bearer operator-client-key-1")
    assert caller is not None and caller.client_id == "acme"


@pytest.mark.parametrize("name", ["intake", "metering", "billing", "console"])
def test_published_default_keys_would_stop_a_compose_service(
    services: dict[str, dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even set by hand in `.env`, the old published keys stop the services (outside `up`)."""
    cls = SETTINGS[name]
    set_compose_environment(monkeypatch, cls, services[name])
    monkeypatch.setenv("TIERLINE_ADMIN_KEY", "change-me-admin-key-0123456789")
    with pytest.raises(ValueError, match="published default key"):
        cls()


# --- the image and the installed package hold the product only ---------------------------------

DOCKERFILE = COMPOSE_FILE.parent / "Dockerfile"
PRODUCT_PACKAGES = ("shared", "services")
DEV_TOOLING = ("tools", "tests", "bench")


def copied_sources(dockerfile: str) -> list[str]:
    """The build-context sources of every COPY and ADD instruction (`--from=` stages left out)."""
    sources: list[str] = []
    for line in re.sub(r"\\\n", " ", dockerfile).splitlines():
        words = line.split(None, 1)
        if len(words) < 2 or words[0].upper() not in ("COPY", "ADD"):
            continue
        rest = words[1].strip()
        flags = re.findall(r"--\S+", rest)
        if any(flag.startswith("--from=") for flag in flags):
            continue
        rest = re.sub(r"--\S+\s*", "", rest).strip()
        args = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        sources.extend(args[:-1])
    return sources


def test_copied_sources_reads_every_form() -> None:
    dockerfile = (
        'COPY a.txt ./\nCOPY --chown=1:1 b/ c/ /x/\nADD ["d", "/e"]\n'
        "COPY --from=build /app /app\nCOPY f \\\n  g/\n# COPY tools/ tools/\n"
    )
    assert copied_sources(dockerfile) == ["a.txt", "b/", "c/", "d", "f"]


def test_the_image_copies_no_dev_tooling() -> None:
    """tools/, tests/ and bench/ never reach the image: no COPY names them, none copies the whole
    build context or a wildcard that could match them, and .dockerignore leaves them out too."""
    sources = copied_sources(DOCKERFILE.read_text())
    tops = {Path(source).parts[0] for source in sources if Path(source).parts}
    assert len(tops) == len(sources), f"a COPY takes the whole build context: {sources}"
    assert not {top for top in tops if any(c in top for c in "*?[")}, sources
    assert not tops & set(DEV_TOOLING), sources
    assert set(PRODUCT_PACKAGES) <= tops, sources
    ignored = {
        line.strip().strip("/")
        for line in (COMPOSE_FILE.parent / ".dockerignore").read_text().splitlines()
    }
    assert set(DEV_TOOLING) <= ignored, ignored


def test_the_installed_package_is_the_product_only() -> None:
    """`pip install .` (as the image does) installs shared and services, no dev tooling, and no
    command that would need it (`./tierline` runs tools.cli from the repository root)."""
    pyproject = tomllib.loads((COMPOSE_FILE.parent / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    for package in (*PRODUCT_PACKAGES, "shared.domain", "services.intake"):
        assert any(fnmatch.fnmatchcase(package, p) for p in include), (package, include)
    for package in (*DEV_TOOLING, "tools.cli", "tests.unit", "tools_x"):
        assert not any(fnmatch.fnmatchcase(package, p) for p in include), (package, include)
    for command, target in pyproject["project"]["scripts"].items():
        assert target.split(".")[0] in PRODUCT_PACKAGES, (command, target)
