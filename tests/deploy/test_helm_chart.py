"""The Helm chart (deploy/helm/tierline) renders manifests the API server and the operators take,
and what it renders agrees with the code: the topics and their configs, the consumer groups and
the partition ceiling of the autoscalers, the variables each service reads, the pooler's room.

Helm renders (`helm template`, built from the Go module proxy by `./tierline setup`); nothing
here needs a cluster. The chart is rendered with its defaults and with every values set in
`deploy/helm/tierline/ci/`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Final, cast

import pytest
from pydantic_settings import BaseSettings

from services.billing.app import BillingSettings
from services.classifier.app import ClassifierSettings
from services.console.app import ConsoleSettings
from services.intake.app import IntakeSettings
from services.metering.app import EXPORT_CONNECTIONS, MeteringSettings
from shared.contracts.topics import (
    AGREEMENTS,
    ALL_TOPICS,
    CLASSIFIER_GROUP,
    CONSUMED_TOPICS,
    INVOICES,
    METERING_GROUP,
    USAGE_ALERTS,
    WORKITEMS_CLASSIFIED,
    WORKITEMS_COMPLETED,
    WORKITEMS_UNCLASSIFIED,
    dlq,
)
from shared.infra.kafka import topic_configs
from shared.infra.settings import CommonSettings
from tests.deploy.manifests import (
    RELEASE,
    VALUES_SETS,
    Manifest,
    all_problems,
    helm,
    named,
    of_kind,
    render,
)
from tests.unit.test_compose import env_names

SETTINGS: Final[dict[str, type[BaseSettings]]] = {
    "intake": IntakeSettings,
    "classifier": ClassifierSettings,
    "metering": MeteringSettings,
    "billing": BillingSettings,
    "console": ConsoleSettings,
}
#: Read by asyncpg, not by Settings: the database password when DATABASE_URL carries none
#: (the chart takes it from CloudNativePG's app Secret).
LIBRARY_VARIABLES: Final = frozenset({"PGPASSWORD"})
#: Each consumer's group and the topic it commits offsets on (what KEDA reads the lag of).
AUTOSCALED: Final = {
    "classifier": (CLASSIFIER_GROUP, WORKITEMS_COMPLETED),
    "metering": (METERING_GROUP, WORKITEMS_CLASSIFIED),
}
#: Connections a service opens besides DATABASE_POOL_SIZE: metering's export pool, billing's
#: LISTEN connection (shared/infra/db.on_notification).
EXTRA_CONNECTIONS: Final = {"metering": EXPORT_CONNECTIONS, "billing": 1, "console": 0}

VALUE_SETS: Final[list[Path | None]] = [None, *VALUES_SETS]
_IDS: Final = ["defaults", *(p.stem for p in VALUES_SETS)]


@pytest.fixture(scope="module", params=VALUE_SETS, ids=_IDS)
def rendered(request: pytest.FixtureRequest) -> list[Manifest]:
    values: Path | None = request.param
    return render(values)


@pytest.fixture(scope="module")
def defaults() -> list[Manifest]:
    return render()


def deployment(manifests: list[Manifest], service: str) -> Manifest:
    return named(manifests, "Deployment", f"{RELEASE}-{service}")


def container(manifests: list[Manifest], service: str) -> dict[str, Any]:
    containers = deployment(manifests, service)["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def environment(manifests: list[Manifest], service: str) -> dict[str, Any]:
    """{variable: value} of a service's container: its ConfigMaps' data, then its own `env`
    (a value from a Secret is the dict `valueFrom` names it with)."""
    spec = container(manifests, service)
    found: dict[str, Any] = {}
    for source in spec.get("envFrom", []):
        assert "configMapRef" in source, f"{service}: envFrom only from ConfigMaps: {source}"
        config_map = named(manifests, "ConfigMap", source["configMapRef"]["name"])
        found.update(config_map.get("data", {}))
    for entry in spec.get("env", []):
        assert entry["name"] not in found, f"{service}: {entry['name']} set twice"
        found[entry["name"]] = entry.get("value", entry.get("valueFrom"))
    return found


# --- the chart is valid ------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUE_SETS, ids=_IDS)
def test_helm_lint_finds_nothing(values: Path | None) -> None:
    args = ["lint", "--strict", str(Path(__file__).resolve().parents[2] / "deploy/helm/tierline")]
    if values is not None:
        args += ["--values", str(values)]
    assert "0 chart(s) failed" in helm(*args)


def test_every_manifest_is_valid_for_kubernetes_and_the_operators(
    rendered: list[Manifest],
) -> None:
    """Core kinds against Kubernetes' schemas (strict), Strimzi, CloudNativePG and KEDA kinds
    against their CRDs' (unknown fields refused): the whole rendering, not a sample."""
    assert rendered, "helm template rendered nothing"
    assert all_problems(rendered) == []
    assert len(of_kind(rendered, "Deployment")) == len(SETTINGS)
    assert len(of_kind(rendered, "PodDisruptionBudget")) == len(SETTINGS)


