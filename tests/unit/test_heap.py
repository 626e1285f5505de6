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


def test_a_service_settles_its_heap_once_its_lifespan_has_started() -> None:
    out = _run(
        """
        import asyncio, contextlib, gc
        from fastapi import FastAPI
        import shared.infra.http as http
        from shared.infra.settings import CommonSettings

        seen = {}

        @contextlib.asynccontextmanager
        async def lifespan(app):
            seen["starting"] = gc.get_freeze_count()
            yield

        served = []
        http.serve = lambda app, **kwargs: served.append(app)
        build = lambda settings: FastAPI(lifespan=lifespan)
        http.run_service("probe", CommonSettings, build, port=lambda settings: 1)
        app = served[0]

        async def run():
            async with app.router.lifespan_context(app):
                seen["started"] = gc.get_freeze_count()

        asyncio.run(run())
        print(seen["starting"], seen["started"], *gc.get_threshold())
        """
    )
    starting, started, *thresholds = (int(n) for n in out.split())
    assert starting == 0  # nothing frozen while the service starts
    assert started > 10_000  # then everything built, start-up included
    assert tuple(thresholds) == GC_THRESHOLDS


@pytest.mark.parametrize("service", ["intake", "classifier", "metering", "billing", "console"])
def test_every_service_runs_with_the_settling_lifespan(service: str) -> None:
    out = _run(
        f"""
        import shared.infra.http as http
        served = []
        http.serve = lambda app, **kwargs: served.append(app)
        from services.{service}.app import main
        main()
        print(served[0].router.lifespan_context.__qualname__)
        """
    )
    assert out.startswith("_settling_once_started")
