"""The client page's pure parts (the tier ladder, the overview, the review queues) and its JSON
routes: who may read what (SPEC §2, §13 "Keys"), and metering down or slow is a 503."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.console.app import ConsoleSettings, create_app
from services.console.client import ClientReads
from services.console.client_api import client_reads_of, metering_of
from services.console.client_view import client_overview, tier_ladder
from services.console.documents import ClientOverview
from services.console.metering import MeteringItems
from services.console.usage import OpenPeriod, review_queues
from shared.contracts.invoice import TierChoice
from shared.domain.agreement.agreement import Agreement, parse_agreement
from shared.domain.periods import Period, period_bounds
from shared.domain.rating import decide_tier
from shared.domain.usage import ClassCount, billable_usage
from tests.spec_example import spec_agreement

ACME = parse_agreement(spec_agreement("acme")).with_version(3)
#: SPEC §6 example 1: 600 basic customer_support + 150 standard data_entry → W = 900.
EXAMPLE_1 = [
    ClassCount("customer_support", "basic", 600, 600, 0, 0),
    ClassCount("data_entry", "standard", 150, 150, 0, 0),
]


def ladder_of(counts: list[ClassCount], tier: TierChoice | None = None) -> dict[str, Any]:
    """The ladder of acme's agreement for `counts`; the period's tier is `tier` (billed), or
    the decision's (open)."""
    usage = billable_usage(counts)
    shown = tier or TierChoice.of(decide_tier(ACME.pricing, usage))
    return tier_ladder(ACME, usage, shown).model_dump(mode="json")


def marks(ladder: dict[str, Any]) -> list[tuple[str, bool, bool, bool, bool]]:
    return [
        (s["name"], s["volume"], s["scope"], s["covers"], s["current"]) for s in ladder["steps"]
    ]


# --- the tier ladder (SPEC §6 worked examples) --------------------------------------------------


def test_a_period_in_its_volume_tier_marks_it_volume_scope_and_current() -> None:
    ladder = ladder_of(EXAMPLE_1)
    assert (ladder["weighted_units"], ladder["tier"]) == (
        "900",
        {"name": "Essential", "reason": "volume"},
    )
    assert marks(ladder) == [
        ("Essential", True, True, True, True),
        ("Professional", False, False, True, False),
        ("Enterprise", False, False, True, False),
    ]
    assert ladder["steps"][0] == {
        "name": "Essential",
        "up_to": "1000",
        "fee": "10000.00",
        "volume": True,
        "scope": True,
        "covers": True,
        "current": True,
    }
    assert ladder["steps"][2]["fee"] == "90000.00"
    assert (ladder["beyond_volume"], ladder["out_of_scope"]) == ([], [])
    assert (ladder["mode"], ladder["min_items"]) == ("upgrade", 10)


def test_scope_lifts_the_tier_and_the_ladder_names_the_classes_that_did_it() -> None:
    """Example 3: + 12 complex accounting → W = 960, V = Essential, S = Enterprise."""
    counts = [*EXAMPLE_1, ClassCount("accounting", "complex", 12, 12, 0, 0)]
    ladder = ladder_of(counts)
    assert ladder["tier"] == {"name": "Enterprise", "reason": "scope"}
    assert ladder["weighted_units"] == "960"
    assert marks(ladder) == [
        ("Essential", True, False, False, False),
        ("Professional", False, False, False, False),
        ("Enterprise", False, True, True, True),
    ]
    assert ladder["beyond_volume"] == [
        {
            "service_line": "accounting",
            "complexity": "complex",
            "items": 12,
            "weighted_units": "60",
        }
    ]
    assert ladder["out_of_scope"] == []


def test_a_class_under_min_items_is_charged_out_of_scope_not_lifted() -> None:
    """Example 2: 3 complex accounting < min_items 10 → Essential, accounting/complex out of
    scope at 15 weighted units."""
    counts = [*EXAMPLE_1, ClassCount("accounting", "complex", 3, 3, 0, 0)]
    ladder = ladder_of(counts)
    assert ladder["tier"] == {"name": "Essential", "reason": "volume"}
    assert [s["current"] for s in ladder["steps"]] == [True, False, False]
    assert ladder["beyond_volume"] == []
    assert ladder["out_of_scope"] == [
        {"service_line": "accounting", "complexity": "complex", "items": 3, "weighted_units": "15"}
    ]


