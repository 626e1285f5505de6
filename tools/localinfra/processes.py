"""Loopback ports and the process table: what the servers listen on, who is still alive.

Everything listens on 127.0.0.1 only (``HOST``).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"


class LocalInfraError(RuntimeError):
    """A local server could not be fetched, started or stopped."""


def log(message: str) -> None:
    print(f"localinfra: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int) -> list[int]:
    """Distinct free ports (all held open at once so the kernel cannot hand one out twice)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((HOST, 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def port_open(port: int, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name: [state, ppid, pgrp, ...]."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (PID 1 may be slow to reap orphans)."""
    if not Path("/proc").is_dir():  # not Linux
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def live_pids() -> Iterator[int]:
    if not Path("/proc").is_dir():
        return
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() and pid_alive(int(entry.name)):
            yield int(entry.name)


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid``."""
    members = []
    for pid in live_pids():
        stat = proc_stat(pid)
        if stat is not None and int(stat[2]) == pgid:
            members.append(pid)
    return members


def pids_with_arg(arg: str) -> list[int]:
    """Live processes one of whose command-line arguments is exactly ``arg``."""
    wanted = os.fsencode(arg)
    found = []
    for pid in live_pids():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in argv:
            found.append(pid)
    return found


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def kill_stale(arg: str, stop_signal: int, grace: float) -> None:
    """Stop servers left over from an earlier run that used the same data folder."""
    stale = pids_with_arg(arg)
    if not stale:
        return
    log(f"stopping leftover processes {stale} that use {arg}")
    signal_all(stale, stop_signal)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in stale):
        time.sleep(0.1)
    signal_all([pid for pid in stale if pid_alive(pid)], signal.SIGKILL)


def tail(path: Path, lines: int = 40, offset: int = 0) -> str:
    """The last lines of a log, after its first ERROR/FATAL lines (the cause, usually)."""
    try:
        with open(path, "rb") as file:
            file.seek(offset)
            text = file.read().decode(errors="replace").splitlines()
    except OSError:
        return f"({path} does not exist)"
    errors: list[str] = []  # each ERROR/FATAL line and the exception message under it
    for i, line in enumerate(text):
        if len(errors) < 20 and re.search(r"\b(ERROR|FATAL)\b", line):
            errors.append(line)
            following = text[i + 1] if i + 1 < len(text) else ""
            if following and not following.startswith("["):
                errors.append(following)
    first_errors = f"--- {path} (first errors) ---\n" + "\n".join(errors) + "\n" if errors else ""
    return f"{first_errors}--- {path} (last {lines} lines) ---\n" + "\n".join(text[-lines:])
