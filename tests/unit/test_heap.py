"""The collector's settings a service runs with (`shared.infra.heap`), each checked in a fresh
interpreter: they are process-wide, and the test process must keep its own."""

import os
import subprocess
import sys
import textwrap

import pytest

from shared.infra.heap import GC_THRESHOLDS

#: Enough configuration for a service to build its app (nothing is reached: it never serves).
ENV = {
    "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/postgres",
    "TIERLINE_ADMIN_KEY": "admin-key-0123456789",
    "TIERLINE_INTAKE_KEYS": "zendesk=k1",
}


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_settled_heap_freezes_what_was_built_and_collects_the_young_less_often() -> None:
    out = _run(
        """
        import gc
        import services.metering.app
        from shared.infra.heap import settle_heap
        before = gc.get_freeze_count()
        settle_heap()
        print(before, gc.get_freeze_count(), *gc.get_threshold())
        """
    )
    before, frozen, *thresholds = (int(n) for n in out.split())
    assert before == 0
    assert frozen > 10_000  # the modules and their objects, no longer traversed
    assert tuple(thresholds) == GC_THRESHOLDS


@pytest.mark.parametrize("service", ["intake", "classifier", "metering", "billing", "console"])
def test_every_service_settles_its_heap_before_it_serves(service: str) -> None:
    out = _run(
        f"""
        import gc
        import shared.infra.http as http
        calls = []
        http.serve = lambda app, **kwargs: calls.append((gc.get_freeze_count(), gc.get_threshold()))
        from services.{service}.app import main
        main()
        print(calls[0][0], *calls[0][1])
        """
    )
    frozen, *thresholds = (int(n) for n in out.split())
    assert frozen > 10_000
    assert tuple(thresholds) == GC_THRESHOLDS