def test_a_closed_period_marks_the_tier_it_was_billed_at() -> None:
    """A reclassification moved the usage down after the close: the ladder shows W now and
    the volume/scope tiers now, and the billed tier as the current one (SPEC §13 "Notes")."""
    ladder = ladder_of(EXAMPLE_1, TierChoice(name="Enterprise", reason="scope"))
    assert marks(ladder) == [
        ("Essential", True, True, True, False),
        ("Professional", False, False, True, False),
        ("Enterprise", False, False, True, True),
    ]


# --- the overview -------------------------------------------------------------------------------


def overview(
    agreement: Agreement | None,
    period: Period,
    counts: list[ClassCount],
    closed: dict[str, TierChoice | None],
) -> dict[str, Any]:
    return client_overview(
        client_id="acme",
        agreement=agreement,
        period=period,
        open_period=Period(2026, 11),
        counts=counts,
        closed=closed,
        invoices=[],
        notes=[],
    ).model_dump(mode="json")


def test_the_overview_of_a_closed_period_is_metering_s_usage_with_the_billed_tier() -> None:
    billed = TierChoice(name="Professional", reason="scope")
    counts = [*EXAMPLE_1, ClassCount("unclassified", "none", 4, 4, 0, 0)]
    page = overview(ACME, Period(2026, 10), counts, {"2026-10": billed, "2026-09": None})
    usage = page["usage"]
    assert (usage["status"], usage["tier"], usage["items"], usage["unclassified_items"]) == (
        "closed",
        {"name": "Professional", "reason": "scope"},
        750,
        4,
    )
    assert usage["weighted_units"] == page["ladder"]["weighted_units"] == "900"
    assert [s["name"] for s in page["ladder"]["steps"] if s["current"]] == ["Professional"]
    assert (page["period"], page["open_period"]) == ("2026-10", "2026-11")
    assert page["periods"] == ["2026-11", "2026-10", "2026-09"]
    assert (page["name"], page["currency"], page["agreement_version"], page["timezone"]) == (
        ACME.name,
        "USD",
        3,
        "America/New_York",
    )


def test_without_an_agreement_there_are_counts_but_no_tier_and_no_ladder() -> None:
    page = overview(None, Period(2026, 11), EXAMPLE_1, {})
    assert (page["usage"]["items"], page["usage"]["tier"], page["ladder"]) == (750, None, None)
    assert (page["timezone"], page["periods"], page["usage"]["status"]) == (
        "UTC",
        ["2026-11"],
        "open",
    )


# --- the review queues --------------------------------------------------------------------------


def open_period(counts: list[ClassCount]) -> OpenPeriod:
    period = Period(2026, 11)
    return OpenPeriod(ACME, period, *period_bounds(period, "UTC"), counts)


def test_review_queues_hold_the_unclassified_items_of_the_open_and_last_closed_periods() -> None:
    odd = ClassCount("unclassified", "none", 11, 11, 0, 0)
    queues = review_queues(
        {
            "acme": open_period([*EXAMPLE_1, odd]),
            "beta": open_period(EXAMPLE_1),
            "gamma": open_period(EXAMPLE_1),
            "delta": open_period([ClassCount("unclassified", "none", 2, 2, 0, 0)]),
        },
        {
            "beta": ("2026-10", [ClassCount("unclassified", "none", 30, 30, 0, 0)]),
            "gamma": ("2026-10", EXAMPLE_1),
        },
        limit=10,
    )
    assert [q.model_dump() for q in queues] == [
        {
            "client_id": "beta",
            "period": "2026-11",
            "unclassified_items": 0,
            "closed_period": "2026-10",
            "closed_unclassified_items": 30,
        },
        {
            "client_id": "acme",
            "period": "2026-11",
            "unclassified_items": 11,
            "closed_period": None,
            "closed_unclassified_items": 0,
        },
        {
            "client_id": "delta",
            "period": "2026-11",
            "unclassified_items": 2,
            "closed_period": None,
            "closed_unclassified_items": 0,
        },
    ]
    assert len(review_queues({"acme": open_period([odd])}, {}, limit=0)) == 0


