"""The console's HTTP side: the page (static, no key needed to load it) and the JSON it polls
(admin key), read through `Page`, which the lifespan sets once the pool exists."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Final

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse

from services.console.business import CachedOverview
from services.console.documents import KafkaOverview, Overview
from services.console.watch import KafkaWatch
from shared.infra.http import AdminCaller, state_of

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"


@dataclass(frozen=True)
class Page:
    """What the page's JSON is read from."""

    watch: KafkaWatch
    business: CachedOverview
    #: The topics the page shows.
    topics: Sequence[str]
    #: How often the page polls (it shows it).
    poll_seconds: float


PageDep = Annotated[Page, Depends(state_of(Page))]
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
        "projected tier, its service levels (attainment against target, the credit a miss puts "
        "at stake) and its commitment's contract year (committed spend against the annual "
        "minimum), the recent invoices with their lines, and the review queues: each client's "
        "unclassified items of its open and its last closed period."
    ),
)
async def overview(_: AdminCaller, shown: PageDep) -> Overview:
    now = datetime.now(UTC)
    business = await shown.business.get(now)
    return Overview(
        generated_at=now.isoformat(timespec="seconds"),
        poll_seconds=shown.poll_seconds,
        kafka=shown.watch.overview(shown.topics),
        clients=business.clients,
        usage=business.usage,
        invoices=business.invoices,
        review_queue=business.review_queue,
    )


@router.get("/api/kafka", summary="Topics, consumer lag and dead letters only")
async def kafka(_: AdminCaller, shown: PageDep) -> KafkaOverview:
    return shown.watch.overview(shown.topics)
