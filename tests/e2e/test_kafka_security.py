"""Every service over SASL_SSL with mutual TLS, on a real broker with a SASL_SSL listener.

The module starts a broker of its own (tools/localinfra's LocalKafka with `SaslSslListener`):
TLS with certificates made here (a CA, the broker's for 127.0.0.1, a client's with an encrypted
key), SCRAM-SHA-512 with a user created when the storage is formatted, and a client certificate
required. The services are given that listener's address alone, so every Kafka client they build
either speaks SASL_SSL with the certificate or gets nothing. Then the whole pipeline runs: an
agreement, items through intake, the classifier and metering, a close with its completeness
barrier, the invoice read back from `billing.invoices` over SASL_SSL, the console's offsets. A
wrong password, or no client certificate, stops a service at start with a message naming the
variable to fix.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.contracts.topics import METERING_GROUP
from shared.infra.kafka_connection import KafkaAccessRefused, KafkaConnection, check_access
from shared.infra.settings import kafka_settings_from
from tests.certificates import Authority, Issued, authority, issue
from tests.e2e.conftest import BASE_ENV, Api
from tests.e2e.test_pipeline import items, last_month
from tests.spec_example import spec_agreement
from tools.localinfra import free_port
from tools.localinfra.kafka import LocalKafka, SaslSslListener
from tools.supervisor import SERVICES, ServiceProcess, Stack

USER = "tierline"


@dataclass(frozen=True)
class SecureKafka:
    broker: LocalKafka
    ca: Authority
    client: Issued
    password: str

    def env(self, **overrides: str | None) -> dict[str, str]:
        """The variables a service reaches this broker with (an override of None drops one)."""
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.broker.sasl_ssl_bootstrap_servers,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": USER,
            "KAFKA_SASL_PASSWORD": self.password,
            "KAFKA_SSL_CA_FILE": str(self.ca.cert_file),
            "KAFKA_SSL_CERT_FILE": str(self.client.cert_file),
            "KAFKA_SSL_KEY_FILE": str(self.client.key_file),
            "KAFKA_SSL_KEY_PASSWORD": self.client.key_password or "",
        }
        for name, value in overrides.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

    def connection(self, **overrides: str | None) -> KafkaConnection:
        return kafka_settings_from(self.env(**overrides)).kafka


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    pki = tmp_path_factory.mktemp("pki")
    ca = authority(pki)
    broker_cert = issue(ca, pki, "broker", server=True)
    client = issue(ca, pki, "tierline-client", server=False, key_password=secrets.token_hex(8))
    password = secrets.token_hex(12)
    listener = SaslSslListener(
        keystore=broker_cert.bundle_file,
        truststore=ca.cert_file,
        users={USER: password},
        client_auth="required",
    )
    broker = LocalKafka(tmp_path_factory.mktemp("secure-kafka"), fast=True, sasl_ssl=listener)
    broker.start()
    try:
        yield SecureKafka(broker, ca, client, password)
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def stack(
    secure_kafka: SecureKafka, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """The five services, each given the SASL_SSL listener only (overrides tests/e2e's)."""
    env = secure_kafka.env()
    with Stack(
        env["KAFKA_BOOTSTRAP_SERVERS"],
        database_url,
        tmp_path_factory.mktemp("secure-service-logs"),
        ports={name: free_port() for name in SERVICES},
        extra_env={**BASE_ENV, **env},
    ) as running:
        yield running


async def invoice_events_over(kafka: KafkaConnection, ids: set[str]) -> dict[str, Any]:
    """`billing.invoices` read from the beginning, with `kafka`'s security, until every id."""
    consumer = kafka.consumer(
        "billing.invoices", auto_offset_reset="earliest", enable_auto_commit=False, group_id=None
    )
    await consumer.start()
    found: dict[str, Any] = {}
    try:
        async with asyncio.timeout(60):
            while not ids <= found.keys():
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        event = json.loads(record.value)
                        if event["id"] in ids:
                            found[event["id"]] = event
    finally:
        await consumer.stop()
    return found


async def test_the_whole_pipeline_runs_over_sasl_ssl_with_a_client_certificate(
    api: Api, secure_kafka: SecureKafka, run_id: str
) -> None:
    period, client = last_month(), f"secure-{run_id}"
    response = await api.put_agreement(spec_agreement(client))  # billing → agreements
    assert response.status_code == 200, response.text
    sent = items(client, "Customer Care", 600, period, "America/New_York")
    sent += items(client, "Data Entry", 150, period, "America/New_York")
    # intake → workitems.completed → classifier → workitems.classified → metering
    assert await api.post_items(sent + sent[:40]) == 790

    response = await api.close(period.key, client)  # the barrier reads offsets over SASL_SSL
    assert response.status_code == 200, response.text
    assert [invoice["total"] for invoice in response.json()["invoices"]] == ["10000.00"]
    usage = await api.usage(client, period.key)
    assert (usage["items"], usage["weighted_units"], usage["status"]) == (750, "900", "closed")

    invoice_id = f"{client}-{period.key}-1"
    assert api.stack.kafka == secure_kafka.connection()  # what the services were given
    events = await invoice_events_over(api.stack.kafka, {invoice_id})
    assert events[invoice_id]["data"]["total"] == "10000.00"

    # The console samples end and committed offsets over SASL_SSL too (every 2 s).
    async with httpx.AsyncClient(timeout=30) as http, asyncio.timeout(60):
        while True:
            kafka = (
                await http.get(f"{api.stack.url('console')}/api/kafka", headers=api.admin)
            ).json()
            topics = {row["topic"]: row["messages"] for row in kafka["topics"]}
            lags = {row["group"]: row["lag"] for row in kafka["groups"]}
            # records, not items: a request's items travel as one batch record per client
            if topics.get("workitems.completed", 0) >= 1 and lags.get(METERING_GROUP) == 0:
                break
            await asyncio.sleep(0.5)
        health = (await http.get(f"{api.stack.url('console')}/healthz")).json()
    assert kafka["error"] is None and health["kafka"] == "ok"


def start_intake(secure_kafka: SecureKafka, log: Path, **overrides: str | None) -> ServiceProcess:
    env = {**BASE_ENV, **secure_kafka.env(**overrides)}
    env["TIERLINE_ADMIN_KEY"] = f"adm_{secrets.token_hex(16)}"
    env["TIERLINE_INTAKE_KEYS"] = f"zendesk=ik_{secrets.token_hex(16)}"
    process = ServiceProcess("intake", free_port(), env, log)
    process.start()
    return process


def exit_and_log(process: ServiceProcess) -> tuple[int, str]:
    """The exit status once it stopped by itself (waiting at most 90 s: a hang fails the test)
    and its log."""
    assert process.process is not None
    try:
        status = process.process.wait(90)
    finally:
        process.kill()
    return status, process.log_path.read_text(errors="replace")


def test_a_wrong_password_stops_a_service_at_start_naming_the_variables(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    process = start_intake(secure_kafka, tmp_path / "intake.log", KAFKA_SASL_PASSWORD="wrong")
    status, log = exit_and_log(process)
    assert status != 0
    assert "KafkaAccessRefused" in log
    assert "invalid credentials" in log and "KAFKA_SASL_PASSWORD" in log


def test_without_a_client_certificate_a_service_stops_at_start_naming_the_variables(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    process = start_intake(
        secure_kafka,
        tmp_path / "intake.log",
        KAFKA_SSL_CERT_FILE=None,
        KAFKA_SSL_KEY_FILE=None,
        KAFKA_SSL_KEY_PASSWORD=None,
    )
    status, log = exit_and_log(process)
    assert status != 0
    assert "KafkaAccessRefused" in log
    assert "TLS handshake failed" in log and "KAFKA_SSL_CERT_FILE" in log


async def test_a_broker_certificate_from_another_ca_is_refused_naming_the_variable(
    secure_kafka: SecureKafka, tmp_path: Path
) -> None:
    stranger = authority(tmp_path, "another-ca")
    kafka = secure_kafka.connection(KAFKA_SSL_CA_FILE=str(stranger.cert_file))
    with pytest.raises(KafkaAccessRefused, match=r"not trusted.*KAFKA_SSL_CA_FILE"):
        await check_access(kafka)
    await check_access(secure_kafka.connection())  # the same with the broker's CA: accepted
