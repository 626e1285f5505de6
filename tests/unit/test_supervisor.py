"""`./tierline up` honours INTAKE_PORT … CONSOLE_PORT, and runs the services as the local run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.infra.auth import parse_client_keys
from tools import cli
from tools.supervisor import DEFAULT_PORTS, PORT_VARIABLES, Stack, ports_from_env

CUSTOM = {
    "INTAKE_PORT": "18081",
    "CLASSIFIER_PORT": "18082",
    "METERING_PORT": "18083",
    "BILLING_PORT": "18084",
    "CONSOLE_PORT": "18085",
}


def test_ports_default_when_unset() -> None:
    assert ports_from_env({}) == DEFAULT_PORTS


def test_every_port_variable_is_honoured() -> None:
    assert ports_from_env(CUSTOM) == {
        "intake": 18081,
        "classifier": 18082,
        "metering": 18083,
        "billing": 18084,
        "console": 18085,
    }


@pytest.mark.parametrize("value", ["http", "0", "70000", "-1"])
def test_a_bad_port_names_its_variable(value: str) -> None:
    with pytest.raises(ValueError, match="BILLING_PORT must be a port number"):
        ports_from_env({"BILLING_PORT": value})


def test_two_services_on_one_port_is_refused() -> None:
    with pytest.raises(ValueError, match="CONSOLE_PORT and INTAKE_PORT are both 8081"):
        ports_from_env({"CONSOLE_PORT": "8081"})


def test_each_process_gets_its_own_port(tmp_path: Path) -> None:
    stack = Stack("127.0.0.1:1", "postgresql://x@127.0.0.1:1/x", tmp_path, ports_from_env(CUSTOM))
    for name, process in stack.processes.items():
        assert process.url == f"http://127.0.0.1:{CUSTOM[PORT_VARIABLES[name]]}"
        assert process.env[PORT_VARIABLES[name]] == CUSTOM[PORT_VARIABLES[name]]


def run_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str]) -> Any:
    """Runs `up` as far as starting the stack and returns what it built the stack with."""
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    built: dict[str, Any] = {}

    @contextlib.contextmanager
    def infrastructure(data_dir: Path, **options: Any) -> Iterator[tuple[str, str]]:
        yield "127.0.0.1:1", "postgresql://x@127.0.0.1:1/x"

    def stack(*args: Any, **kwargs: Any) -> Stack:
        built["stack"] = Stack(*args, **kwargs)
        raise KeyboardInterrupt  # stop before starting any process

    monkeypatch.setattr(cli, "infrastructure", infrastructure)
    monkeypatch.setattr(cli, "Stack", stack)
    monkeypatch.setattr("tools.cli.signal.signal", lambda *args: None)
    code = cli.main(["up", "--data-dir", str(tmp_path), "--no-demo"])
    return code, built.get("stack")


def test_up_starts_each_service_on_its_configured_port(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code, stack = run_up(monkeypatch, tmp_path, CUSTOM)
    assert code == 0
    assert {name: p.port for name, p in stack.processes.items()} == ports_from_env(CUSTOM)
    assert all(p.env["TIERLINE_LOCAL_RUN"] == "true" for p in stack.processes.values())


def test_up_with_a_bad_port_stops_before_starting_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stack = run_up(monkeypatch, tmp_path, {"METERING_PORT": "eighty"})
    assert code == 2
    assert stack is None
    assert "METERING_PORT must be a port number" in capsys.readouterr().out


def test_up_generates_a_client_key_for_each_demo_client_when_none_is_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("TIERLINE_CLIENT_KEYS", raising=False)
    code, stack = run_up(monkeypatch, tmp_path, {})
    assert code == 0
    keys = parse_client_keys(stack.client_keys)
    assert sorted(keys.values()) == cli.demo_clients() == ["acme", "globex", "initech"]
    assert all(p.env["TIERLINE_CLIENT_KEYS"] == stack.client_keys for p in stack.processes.values())


def test_up_keeps_the_client_keys_it_is_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code, stack = run_up(monkeypatch, tmp_path, {"TIERLINE_CLIENT_KEYS": "acme=given-key"})
    assert code == 0
    assert stack.client_keys == "acme=given-key"
    assert stack.processes["billing"].env["TIERLINE_CLIENT_KEYS"] == "acme=given-key"