def test_defaults_render_every_kind_of_the_issue(defaults: list[Manifest]) -> None:
    kinds = {m["kind"] for m in defaults}
    assert kinds >= {
        "Deployment", "Service", "ConfigMap", "PodDisruptionBudget",
        "Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser",
        "Cluster", "Pooler", "ScaledObject", "TriggerAuthentication",
    }, kinds  # fmt: skip


def _misspell(manifest: Manifest, path: tuple[str, ...], wrong: str) -> Manifest:
    """`manifest` with the field at `path` renamed `wrong` (its value kept)."""
    broken = copy.deepcopy(manifest)
    node = broken
    for key in path[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[wrong] = node.pop(path[-1])
    return broken


#: For each kind the chart renders: a field of its rendering and a misspelling of it.
MISSPELLINGS: Final = [
    (
        "Deployment",
        ("spec", "template", "spec", "containers", "0", "readinessProbe"),
        "readinesProbe",
    ),
    ("Service", ("spec", "ports", "0", "targetPort"), "targetport"),
    ("ConfigMap", ("data",), "datas"),
    ("PodDisruptionBudget", ("spec", "maxUnavailable"), "maxUnavaliable"),
    ("Kafka", ("spec", "kafka", "listeners", "0", "authentication"), "authentification"),
    ("KafkaNodePool", ("spec", "storage", "volumes", "0", "deleteClaim"), "deleteClaims"),
    ("KafkaTopic", ("spec", "partitions"), "partition"),
    ("KafkaUser", ("spec", "authorization", "acls", "0", "resource", "patternType"), "pattern"),
    ("Cluster", ("spec", "postgresql", "synchronous", "dataDurability"), "durability"),
    ("Pooler", ("spec", "pgbouncer", "poolMode"), "poolmode"),
    ("ScaledObject", ("spec", "maxReplicaCount"), "maxReplicasCount"),
    ("TriggerAuthentication", ("spec", "secretTargetRef"), "secretTargetRefs"),
]


@pytest.mark.parametrize(("kind", "path", "wrong"), MISSPELLINGS, ids=[m[0] for m in MISSPELLINGS])
def test_a_misspelt_field_is_refused(
    defaults: list[Manifest], kind: str, path: tuple[str, ...], wrong: str
) -> None:
    """The validation above can fail: one misspelt field in one manifest is reported, by name."""
    manifest = of_kind(defaults, kind)[0]
    assert all_problems([manifest]) == []
    reported = all_problems([_misspell(manifest, path, wrong)])
    assert reported, f"{kind} with {wrong!r} for {path[-1]!r} passed validation"
    assert any(wrong in problem for problem in reported), reported


def test_a_wrong_type_is_refused(defaults: list[Manifest]) -> None:
    topic = copy.deepcopy(of_kind(defaults, "KafkaTopic")[0])
    topic["spec"]["partitions"] = "twelve"
    assert any("partitions" in p for p in all_problems([topic]))
    scaled = copy.deepcopy(of_kind(defaults, "ScaledObject")[0])
    scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 20000  # KEDA takes strings only
    assert any("lagThreshold" in p for p in all_problems([scaled]))


# --- what the chart renders agrees with the code ------------------------------------------------


def test_the_charts_topics_are_the_codes(rendered: list[Manifest]) -> None:
    """The KafkaTopics are exactly the topics the services create at start (ALL_TOPICS and a
    dead-letter topic per consumed topic), with the configs they create them with
    (`topic_configs`: the compacted agreements topic, the dead-letter topics' record size) plus
    min.insync.replicas, and the partitions the services are told (TIERLINE_TOPIC_PARTITIONS)."""
    topics = of_kind(rendered, "KafkaTopic")
    if not topics:  # a Kafka the chart does not manage
        assert not of_kind(rendered, "Kafka")
        return
    code = [*ALL_TOPICS, *(dlq(topic) for topic in CONSUMED_TOPICS)]
    by_name = {t["spec"]["topicName"]: t for t in topics}
    assert sorted(by_name) == sorted(code)
    assert len(topics) == len(code)
    partitions = int(environment(rendered, "intake")["TIERLINE_TOPIC_PARTITIONS"])
    replicas = int(environment(rendered, "intake")["TIERLINE_TOPIC_REPLICATION"])
    for name, topic in by_name.items():
        config = {key: str(value) for key, value in topic["spec"]["config"].items()}
        assert config == {**topic_configs(name), "min.insync.replicas": "2"}, name
        assert topic["spec"]["partitions"] == partitions, name
        assert topic["spec"]["replicas"] == replicas == 3, name


def test_brokers_replicate_what_they_create_themselves(defaults: list[Manifest]) -> None:
    config = of_kind(defaults, "Kafka")[0]["spec"]["kafka"]["config"]
    assert config["min.insync.replicas"] == 2
    assert config["default.replication.factor"] == 3
    assert config["offsets.topic.replication.factor"] == 3
    assert config["transaction.state.log.min.isr"] == 2
    assert config["auto.create.topics.enable"] is False
    assert of_kind(defaults, "KafkaNodePool")[0]["spec"]["replicas"] == 3


def test_autoscalers_follow_the_lag_of_the_codes_groups(rendered: list[Manifest]) -> None:
    for scaled in of_kind(rendered, "ScaledObject"):
        service = scaled["spec"]["scaleTargetRef"]["name"].removeprefix(f"{RELEASE}-")
        group, topic = AUTOSCALED[service]
        (trigger,) = scaled["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == group, service
        assert trigger["metadata"]["topic"] == topic, service
        env = environment(rendered, service)
        assert trigger["metadata"]["bootstrapServers"] == env["KAFKA_BOOTSTRAP_SERVERS"]
        assert "replicas" not in deployment(rendered, service)["spec"], f"KEDA owns {service}'s"


def test_autoscalers_never_exceed_the_partitions(rendered: list[Manifest]) -> None:
    """A group uses one instance per partition at most: maxReplicaCount <= partitions, in every
    values set (ci/values-plain.yaml asks for 40 metering instances over 4 partitions)."""
    partitions = int(environment(rendered, "intake")["TIERLINE_TOPIC_PARTITIONS"])
    for scaled in of_kind(rendered, "ScaledObject"):
        spec = scaled["spec"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions, spec


@pytest.mark.parametrize("asked", [3, 12, 13, 100])
def test_the_partition_cap_is_templated_from_the_partitions(asked: int) -> None:
    manifests = render(None, f"services.metering.autoscaling.maxReplicas={asked}")
    metering = named(manifests, "ScaledObject", f"{RELEASE}-metering")
    assert metering["spec"]["maxReplicaCount"] == min(asked, 12)
    manifests = render(None, "kafka.topics.partitions=5")
    for scaled in of_kind(manifests, "ScaledObject"):
        assert scaled["spec"]["maxReplicaCount"] == 5
    for topic in of_kind(manifests, "KafkaTopic"):
        assert topic["spec"]["partitions"] == 5


@pytest.mark.parametrize("service", SETTINGS)
def test_each_service_gets_every_variable_it_requires_and_none_it_does_not_read(
    rendered: list[Manifest], service: str
) -> None:
    names = env_names(SETTINGS[service])
    env = environment(rendered, service)
    required = {name for name, is_required in names.items() if is_required}
    assert required <= set(env), f"{service} misses {required - set(env)}"
    unread = set(env) - set(names) - LIBRARY_VARIABLES
    assert not unread, f"{service}: {unread} set, not read by {SETTINGS[service].__name__}"


def _secret_values(manifests: list[Manifest]) -> dict[tuple[str, str], str]:
    values = {
        (s["metadata"]["name"], key): value
        for s in of_kind(manifests, "Secret")
        for key, value in s.get("stringData", {}).items()
    }
    values.setdefault(
        ("tierline-database", "DATABASE_URL"), "postgresql://tierline:pw@db:5432/tierline"
    )
    return values


@pytest.mark.parametrize("service", SETTINGS)
def test_the_rendered_settings_start_the_service(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the variables as the chart sets them (secrets as ci/values-plain.yaml makes them),
    the service's Settings validate: it would start, listening on all interfaces."""
    plain = next(p for p in VALUES_SETS if p.stem == "values-plain")
    manifests = render(plain)
    secrets = _secret_values(manifests)
    for name in env_names(SETTINGS[service]):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment(manifests, service).items():
        if isinstance(value, dict):  # from a Secret
            ref = value["secretKeyRef"]
            if (ref["name"], ref["key"]) not in secrets:
                assert ref.get("optional") or name in LIBRARY_VARIABLES, (name, ref)
                continue
            value = secrets[(ref["name"], ref["key"])]
        monkeypatch.setenv(name, value)
    settings = cast(CommonSettings, SETTINGS[service]())
    assert settings.tierline_http_host == "0.0.0.0"
    assert (
        getattr(settings, f"{service}_port")
        == container(manifests, service)["ports"][0]["containerPort"]
    )


@pytest.mark.parametrize("service", SETTINGS)
def test_probes_security_and_disruption_budget(rendered: list[Manifest], service: str) -> None:
    spec = container(rendered, service)
    port = spec["ports"][0]
    assert str(port["containerPort"]) == environment(rendered, service)[f"{service.upper()}_PORT"]
    assert spec["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    # /healthz is 503 while Kafka or PostgreSQL is down: liveness must not restart on that.
    for probe in ("livenessProbe", "startupProbe"):
        assert spec[probe]["httpGet"] == {"path": "/metrics", "port": port["name"]}, probe
    assert spec["command"] == ["python", "-m", f"services.{service}"]
    assert spec["resources"]["requests"] and spec["resources"]["limits"]
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["allowPrivilegeEscalation"] is False
    pod = deployment(rendered, service)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
    labels = deployment(rendered, service)["spec"]["template"]["metadata"]["labels"]
    budget = named(rendered, "PodDisruptionBudget", f"{RELEASE}-{service}")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_every_http_api_has_a_service_on_its_port(rendered: list[Manifest]) -> None:
    for service in ("intake", "metering", "billing", "console"):
        svc = named(rendered, "Service", f"{RELEASE}-{service}")
        labels = deployment(rendered, service)["spec"]["template"]["metadata"]["labels"]
        assert svc["spec"]["selector"].items() <= labels.items()
        assert svc["spec"]["ports"][0]["targetPort"] == "http"
    console = environment(rendered, "console")
    metering_port = container(rendered, "metering")["ports"][0]["containerPort"]
    assert console["CONSOLE_METERING_URL"] == f"http://{RELEASE}-metering:{metering_port}"


def _most_instances(manifests: list[Manifest], service: str) -> int:
    scaled = [
        s
        for s in of_kind(manifests, "ScaledObject")
        if s["spec"]["scaleTargetRef"]["name"] == f"{RELEASE}-{service}"
    ]
    if scaled:
        return int(scaled[0]["spec"]["maxReplicaCount"])
    return int(deployment(manifests, service)["spec"]["replicas"])


def test_the_database_admits_every_connection_the_services_may_open(
    rendered: list[Manifest],
) -> None:
    """In session mode a client beyond the pooler's pool waits until another disconnects, and
    the services keep their connections: the pool must hold all of them at their most
    instances, and PostgreSQL must take every pooler instance's pool."""
    clusters = of_kind(rendered, "Cluster")
    if not clusters:
        return
    clients = sum(
        _most_instances(rendered, service)
        * (int(environment(rendered, service)["DATABASE_POOL_SIZE"]) + extra)
        for service, extra in EXTRA_CONNECTIONS.items()
    )
    max_connections = int(clusters[0]["spec"]["postgresql"]["parameters"]["max_connections"])
    poolers = of_kind(rendered, "Pooler")
    if not poolers:
        assert max_connections >= clients
        return
    (pooler,) = poolers
    assert pooler["spec"]["pgbouncer"]["poolMode"] == "session"  # billing LISTENs
    parameters = pooler["spec"]["pgbouncer"]["parameters"]
    assert int(parameters["default_pool_size"]) >= clients
    assert int(parameters["max_client_conn"]) >= clients
    assert max_connections >= pooler["spec"]["instances"] * int(parameters["default_pool_size"])
    for service in EXTRA_CONNECTIONS:
        assert (
            f"@{pooler['metadata']['name']}:5432/" in environment(rendered, service)["DATABASE_URL"]
        )


def test_postgres_commits_on_a_standby_and_is_watched(defaults: list[Manifest]) -> None:
    (cluster,) = of_kind(defaults, "Cluster")
    assert cluster["spec"]["instances"] == 3
    assert cluster["spec"]["postgresql"]["synchronous"] == {
        "method": "any",
        "number": 1,
        "dataDurability": "required",
    }
    assert cluster["spec"]["monitoring"]["enablePodMonitor"] is True
    assert of_kind(defaults, "Pooler")[0]["spec"]["monitoring"]["enablePodMonitor"] is True
    app_secret = f"{cluster['metadata']['name']}-app"
    for service in EXTRA_CONNECTIONS:
        password = environment(defaults, service)["PGPASSWORD"]
        assert password == {"secretKeyRef": {"name": app_secret, "key": "password"}}


#: What each service does on Kafka (SPEC §1 and each app.py): topics written, topics read,
#: groups committed, groups whose offsets it only reads (billing's close barrier, the console).
KAFKA_USE: Final[dict[str, tuple[set[str], set[str], set[str], set[str]]]] = {
    "intake": ({WORKITEMS_COMPLETED}, set(), set(), set()),
    "classifier": (
        {WORKITEMS_CLASSIFIED, WORKITEMS_UNCLASSIFIED, dlq(WORKITEMS_COMPLETED), dlq(AGREEMENTS)},
        {WORKITEMS_COMPLETED, AGREEMENTS},
        {CLASSIFIER_GROUP},
        set(),
    ),
    "metering": (
        {USAGE_ALERTS, dlq(WORKITEMS_CLASSIFIED), dlq(AGREEMENTS)},
        {WORKITEMS_CLASSIFIED, AGREEMENTS},
        {METERING_GROUP},
        set(),
    ),
    "billing": ({AGREEMENTS, INVOICES}, {AGREEMENTS}, set(), {CLASSIFIER_GROUP, METERING_GROUP}),
    "console": (
        set(CONSUMED_TOPICS),  # redrives go back to their origin topic
        {*ALL_TOPICS, *(dlq(t) for t in CONSUMED_TOPICS)},
        set(),
        {CLASSIFIER_GROUP, METERING_GROUP},
    ),
}


def _allowed(user: Manifest, kind: str, name: str) -> set[str]:
    return {
        op
        for acl in user["spec"]["authorization"]["acls"]
        if acl["resource"]["type"] == kind and acl["resource"]["name"] == name
        for op in acl["operations"]
    }


@pytest.mark.parametrize("service", SETTINGS)
def test_each_service_has_its_own_kafka_user_allowed_what_it_does(
    defaults: list[Manifest], service: str
) -> None:
    user = named(defaults, "KafkaUser", f"{RELEASE}-{service}")
    assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
    env = environment(defaults, service)
    assert env["KAFKA_SASL_USERNAME"] == user["metadata"]["name"]
    assert env["KAFKA_SASL_PASSWORD"] == {
        "secretKeyRef": {"name": user["metadata"]["name"], "key": "password"}
    }
    writes, reads, commits, describes = KAFKA_USE[service]
    topics = [*ALL_TOPICS, *(dlq(t) for t in CONSUMED_TOPICS)]
    for topic in topics:
        allowed = _allowed(user, "topic", topic)
        # every service creates missing topics at start and sets the dead-letter topics' size
        assert {"Describe", "Create", "AlterConfigs"} <= allowed, (topic, allowed)
        assert ("Write" in allowed) == (topic in writes), (topic, allowed)
        if topic in reads:
            assert "Read" in allowed, (topic, allowed)
    for group in commits:
        assert "Read" in _allowed(user, "group", group), group
    for group in describes:
        assert "Describe" in _allowed(user, "group", group), group


def test_kafka_is_reached_over_tls_with_scram_by_default(defaults: list[Manifest]) -> None:
    (kafka,) = of_kind(defaults, "Kafka")
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    assert listener["tls"] is True and listener["authentication"]["type"] == "scram-sha-512"
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"
    for service in SETTINGS:
        env = environment(defaults, service)
        assert env["KAFKA_BOOTSTRAP_SERVERS"] == f"{RELEASE}-kafka-bootstrap:{listener['port']}"
        assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        mounts = {m["mountPath"]: m["name"] for m in container(defaults, service)["volumeMounts"]}
        assert env["KAFKA_SSL_CA_FILE"].rsplit("/", 1)[0] in mounts


#: Values that must stop the rendering, with what the message must say.
REFUSED: Final[list[tuple[list[str], str]]] = [
    (["keys.existingSecret="], "keys.existingSecret"),
    (["keys.create=true"], "keys.admin"),
    (["kafka.strimzi.enabled=false"], "kafka.external.bootstrapServers"),
    (["postgres.cnpg.enabled=false"], "postgres.external.urlSecret"),
]


@pytest.mark.parametrize(("sets", "message"), REFUSED, ids=[r[1] for r in REFUSED])
def test_missing_required_values_stop_the_rendering(sets: list[str], message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        render(None, *sets)
