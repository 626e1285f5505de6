"""Run Tierline's services (the four of the pipeline and the console) as processes on one machine.

Used by the run command (`./tierline up`), the end-to-end and fault-injection tests and the
benchmark: each service is a real `python -m services.<name>` process with its own port, log
file and process group, started against a real Kafka and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from shared.infra.kafka_connection import KafkaConnection
from shared.infra.settings import kafka_settings_from
from tools.localinfra import free_port

SERVICES: Final = ("intake", "classifier", "metering", "billing", "console")
DEFAULT_PORTS: Final = {
    "intake": 8081,
    "classifier": 8082,
    "metering": 8083,
    "billing": 8084,
    "console": 8085,
}
PORT_VARIABLES: Final = {name: f"{name.upper()}_PORT" for name in SERVICES}
REPO_ROOT: Final = Path(__file__).resolve().parent.parent


def ports_from_env(environ: Mapping[str, str]) -> dict[str, int]:
    """Each service's port: its `<NAME>_PORT` variable when set, else its default.

    A value that is not a port number (1..65535) is a ValueError naming the variable.
    """
    ports: dict[str, int] = {}
    for name in SERVICES:
        variable = PORT_VARIABLES[name]
        text = environ.get(variable, "").strip()
        if not text:
            ports[name] = DEFAULT_PORTS[name]
            continue
        if not text.isdigit() or not 1 <= int(text) <= 65535:
            raise ValueError(f"{variable} must be a port number 1..65535, got {text!r}")
        ports[name] = int(text)
    taken: dict[int, str] = {}
    for name, port in ports.items():
        if port in taken:
            raise ValueError(
                f"{PORT_VARIABLES[name]} and {PORT_VARIABLES[taken[port]]} are both {port}"
            )
        taken[port] = name
    return ports


@dataclass
class ServiceProcess:
    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    #: The service this process runs (`services.<module>`); an instance name may differ
    #: ("metering-2" runs metering).
    module: str = ""
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.module = self.module or self.name
        self.env[PORT_VARIABLES[self.module]] = str(self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.module}"],
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.starts += 1

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_healthy(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited during start:\n{self.tail()}")
            if self.healthy():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not healthy after {timeout}s:\n{self.tail()}")

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM (graceful: in-flight batches finish and commit), SIGKILL if it hangs."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, as far as the service can tell."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def new_keys() -> tuple[str, str]:
    """A fresh admin key and intake keys (`source=key,...`) for a local run."""
    admin = f"adm_{secrets.token_urlsafe(24)}"
    intake = ",".join(
        f"{source}=ik_{source}_{secrets.token_urlsafe(16)}"
        for source in ("servicenow", "zendesk", "jira")
    )
    return admin, intake


def new_client_keys(clients: Iterable[str]) -> str:
    """A fresh read-only key for each of `clients` (`client_id=key,...`, SPEC §2)."""
    return ",".join(f"{client}=ck_{secrets.token_urlsafe(16)}" for client in clients)


@dataclass
class Stack:
    """The services against one Kafka and one PostgreSQL."""

    kafka_bootstrap: str
    database_url: str
    log_dir: Path
    ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_PORTS))
    extra_env: Mapping[str, str] = field(default_factory=dict)
    #: Variables for one service's processes only, over `extra_env`: {"billing": {...}}.
    service_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    admin_key: str = ""
    intake_keys: str = ""
    #: `client_id=key,...` (TIERLINE_CLIENT_KEYS) when given; else the environment's, if any.
    client_keys: str = ""
    #: Extra instances per service beyond the first (scale-out: one consumer group).
    instances: Mapping[str, int] = field(default_factory=dict)
    processes: dict[str, ServiceProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.admin_key or not self.intake_keys:
            self.admin_key, self.intake_keys = new_keys()
        base = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "DATABASE_URL": self.database_url,
            "TIERLINE_ADMIN_KEY": self.admin_key,
            "TIERLINE_INTAKE_KEYS": self.intake_keys,
            **({"TIERLINE_CLIENT_KEYS": self.client_keys} if self.client_keys else {}),
            "PYTHONUNBUFFERED": "1",
            **{PORT_VARIABLES[name]: str(port) for name, port in self.ports.items()},
            # The console forwards the pages' item reads to this stack's metering.
            "CONSOLE_METERING_URL": f"http://127.0.0.1:{self.ports['metering']}",
            **self.extra_env,
        }
        for name in SERVICES:
            env = {**base, **self.service_env.get(name, {})}
            self.processes[name] = ServiceProcess(
                name, self.ports[name], dict(env), self.log_dir / f"{name}.log"
            )
            for n in range(2, self.instances.get(name, 1) + 1):
                instance = f"{name}-{n}"
                self.processes[instance] = ServiceProcess(
                    instance,
                    free_port(),
                    dict(env),
                    self.log_dir / f"{instance}.log",
                    module=name,
                )

    @property
    def kafka(self) -> KafkaConnection:
        """How the services reach Kafka (bootstrap servers and the KAFKA_SECURITY_* variables
        they are given), for the caller's own clients (the benchmark's offset reads)."""
        return kafka_settings_from(next(iter(self.processes.values())).env).kafka

    @property
    def intake_key(self) -> str:
        return self.intake_keys.split(",")[0].split("=", 1)[1]

    def url(self, name: str) -> str:
        return self.processes[name].url

    def start(self, names: tuple[str, ...] | None = None, *, timeout: float = 90) -> None:
        chosen = list(self.processes) if names is None else list(names)
        for name in chosen:
            self.processes[name].start()
        for name in chosen:
            self.processes[name].wait_healthy(timeout)

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.stop()

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
