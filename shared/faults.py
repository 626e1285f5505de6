"""Named crash points for fault-injection tests: inert unless TIERLINE_CRASH_AT names one.

A crash point dies the way SIGKILL would (no cleanup, no flush), at a moment a random kill
would rarely hit: between a database commit and the publish or offset commit that follows it.
"""

from __future__ import annotations

import os

CRASH_VARIABLE = "TIERLINE_CRASH_AT"


def crash_point(name: str) -> None:
    if os.environ.get(CRASH_VARIABLE) == name:
        os._exit(137)
