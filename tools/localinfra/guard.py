"""The guard: one server run as a child, stopped when asked or when the process that started it
goes away. Run as a script (``python -I -S guard.py ...``), so it imports the standard library
only.

* SIGTERM/SIGINT/SIGHUP to the guard: the server gets its own graceful stop signal and, after the
  grace period, SIGKILL.
* If the starting process dies without stopping it (SIGKILL, default SIGTERM, ``os._exit``), the
  guard sees EOF on its stdin, a pipe whose write end only that process holds, and stops the
  server the same way.
* If the guard itself is SIGKILLed, the kernel SIGKILLs the server: the guard sets
  ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` in the server's ``preexec_fn``.

Why a guard instead of setting PR_SET_PDEATHSIG on the server directly from the starting process:
the kernel sends that signal when the *thread* that forked the child exits, not the process, so a
server started from a worker thread (``LocalInfra`` starts both concurrently) would be killed as
soon as that thread finished; and ``preexec_fn`` is unsafe in a multi-threaded parent. The guard
is single-threaded and lives exactly as long as its server, so neither problem arises there.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import pwd
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def set_pdeathsig(sig: int) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent (thread) exits."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def user_ids(user: str) -> tuple[int, int]:
    """(uid, gid) of ``user``; LookupError if there is no such user."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise LookupError(f"user {user!r} does not exist") from None
    return entry.pw_uid, entry.pw_gid


def as_user(ids: tuple[int, int] | None) -> dict[str, Any]:
    """``subprocess`` arguments that run a command as (uid, gid) with no other groups."""
    if ids is None:
        return {}
    uid, gid = ids
    return {"user": uid, "group": gid, "extra_groups": []}


def main(argv: list[str]) -> int:
    """Run the command after ``--`` as a child until asked to stop; exit with its status."""
    parser = argparse.ArgumentParser(prog="localinfra guard")
    parser.add_argument("--stop-signal", type=int, default=int(signal.SIGTERM))
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--pidfile", type=Path, required=True)
    parser.add_argument("--user")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command: list[str] = args.command[1:] if args.command[:1] == ["--"] else args.command

    stop_requested = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, request_stop)

    guard_pid = os.getpid()

    def in_child() -> None:  # runs between fork and exec; the guard has a single thread
        set_pdeathsig(signal.SIGKILL)
        if os.getppid() != guard_pid:  # the guard died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    ids = user_ids(args.user) if args.user else None
    server = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, preexec_fn=in_child, **as_user(ids)
    )
    args.pidfile.write_text(f"{server.pid}\n")

    parent_gone = False
    deadline: float | None = None
    while True:
        status = server.poll()
        if status is not None:
            return status if status >= 0 else 128 - status
        if deadline is None and (stop_requested or parent_gone):
            server.send_signal(args.stop_signal)
            deadline = time.monotonic() + args.grace
        elif deadline is not None and time.monotonic() > deadline:
            server.kill()
            deadline = float("inf")
        if parent_gone:
            time.sleep(0.1)
        elif select.select([0], [], [], 0.2)[0] and not os.read(0, 1):
            parent_gone = True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
