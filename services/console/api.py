"""The console's HTTP side: the page (static, no key needed to load it) and the JSON it polls
(admin key)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from fastapi import APIRouter
from fastapi.responses import FileResponse

from services.console.business import CachedOverview
from services.console.watch import KafkaWatch
from shared.infra.http import AdminCaller

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"


def build_router(
    watch: KafkaWatch, business: CachedOverview, *, topics: Sequence[str], poll_seconds: float
) -> APIRouter:
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @router.get(
        "/api/overview",
        summary="Everything the operator page shows",
        description=(
            "Topics with message rates, consumer groups with lag per partition, dead-letter "
            "topics with their latest entries, every client's open period with its current and "
            "projected tier, and the recent invoices with their lines."
        ),
    )
    async def overview(_: AdminCaller) -> dict[str, Any]:
        now = datetime.now(UTC)
        return {
            "generated_at": now.isoformat(timespec="seconds"),
            "poll_seconds": poll_seconds,
            "kafka": watch.overview(topics),
            **await business.get(now),
        }

    @router.get("/api/kafka", summary="Topics, consumer lag and dead letters only")
    async def kafka(_: AdminCaller) -> dict[str, Any]:
        return watch.overview(topics)

    return router
