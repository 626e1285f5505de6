"""Kafka's security settings: checked together at start, naming the variable at fault, and made
into the one `KafkaConnection` every client is built from (aiokafka and FastStream alike).

The broker side is tests/e2e/test_kafka_security.py; here no broker is needed: the files are
certificates made for the test, and an outage is a closed loopback port.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from faststream.kafka.security import parse_security
from faststream.security import SASLPlaintext, SASLScram256, SASLScram512

from shared.infra.kafka_connection import (
    KafkaConnection,
    SaslCredentials,
    check_access,
    refusal_reason,
)
from shared.infra.settings import KafkaSettings, kafka_settings_from, load_settings
from tests.certificates import Authority, Issued, authority, issue
from tools.supervisor import REPO_ROOT

KEY_PASSWORD = "client-key-pass"


@dataclass(frozen=True)
class Pki:
    ca: Authority
    client: Issued  # its key encrypted with KEY_PASSWORD
    other: Issued  # another client, its key not encrypted
    junk: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = authority(folder)
    junk = folder / "junk.pem"
    junk.write_text("not a certificate\n")
    return Pki(
        ca,
        issue(ca, folder, "client", server=False, key_password=KEY_PASSWORD),
        issue(ca, folder, "other", server=False),
        junk,
    )


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No KAFKA_* variable of the caller's shell, and a bootstrap server."""
    for name in list(os.environ):
        if name.startswith("KAFKA_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    return monkeypatch


def load(monkeypatch: pytest.MonkeyPatch, **env: str) -> KafkaSettings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings(KafkaSettings)


def sasl_ssl(pki: Pki, **more: str) -> dict[str, str]:
    return {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_USERNAME": "tierline",
        "KAFKA_SASL_PASSWORD": "secret",
        "KAFKA_SSL_CA_FILE": str(pki.ca.cert_file),
        **more,
    }


def mutual(pki: Pki) -> dict[str, str]:
    return {
        "KAFKA_SSL_CERT_FILE": str(pki.client.cert_file),
        "KAFKA_SSL_KEY_FILE": str(pki.client.key_file),
        "KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD,
    }


def test_by_default_kafka_is_plaintext(environment: pytest.MonkeyPatch) -> None:
    kafka = load(environment).kafka
    assert kafka == KafkaConnection.plaintext("127.0.0.1:1")
    assert kafka.client_options() == {
        "bootstrap_servers": "127.0.0.1:1",
        "security_protocol": "PLAINTEXT",
    }
    assert kafka.security() is None


def test_sasl_ssl_with_a_client_certificate_gives_aiokafka_and_faststream_the_same_security(
    environment: pytest.MonkeyPatch, pki: Pki
) -> None:
    kafka = load(
        environment, **sasl_ssl(pki, KAFKA_SECURITY_PROTOCOL="sasl_ssl"), **mutual(pki)
    ).kafka
    options = kafka.client_options()
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": "127.0.0.1:1",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "tierline",
        "sasl_plain_password": "secret",
    }
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [ca["subject"] for ca in context.get_ca_certs()] == [
        ((("commonName", "tierline-test-ca"),),)
    ]  # the CA file only, not the system's
    security = kafka.security()
    assert isinstance(security, SASLScram512) and security.ssl_context is context
    # What FastStream's broker hands its producer and consumers is what ours get.
    assert parse_security(security) == {
        key: value for key, value in kafka.client_options().items() if key != "bootstrap_servers"
    }
    assert "secret" not in repr(kafka)  # the password stays out of logs


@pytest.mark.parametrize(
    ("mechanism", "faststream_type"),
    [("SCRAM-SHA-256", SASLScram256), ("PLAIN", SASLPlaintext), ("scram-sha-512", SASLScram512)],
)
def test_sasl_plaintext_uses_the_mechanism_and_no_tls(
    environment: pytest.MonkeyPatch, mechanism: str, faststream_type: type[object]
) -> None:
    kafka = load(
        environment,
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_MECHANISM=mechanism,
        KAFKA_SASL_USERNAME="u",
        KAFKA_SASL_PASSWORD="p",
    ).kafka
    assert kafka.ssl_context is None and "ssl_context" not in kafka.client_options()
    assert kafka.client_options()["sasl_mechanism"] == mechanism.upper()
    security = kafka.security()
    assert type(security) is faststream_type and security is not None and not security.use_ssl


def test_ssl_without_a_ca_file_trusts_the_system_and_may_skip_the_name_check(
    environment: pytest.MonkeyPatch,
) -> None:
    kafka = load(environment, KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CHECK_HOSTNAME="false").kafka
    assert kafka.sasl is None and kafka.ssl_context is not None
    assert not kafka.ssl_context.check_hostname
    assert kafka.ssl_context.verify_mode == ssl.CERT_REQUIRED  # the chain is still verified
    assert parse_security(kafka.security())["security_protocol"] == "SSL"


