"""Named fault points for fault-injection tests: inert unless an environment variable names one.

A crash point (`TIERLINE_CRASH_AT`) dies the way SIGKILL would (no cleanup, no flush), at a moment
a random kill would rarely hit: between a database commit and the publish or offset commit that
follows it. A pause point (`TIERLINE_PAUSE_AT`) holds the first batch that reaches it for a few
seconds and says so on stderr, so a test knows a batch is in flight when it signals the process.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Final

CRASH_VARIABLE: Final = "TIERLINE_CRASH_AT"
PAUSE_VARIABLE: Final = "TIERLINE_PAUSE_AT"
PAUSE_SECONDS: Final = 3.0
PAUSED: Final = "tierline-fault: paused at"
RESUMED: Final = "tierline-fault: resumed at"

_paused: set[str] = set()


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_VARIABLE) == name:
        os._exit(137)


async def pause_point(name: str) -> None:
    """Once per process, hold the batch in flight here for PAUSE_SECONDS, saying when."""
    if os.environ.get(PAUSE_VARIABLE) != name or name in _paused:
        return
    _paused.add(name)
    print(f"{PAUSED} {name}", file=sys.stderr, flush=True)
    await asyncio.sleep(PAUSE_SECONDS)
    print(f"{RESUMED} {name}", file=sys.stderr, flush=True)
