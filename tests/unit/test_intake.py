"""Intake's HTTP contract (SPEC §2), with Kafka replaced by a recorder or a failure.

The route is the real one; only `send_all` — the call that waits for Kafka's acks — is faked,
so these tests pin the status codes and error shapes. The real broker path is in tests/e2e.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError

from services.intake import api as intake_api
from services.intake.app import IntakeSettings, create_app
from services.intake.parsing import MAX_ITEMS

ADMIN = "admin-key-0123456789abcdef"
KEY = "zendesk-key-1"


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bytes]] = []
        self.fail = False

    async def __call__(self, producer: Any, messages: Iterable[tuple[str, bytes, bytes]]) -> int:
        batch = list(messages)
        if self.fail:
            raise KafkaTimeoutError()
        self.messages += batch
        return len(batch)


@pytest.fixture
def kafka(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(intake_api, "send_all", recorder)
    return recorder


@pytest.fixture
async def client(kafka: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    settings = IntakeSettings(
        kafka_bootstrap_servers="127.0.0.1:1",
        tierline_admin_key=ADMIN,
        tierline_intake_keys=f"zendesk={KEY},jira=jira-key-2",
    )
    transport = httpx.ASGITransport(app=create_app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as http:
        yield http


def item(**fields: Any) -> dict[str, Any]:
    base = {
        "id": "t-1",
        "client_id": "acme",
        "source": "zendesk",
        "completed_at": datetime.now(UTC).isoformat(),
    }
    return {**base, **fields}


async def post(
    client: httpx.AsyncClient,
    body: Any,
    *,
    key: str | None = KEY,
    content_type: str = "application/json",
) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"content-type": content_type}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    return await client.post("/v1/work-items", content=content, headers=headers)


async def test_single_object_is_published_keyed_by_client(
    client: httpx.AsyncClient, kafka: Recorder
) -> None:
    response = await post(client, item(tags=["a"], units=3, attributes={"vip": True}))
    assert (response.status_code, response.json()) == (202, {"accepted": 1})
    [(topic, key, value)] = kafka.messages
    assert (topic, key) == ("workitems.completed", b"acme")
    published = orjson.loads(value)
    assert published["key_source"] == "zendesk"
    assert published["units"] == 3 and published["attributes"] == {"vip": True}
    assert "queue" not in published  # optional fields left out stay out


async def test_array_counts_duplicates(client: httpx.AsyncClient, kafka: Recorder) -> None:
    response = await post(client, [item(), item(), item(id="t-2")])
    assert response.json() == {"accepted": 3}
    assert len(kafka.messages) == 3


async def test_ndjson_indexes_non_blank_lines(client: httpx.AsyncClient, kafka: Recorder) -> None:
    lines = b"\n".join([orjson.dumps(item()), b"", b"   ", orjson.dumps(item(units=0)), b"{nope"])
    response = await post(client, lines, content_type="application/x-ndjson")
    assert response.status_code == 422
    assert [(e["index"], e["loc"]) for e in response.json()["errors"]] == [(1, ["units"]), (2, [])]
    assert kafka.messages == []


async def test_every_invalid_item_is_listed_and_nothing_published(
    client: httpx.AsyncClient, kafka: Recorder
) -> None:
    body = [
        item(),
        item(units="5"),
        item(queue=None),
        item(client_id="ACME"),
        item(tags=["x"] * 51),
        item(completed_at="2026-10-01T09:00:00"),
        item(extra=1),
        item(handling_seconds=True),
        item(completed_at=(datetime.now(UTC) + timedelta(minutes=6)).isoformat()),
        7,
    ]
    response = await post(client, body)
    assert response.status_code == 422
    found = [(e["index"], e["loc"]) for e in response.json()["errors"]]
    assert found == [
        (1, ["units"]),
        (2, ["queue"]),
        (3, ["client_id"]),
        (4, ["tags"]),
        (5, ["completed_at"]),
        (6, ["extra"]),
        (7, ["handling_seconds"]),
        (8, ["completed_at"]),
        (9, []),
    ]
    assert all(e["msg"] for e in response.json()["errors"])
    assert kafka.messages == []


async def test_a_little_in_the_future_is_fine(client: httpx.AsyncClient) -> None:
    soon = (datetime.now(UTC) + timedelta(minutes=4)).isoformat()
    assert (await post(client, item(completed_at=soon))).status_code == 202


async def test_too_many_items_is_413(client: httpx.AsyncClient, kafka: Recorder) -> None:
    response = await post(client, [item(id=str(n)) for n in range(MAX_ITEMS + 1)])
    assert response.status_code == 413
    assert kafka.messages == []


async def test_too_many_bytes_is_413(client: httpx.AsyncClient) -> None:
    response = await post(client, b" " * (10 * 1024 * 1024 + 1))
    assert response.status_code == 413


async def test_other_content_type_is_415(client: httpx.AsyncClient) -> None:
    assert (await post(client, item(), content_type="text/plain")).status_code == 415


@pytest.mark.parametrize("key", [None, "unknown"])
async def test_no_key_or_unknown_key_is_401(client: httpx.AsyncClient, key: str | None) -> None:
    assert (await post(client, item(), key=key)).status_code == 401


async def test_admin_key_is_not_good_for_intake(client: httpx.AsyncClient) -> None:
    assert (await post(client, item(), key=ADMIN)).status_code == 403


async def test_kafka_unavailable_is_503_with_retry_after(
    client: httpx.AsyncClient, kafka: Recorder
) -> None:
    kafka.fail = True
    response = await post(client, [item(), item(id="t-2")])
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0


async def test_invalid_json_is_422(client: httpx.AsyncClient) -> None:
    response = await post(client, b"{not json")
    assert response.status_code == 422
    assert response.json()["errors"][0]["index"] == 0