def test_empty_variables_count_as_unset(environment: pytest.MonkeyPatch) -> None:
    kafka = load(environment, KAFKA_SSL_CA_FILE="", KAFKA_SASL_USERNAME=" ").kafka
    assert kafka == KafkaConnection.plaintext("127.0.0.1:1")


def bad_cases(pki: Pki) -> list[tuple[dict[str, str], str]]:
    """(variables, what the message must say) for each way the settings can be wrong."""
    ssl_only = {"KAFKA_SECURITY_PROTOCOL": "SSL"}
    return [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL Input should be"),
        (
            sasl_ssl(pki, KAFKA_SASL_MECHANISM="GSSAPI"),
            "KAFKA_SASL_MECHANISM Input should be 'SCRAM-SHA-512', 'SCRAM-SHA-256' or 'PLAIN'",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
            "KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are required with "
            "KAFKA_SECURITY_PROTOCOL SASL_SSL",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "u"},
            "KAFKA_SASL_PASSWORD is required with KAFKA_SECURITY_PROTOCOL SASL_PLAINTEXT",
        ),
        (
            {"KAFKA_SSL_CA_FILE": str(pki.ca.cert_file)},
            "KAFKA_SSL_CA_FILE is set, but KAFKA_SECURITY_PROTOCOL PLAINTEXT uses no TLS",
        ),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_USERNAME": "u",
                "KAFKA_SASL_PASSWORD": "p",
                "KAFKA_SSL_CHECK_HOSTNAME": "false",
            },
            "KAFKA_SSL_CHECK_HOSTNAME is set, but KAFKA_SECURITY_PROTOCOL SASL_PLAINTEXT uses no",
        ),
        (
            {**ssl_only, "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"},
            "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD are set, but KAFKA_SECURITY_PROTOCOL SSL "
            "uses no SASL",
        ),
        (
            {**ssl_only, "KAFKA_SSL_CA_FILE": "/nonexistent/ca.pem"},
            "KAFKA_SSL_CA_FILE /nonexistent/ca.pem does not exist",
        ),
        (
            {**ssl_only, "KAFKA_SSL_CA_FILE": str(pki.junk)},
            f"KAFKA_SSL_CA_FILE {pki.junk} holds no PEM certificate",
        ),
        (
            {**ssl_only, "KAFKA_SSL_CA_FILE": str(pki.other.key_file)},
            f"KAFKA_SSL_CA_FILE {pki.other.key_file} holds no PEM certificate",
        ),
        (
            {**ssl_only, "KAFKA_SSL_CERT_FILE": str(pki.client.cert_file)},
            "KAFKA_SSL_CERT_FILE needs KAFKA_SSL_KEY_FILE",
        ),
        (
            {**ssl_only, "KAFKA_SSL_KEY_FILE": str(pki.client.key_file)},
            "KAFKA_SSL_KEY_FILE needs KAFKA_SSL_CERT_FILE",
        ),
        (
            {**ssl_only, "KAFKA_SSL_KEY_PASSWORD": "x"},
            "KAFKA_SSL_KEY_PASSWORD is set without KAFKA_SSL_KEY_FILE",
        ),
        (
            {
                **ssl_only,
                "KAFKA_SSL_CERT_FILE": str(pki.junk),
                "KAFKA_SSL_KEY_FILE": str(pki.other.key_file),
            },
            f"KAFKA_SSL_CERT_FILE {pki.junk} holds no PEM certificate",
        ),
        (
            {
                **ssl_only,
                "KAFKA_SSL_CERT_FILE": str(pki.other.cert_file),
                "KAFKA_SSL_KEY_FILE": str(pki.other.cert_file),
            },
            f"KAFKA_SSL_KEY_FILE {pki.other.cert_file} holds no PEM private key",
        ),
        (
            {
                **ssl_only,
                "KAFKA_SSL_CERT_FILE": str(pki.client.cert_file),
                "KAFKA_SSL_KEY_FILE": str(pki.other.key_file),
            },
            f"KAFKA_SSL_KEY_FILE {pki.other.key_file} is not the key of the certificate in "
            f"KAFKA_SSL_CERT_FILE {pki.client.cert_file}",
        ),
        (
            {
                **ssl_only,
                "KAFKA_SSL_CERT_FILE": str(pki.client.cert_file),
                "KAFKA_SSL_KEY_FILE": str(pki.client.key_file),
            },
            f"KAFKA_SSL_KEY_FILE {pki.client.key_file} is encrypted: KAFKA_SSL_KEY_PASSWORD is "
            "required",
        ),
        (
            {**ssl_only, **mutual(pki), "KAFKA_SSL_KEY_PASSWORD": "wrong"},
            f"KAFKA_SSL_KEY_PASSWORD does not decrypt KAFKA_SSL_KEY_FILE {pki.client.key_file}",
        ),
    ]