# --- the routes ---------------------------------------------------------------------------------

ADMIN, INTAKE = "admin-key-0123456789abc", "intake-key-0123456789"
KEYS = {"acme": "client-key-acme-0123456789", "beta": "client-key-beta-0123456789"}


def as_key(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass(frozen=True)
class FakeReads(ClientReads):
    """Answers the overview without a database; `error` makes it fail as an outage would."""

    pool: Any = None
    invoices_shown: int = 20
    asked: list[tuple[str, Period | None]] = field(default_factory=list)
    error: BaseException | None = None

    async def overview(
        self, client_id: str, period: Period | None, *, now: datetime
    ) -> ClientOverview:
        self.asked.append((client_id, period))
        if self.error is not None:
            raise self.error
        return client_overview(
            client_id=client_id,
            agreement=ACME,
            period=period or Period(2026, 11),
            open_period=Period(2026, 11),
            counts=EXAMPLE_1,
            closed={},
            invoices=[],
            notes=[],
        )


class FakeMetering:
    """Metering's side of the relay: records each request, answers with `answer`."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.requests: list[httpx.Request] = []
        self.answer = answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


def page_answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"items": [], "next_cursor": None})


def console_app() -> FastAPI:
    settings = ConsoleSettings(
        kafka_bootstrap_servers="127.0.0.1:1",
        database_url="postgresql://nobody@127.0.0.1:1/none",
        tierline_admin_key=ADMIN,
        tierline_intake_keys=f"jira={INTAKE}",
        tierline_client_keys=",".join(f"{c}={k}" for c, k in KEYS.items()),
    )
    return create_app(settings)


#: `await console(reads=..., metering=...)`: see the fixture.
Console = Callable[..., Any]


@pytest.fixture
async def console() -> AsyncIterator[Console]:
    """`await console(reads=..., metering=...)` → an HTTP client on the console's app with
    those in place of the lifespan's."""
    opened: list[tuple[httpx.AsyncClient, MeteringItems]] = []

    async def make(
        *, reads: ClientReads | None = None, metering: MeteringItems | None = None
    ) -> httpx.AsyncClient:
        app = console_app()
        fake_reads = reads or FakeReads()
        relay = metering or MeteringItems(
            "http://metering:8083/",
            timeout_seconds=1,
            transport=httpx.MockTransport(FakeMetering(page_answer)),
        )
        await relay.start()
        app.dependency_overrides[client_reads_of] = lambda: fake_reads
        app.dependency_overrides[metering_of] = lambda: relay
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console")
        opened.append((http, relay))
        return http

    yield make
    for http, relay in opened:
        await http.aclose()
        await relay.stop()


async def test_the_overview_reads_the_key_s_own_client(console: Console) -> None:
    reads = FakeReads()
    http = await console(reads=reads)
    own = await http.get("/api/client/overview", headers=as_key(KEYS["acme"]))
    assert own.status_code == 200, own.text
    assert own.json()["client_id"] == "acme"
    named = await http.get(
        "/api/client/overview",
        params={"client_id": "acme", "period": "2026-10"},
        headers=as_key(KEYS["acme"]),
    )
    assert named.status_code == 200
    assert reads.asked == [("acme", None), ("acme", Period(2026, 10))]


@pytest.mark.parametrize(
    ("key", "params", "status"),
    [
        (None, {}, 401),
        ("not-a-key-0123456789", {}, 401),
        (INTAKE, {}, 403),
        (KEYS["acme"], {"client_id": "beta"}, 403),
        (KEYS["acme"], {"client_id": "nobody-at-all"}, 403),
        (ADMIN, {}, 422),
        (ADMIN, {"client_id": "beta", "period": "2100-01"}, 422),
        (ADMIN, {"client_id": "Not A Client"}, 422),
    ],
)
async def test_the_overview_refuses_what_the_key_may_not_read(
    console: Console, key: str | None, params: dict[str, str], status: int
) -> None:
    reads = FakeReads()
    http = await console(reads=reads)
    answer = await http.get(
        "/api/client/overview", params=params, headers=as_key(key) if key else {}
    )
    assert answer.status_code == status, answer.text
    assert reads.asked == []
    if status == 422:
        names = {str(problem["loc"][-1]) for problem in answer.json()["detail"]}
        assert names & {"client_id", "period"}, answer.text


async def test_an_admin_key_names_the_client_to_see_what_it_sees(console: Console) -> None:
    http = await console()
    answer = await http.get(
        "/api/client/overview", params={"client_id": "beta"}, headers=as_key(ADMIN)
    )
    assert answer.status_code == 200
    assert answer.json()["client_id"] == "beta"


async def test_a_database_outage_is_a_503_with_retry_after(console: Console) -> None:
    http = await console(reads=FakeReads(error=OSError("connection refused")))
    answer = await http.get("/api/client/overview", headers=as_key(KEYS["acme"]))
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"


def relay_with(
    answer: Callable[[httpx.Request], httpx.Response],
) -> tuple[MeteringItems, FakeMetering]:
    fake = FakeMetering(answer)
    relay = MeteringItems(
        "http://metering:8083/", timeout_seconds=1, transport=httpx.MockTransport(fake)
    )
    return relay, fake


async def test_item_reads_are_forwarded_to_metering_with_the_caller_s_key(
    console: Console,
) -> None:
    relay, metering = relay_with(page_answer)
    http = await console(metering=relay)
    page = await http.get(
        "/api/items",
        params={"period": "2026-10", "status": "unclassified", "cursor": "abc", "limit": "25"},
        headers=as_key(KEYS["acme"]),
    )
    assert page.status_code == 200, page.text
    assert page.json() == {"items": [], "next_cursor": None}
    (sent,) = metering.requests
    assert sent.headers["Authorization"] == f"Bearer {KEYS['acme']}"
    assert sent.url.path == "/v1/items"
    assert dict(sent.url.params) == {
        "client_id": "acme",  # the key's own, named to metering, which checks it again
        "period": "2026-10",
        "limit": "25",
        "status": "unclassified",
        "cursor": "abc",
    }
    one = await http.get("/api/items/acme/T%2F1..x", headers=as_key(ADMIN))
    assert one.status_code == 200
    assert metering.requests[-1].url.raw_path == b"/v1/items/acme/T%2F1%2E%2Ex"
    assert metering.requests[-1].headers["Authorization"] == f"Bearer {ADMIN}"


async def test_metering_s_answers_about_the_request_are_relayed_as_they_are(
    console: Console,
) -> None:
    relay, _ = relay_with(lambda request: httpx.Response(404, json={"detail": "no item 'x'"}))
    http = await console(metering=relay)
    answer = await http.get("/api/items/acme/x", headers=as_key(KEYS["acme"]))
    assert (answer.status_code, answer.json()) == (404, {"detail": "no item 'x'"})


@pytest.mark.parametrize(
    ("key", "target", "status"),
    [
        (None, "/api/items?period=2026-10", 401),
        (INTAKE, "/api/items?period=2026-10", 403),
        (KEYS["acme"], "/api/items?period=2026-10&client_id=beta", 403),
        (KEYS["acme"], "/api/items/beta/x", 403),
        (KEYS["acme"], "/api/items/nobody/x", 403),
        (ADMIN, "/api/items?period=2026-10", 422),  # an admin key names the client
        (KEYS["acme"], "/api/items", 422),  # period is required
        (KEYS["acme"], "/api/items?period=2026-13", 422),
        (KEYS["acme"], "/api/items?period=2026-10&limit=1001", 422),
        (KEYS["acme"], "/api/items?period=2026-10&service_line=marketing", 422),
        (KEYS["acme"], "/api/items?period=2026-10&status=billed", 422),
    ],
)
async def test_item_reads_metering_never_sees(
    console: Console, key: str | None, target: str, status: int
) -> None:
    relay, metering = relay_with(page_answer)
    http = await console(metering=relay)
    answer = await http.get(target, headers=as_key(key) if key else {})
    assert answer.status_code == status, answer.text
    assert metering.requests == []


def raising(error: Exception) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        raise error

    return answer


@pytest.mark.parametrize(
    "answer",
    [
        raising(httpx.ConnectTimeout("timed out")),
        raising(httpx.ReadTimeout("timed out")),
        raising(httpx.ConnectError("connection refused")),
        lambda request: httpx.Response(500, text="Internal Server Error"),
        lambda request: httpx.Response(503, json={"detail": "starting"}),
        lambda request: httpx.Response(401, json={"detail": "unknown key"}),
    ],
    ids=["connect-timeout", "read-timeout", "refused", "500", "503", "401"],
)
async def test_metering_down_or_slow_is_a_503_with_retry_after(
    console: Console, answer: Callable[[httpx.Request], httpx.Response]
) -> None:
    relay, _ = relay_with(answer)
    http = await console(metering=relay)
    for target in ("/api/items?period=2026-10", "/api/items/acme/T-1"):
        got = await http.get(target, headers=as_key(KEYS["acme"]))
        assert got.status_code == 503, got.text
        assert got.headers["Retry-After"] == "5"
        assert "metering" in got.json()["detail"]


async def test_an_unreachable_metering_is_a_503(console: Console) -> None:
    """A real connection to a port nothing listens on."""
    http = await console(metering=MeteringItems("http://127.0.0.1:1", timeout_seconds=2))
    got = await http.get("/api/items?period=2026-10", headers=as_key(KEYS["acme"]))
    assert (got.status_code, got.headers["Retry-After"]) == (503, "5")


@pytest.mark.parametrize(
    "target",
    ["/api/overview", "/api/kafka", "/v1/dead-letters/workitems.completed"],
)
async def test_a_client_key_stays_403_on_every_operator_endpoint(
    console: Console, target: str
) -> None:
    http = await console()
    assert (await http.get(target, headers=as_key(KEYS["acme"]))).status_code == 403


async def test_the_client_page_is_served_without_a_key(console: Console) -> None:
    http = await console()
    page = await http.get("/client")
    assert page.status_code == 200
    assert "/static/client.js" in page.text and "/static/ui.js" in page.text
    assert (await http.get("/static/client.js")).status_code == 200


def test_every_answer_of_the_new_routes_is_documented() -> None:
    paths = console_app().openapi()["paths"]
    overview_doc = paths["/api/client/overview"]["get"]["responses"]
    assert {"200", "401", "403", "422", "503"} <= set(overview_doc)
    assert "Retry-After" in overview_doc["503"]["headers"]
    assert "ClientOverview" in json.dumps(overview_doc["200"])
    for path in ("/api/items", "/api/items/{client_id}/{item_id}"):
        responses = paths[path]["get"]["responses"]
        assert {"200", "401", "403", "422", "503"} <= set(responses), path
        assert "Retry-After" in responses["503"]["headers"]
    assert "404" in paths["/api/items/{client_id}/{item_id}"]["get"]["responses"]


def test_the_operator_overview_keeps_its_fields_and_adds_the_review_queue() -> None:
    schemas = console_app().openapi()["components"]["schemas"]
    fields = set(schemas["Overview"]["properties"])
    assert {"generated_at", "poll_seconds", "kafka", "clients", "usage", "invoices"} <= fields
    assert "review_queue" in fields
    assert set(schemas["ReviewQueue"]["properties"]) == {
        "client_id",
        "period",
        "unclassified_items",
        "closed_period",
        "closed_unclassified_items",
    }


def test_the_metering_url_is_checked_at_start() -> None:
    with pytest.raises(ValueError, match="console_metering_url"):
        ConsoleSettings(
            kafka_bootstrap_servers="127.0.0.1:1",
            database_url="postgresql://nobody@127.0.0.1:1/none",
            tierline_admin_key=ADMIN,
            tierline_intake_keys=f"jira={INTAKE}",
            console_metering_url="not a url",
        )


async def test_permission_is_decided_before_the_route_s_state_is_asked_for() -> None:
    """Before the lifespan has set the reads and the relay (503: starting), a key naming a
    client it may not read is already 403."""
    app = console_app()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://console"
    ) as http:
        mine = as_key(KEYS["acme"])
        for target in (
            "/api/client/overview?client_id=beta",
            "/api/items?period=2026-10&client_id=beta",
            "/api/items/beta/T-1",
        ):
            assert (await http.get(target, headers=mine)).status_code == 403, target
        starting = await http.get("/api/client/overview", headers=mine)
        assert (starting.status_code, starting.headers["Retry-After"]) == (503, "1")