def test_every_bad_setting_stops_the_start_naming_its_variable(
    environment: pytest.MonkeyPatch, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    for variables, message in bad_cases(pki):
        with environment.context() as case:
            with pytest.raises(SystemExit) as stopped:
                load(case, **variables)
            assert stopped.value.code == 2, variables
            assert f"configuration error: {message}" in capsys.readouterr().err, variables


def test_a_service_with_a_bad_tls_file_exits_naming_the_variable(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "TIERLINE_"))}
    env.update(
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",
        KAFKA_SECURITY_PROTOCOL="SSL",
        KAFKA_SSL_CA_FILE=str(tmp_path / "missing.pem"),
    )
    result = subprocess.run(
        [sys.executable, "-m", "services.classifier"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"KAFKA_SSL_CA_FILE {tmp_path / 'missing.pem'} does not exist" in result.stderr


def test_a_tool_reads_the_security_of_the_environment_it_hands_on_and_no_other(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("KAFKA_SECURITY_PROTOCOL", "SSL")  # this process's, not the child's
    child = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:2", "PATH": "/bin"}
    assert kafka_settings_from(child).kafka == KafkaConnection.plaintext("127.0.0.1:2")
    child |= {"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "u"}
    child |= {"KAFKA_SASL_PASSWORD": "p"}
    assert kafka_settings_from(child).kafka.sasl == SaslCredentials("SCRAM-SHA-512", "u", "p")


def test_a_connection_cannot_claim_a_protocol_it_has_no_settings_for() -> None:
    with pytest.raises(ValueError, match="SASL_SSL"):
        KafkaConnection("h:1", "SASL_SSL")
    with pytest.raises(ValueError, match="PLAINTEXT"):
        KafkaConnection("h:1", "PLAINTEXT", ssl_context=ssl.create_default_context())


def test_refusals_name_what_to_fix_and_an_outage_is_no_refusal() -> None:
    sasl = KafkaConnection(
        "h:1",
        "SASL_SSL",
        sasl=SaslCredentials("SCRAM-SHA-512", "tierline", "p"),
        ssl_context=ssl.create_default_context(),
    )
    plain = KafkaConnection.plaintext("h:1")
    tls_lost = KafkaConnectionError("Connection at h:1 closed")
    tls_lost.__cause__ = ssl.SSLError(1, "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] bad certificate")
    tls_answer = KafkaConnectionError("Connection at h:1 closed")
    tls_answer.__cause__ = asyncio.IncompleteReadError(b"\x00\x00\x00", 0x15030300)
    unverified = ssl.SSLCertVerificationError(1, "certificate verify failed")
    unverified.verify_message = "unable to get local issuer certificate"
    said = {
        "password": refusal_reason(sasl, SaslAuthenticationFailed("invalid credentials")),
        "mechanism": refusal_reason(sasl, UnsupportedSaslMechanismError("no")),
        "untrusted": refusal_reason(sasl, unverified),
        "client certificate": refusal_reason(sasl, tls_lost),
        "tls listener": refusal_reason(plain, tls_answer),
    }
    assert said["password"] is not None and "KAFKA_SASL_PASSWORD" in said["password"]
    assert "SaslAuthenticationFailed: invalid credentials" in said["password"]
    assert said["mechanism"] == "KAFKA_SASL_MECHANISM SCRAM-SHA-512 is not enabled on this listener"
    assert said["untrusted"] is not None and "KAFKA_SSL_CA_FILE" in said["untrusted"]
    assert said["client certificate"] is not None
    assert "KAFKA_SSL_CERT_FILE" in said["client certificate"]
    assert said["tls listener"] is not None and "KAFKA_SECURITY_PROTOCOL" in said["tls listener"]
    for outage in (
        ConnectionRefusedError(111, "refused"),
        TimeoutError(),
        KafkaConnectionError("Connection at h:1 closed"),
    ):
        assert refusal_reason(sasl, outage) is None


async def test_check_access_leaves_an_outage_to_the_callers_retries() -> None:
    # Nothing listens on port 1: not a refusal; ensure_topics waits the outage out as before.
    await check_access(KafkaConnection.plaintext("127.0.0.1:1"), timeout=2)
