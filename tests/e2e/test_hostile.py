"""Hostile input against the running system (issue 10, SPEC §2, §3, §12, §13).

Every case ends one of two ways, as the SPEC says: a 4xx that names the problem with nothing
published, or a dead letter with its error and origin while the partition keeps flowing (a valid
item sent after it, with the same key and so in the same partition, is counted) — and a close for
another client still succeeds. The services run as processes on a real Kafka broker and
PostgreSQL; poison records are written straight to the topics, as a broken producer would.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from shared.contracts.topics import AGREEMENTS, WORKITEMS_CLASSIFIED, WORKITEMS_COMPLETED, dlq
from shared.domain.periods import period_bounds
from tests.e2e.conftest import Api
from tests.e2e.test_billing_rules import agreement, care
from tests.e2e.test_pipeline import last_month

#: Intake gives up on a body that has not arrived after this long (a stalled sender).
BODY_TIMEOUT_SECONDS = 2


@pytest.fixture(scope="module")
def stack_options() -> dict[str, Any]:
    return {
        "env": {
            "TIERLINE_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT_SECONDS),
            "BILLING_AUTO_CLOSE": "false",
        },
        "instances": {},
    }


# --- helpers ---------------------------------------------------------------------------------


def item(client: str, item_id: str, **fields: Any) -> dict[str, Any]:
    start, end = period_bounds(last_month(), "UTC")
    return {
        "id": item_id,
        "client_id": client,
        "source": "jira",
        "completed_at": (start + (end - start) / 2).isoformat(),
        "queue": "Care",
        **fields,
    }


async def post_raw(
    api: Api, body: bytes, *, content_type: str = "application/json"
) -> httpx.Response:
    return await api.http.post(
        f"{api.stack.url('intake')}/v1/work-items",
        content=body,
        headers={**api.intake, "Content-Type": content_type},
    )


async def metered_items(api: Api, client: str) -> int:
    """Items counted for `client` in last month, once every item accepted so far is metered."""
    barrier = await api.close("2000-01", "barrier-only")  # waits until the pipeline has drained
    assert barrier.status_code == 200, barrier.text
    usage = await api.usage(client, last_month().key)
    count: int = usage["items"] + usage["unclassified_items"]
    return count


def names(response: httpx.Response, *words: str) -> None:
    """A 4xx whose body names every one of `words` (a field, a parameter, a rule)."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    for word in words:
        assert word in response.text, (word, response.text)


async def send(topic: str, bootstrap: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def dead_letters(bootstrap: str, topic: str, values: set[bytes]) -> dict[bytes, Any]:
    """The dead letters of `topic` whose value is one of `values`, with their headers."""
    consumer = AIOKafkaConsumer(
        dlq(topic),
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_bytes=8 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    await consumer.start()
    found: dict[bytes, Any] = {}
    try:
        async with asyncio.timeout(30):
            while not values <= found.keys():
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        if record.value in values:
                            found[record.value] = {k: v.decode() for k, v in record.headers}
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return found


async def another_client_closes(api: Api, run_id: str, tag: str) -> None:
    """A client untouched by the hostile input gets its invoice, and it is the right one."""
    client = f"bystander-{tag}-{run_id}"
    response = await api.put_agreement(agreement(client, "USD", "UTC", ("100.00", "200.00")))
    assert response.status_code == 200, response.text
    await api.post_items(care(client, "b", 3, *period_bounds(last_month(), "UTC")))
    closed = await api.close(last_month().key, client)
    assert closed.status_code == 200, closed.text
    [invoice] = closed.json()["invoices"]
    assert (invoice["usage"]["items"], invoice["total"]) == (3, "100.00")


# --- intake: 4xx naming the problem, nothing published ---------------------------------------


@pytest.mark.parametrize(
    ("case", "field", "bad"),
    [
        ("nul-in-id", "id", {"id": "T-\u0000-1"}),
        ("nul-in-title", "title", {"title": "a\u0000b"}),
        ("nul-in-tag", "tags", {"tags": ["ok", "\u0000"]}),
        ("nul-in-attribute-key", "attributes", {"attributes": {"a\u0000": "x"}}),
        ("year-0001", "completed_at", {"completed_at": "0001-01-01T00:00:00+14:00"}),
        ("year-2100-in-utc", "completed_at", {"completed_at": "2099-12-31T23:00:00-05:00"}),
        ("year-1999", "completed_at", {"completed_at": "1999-12-31T23:59:59Z"}),
        ("attribute-beyond-2^53", "attributes", {"attributes": {"n": 2**53 + 1}}),
    ],
)
async def test_an_invalid_item_is_a_422_naming_its_field_and_its_siblings_are_not_published(
    api: Api, run_id: str, case: str, field: str, bad: dict[str, Any]
) -> None:
    client = f"bad-{case.replace('^', '')}-{run_id}"
    good = item(client, "good")
    response = await api.http.post(
        f"{api.stack.url('intake')}/v1/work-items",
        json=[good, {**item(client, "bad"), **bad}],
        headers=api.intake,
    )
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert errors and all(e["index"] == 1 and e["loc"][0] == field for e in errors), errors
    assert await metered_items(api, client) == 0  # all or nothing: the valid sibling too


async def test_lone_surrogates_and_invalid_utf8_are_422_saying_where(api: Api, run_id: str) -> None:
    client = f"utf-{run_id}"
    surrogate = json.dumps(item(client, "s")).replace('"Care"', '"Ca\\ud800re"').encode()
    response = await post_raw(api, surrogate)
    assert response.status_code == 422, response.text
    message = response.json()["errors"][0]["msg"]
    assert "surrogate" in message and "column" in message, message

    broken = json.dumps(item(client, "u")).encode().replace(b"Care", b"Ca\xff\xfere")
    response = await post_raw(api, broken)
    assert response.status_code == 422, response.text
    message = response.json()["errors"][0]["msg"].lower()
    assert "utf-8" in message and any(w in message for w in ("byte", "column", "line")), message
    assert await metered_items(api, client) == 0


async def test_malformed_bodies_are_422_never_5xx(api: Api, run_id: str) -> None:
    client = f"shape-{run_id}"
    cases = {
        "deep-array": b"[" * 10_000,
        "deep-object": b'{"a":' * 5_000,
        "truncated": json.dumps([item(client, "t")]).encode()[:-5],
        "not-an-object": b"[1, 2, 3]",
        "empty": b"",
    }
    for case, body in cases.items():
        response = await post_raw(api, body)
        assert response.status_code == 422, (case, response.status_code, response.text)
    ndjson = b"\n".join(
        [
            json.dumps(item(client, "n1")).encode(),
            b"{not json",
            json.dumps(item(client, "n2")).encode(),
        ]
    )
    response = await post_raw(api, ndjson, content_type="application/x-ndjson")
    assert response.status_code == 422, response.text
    assert [e["index"] for e in response.json()["errors"]] == [1]
    assert await metered_items(api, client) == 0


async def test_an_item_kafka_could_not_carry_is_413_and_the_partition_still_takes_writes(
    api: Api, run_id: str
) -> None:
    client = f"huge-{run_id}"
    # 1.2 MB of attributes: more than a Kafka record holds. Once, an item like this answered
    # 503 and then wedged its partition's producer: every later request for it failed too.
    huge = item(client, "huge", attributes={"z" * 1_200_000: "y"})
    for _ in range(2):  # a retry gets the same answer: it can never succeed
        response = await api.http.post(
            f"{api.stack.url('intake')}/v1/work-items",
            json=[item(client, "sibling"), huge],
            headers=api.intake,
        )
        assert response.status_code in (413, 422), response.text  # never 503
        assert "1" in response.text
    # the same key, so the same partition: it takes writes as before
    assert await api.post_items([item(client, "after")]) == 1
    assert await metered_items(api, client) == 1


async def raw_request(base: str, request_line: str, headers: dict[str, str], body: bytes) -> bytes:
    """Send a request's head and the first bytes of its body, then read the status line: how a
    stalled or oversized upload looks to the server."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        head = "".join(f"{name}: {value}\r\n" for name, value in {"Host": host, **headers}.items())
        writer.write(f"{request_line} HTTP/1.1\r\n{head}\r\n".encode() + body)
        await writer.drain()
        async with asyncio.timeout(BODY_TIMEOUT_SECONDS * 10):
            return await reader.readline()
    finally:
        writer.close()


async def test_a_stalled_body_is_given_up_with_a_408(api: Api) -> None:
    status_line = await raw_request(
        api.stack.url("intake"),
        "POST /v1/work-items",
        {**api.intake, "Content-Type": "application/json", "Content-Length": "1000"},
        b'[{"id": "',
    )
    assert int(status_line.split()[1]) == 408, status_line


# --- agreements: refused at the PUT, naming the field -----------------------------------------


def with_rules(client: str, *rules: dict[str, Any]) -> dict[str, Any]:
    body = agreement(client, "USD", "UTC", ("100.00", "200.00"))
    body["classification"]["rules"] = [*rules, *body["classification"]["rules"]]
    return body


def rule(rule_id: str, when: dict[str, Any]) -> dict[str, Any]:
    return {"id": rule_id, "when": when, "then": {"service_line": "hr", "complexity": "complex"}}


async def test_agreements_out_of_bounds_are_422_naming_the_field(api: Api, run_id: str) -> None:
    client = f"bounds-{run_id}"
    base = agreement(client, "USD", "UTC", ("100.00", "200.00"))

    def pricing(**changes: Any) -> dict[str, Any]:
        return {**base, "pricing": {**base["pricing"], **changes}}

    weights = base["pricing"]["weights"]
    cases: list[tuple[str, bytes | dict[str, Any], str]] = [
        ("a 13-byte weight of 2 MB", pricing(weights={**weights, "basic": "1e2000000"}), "basic"),
        ("exponent as a number", b'{"x": 1e2000000}', ""),
        ("over 10^12", pricing(weights={**weights, "basic": "1000000000001"}), "basic"),
        ("7 decimals", pricing(weights={**weights, "standard": "1.0000001"}), "standard"),
        ("fee over 10^12", pricing(overage_rate="1000000000000.01"), "overage_rate"),
        ("NUL in the name", {**base, "name": "ACME\u0000"}, "name"),
        ("NUL in a rule id", with_rules(client, rule("r\u0000", {})), "id"),
        (
            "backreference",
            with_rules(client, rule("backref", {"title": {"regex": r"(a)\1"}})),
            "backref",
        ),
        ("lookahead", with_rules(client, rule("ahead", {"title": {"regex": "a(?=b)"}})), "ahead"),
        (
            "long pattern",
            with_rules(client, rule("long", {"title": {"regex": "a" * 1001}})),
            "long",
        ),
        ("501 rules", with_rules(client, *(rule(f"r{n}", {}) for n in range(501))), "rules"),
        ("deep JSON", b"[" * 10_000, ""),
    ]
    for case, body, word in cases:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = await api.http.put(
            f"{api.stack.url('billing')}/v1/agreements/{client}",
            content=content,
            headers={**api.admin, "Content-Type": "application/json"},
        )
        assert response.status_code == 422, (case, response.status_code, response.text)
        if word:
            names(response, word)
    deep_yaml = ("a: " + "[" * 5_000 + "]" * 5_000).encode()  # 10 KB
    response = await api.http.put(
        f"{api.stack.url('billing')}/v1/agreements/{client}",
        content=deep_yaml,
        headers={**api.admin, "Content-Type": "application/yaml"},
    )
    assert response.status_code == 422, response.text
    status_line = await raw_request(
        api.stack.url("billing"),
        f"PUT /v1/agreements/{client}",
        {**api.admin, "Content-Type": "application/json", "Content-Length": str(1024 * 1024 + 1)},
        b" " * 1024,
    )
    assert int(status_line.split()[1]) == 413, status_line  # answered before the body is read
    # nothing of it was stored or published
    assert (
        await api.http.get(f"{api.stack.url('billing')}/v1/agreements/{client}", headers=api.admin)
    ).status_code == 404
    await another_client_closes(api, run_id, "bounds")


async def test_a_catastrophic_backtracking_pattern_runs_in_linear_time(
    api: Api, run_id: str
) -> None:
    """`(a+)+$` once stopped the classifier on a 41-character title. RE2 accepts and runs it."""
    client = f"redos-{run_id}"
    body = with_rules(client, rule("redos", {"title": {"regex": "(a+)+$"}}))
    response = await api.put_agreement(body)
    assert response.status_code == 200, response.text
    titles = ["a" * 40 + "!", "a" * 499 + "!", "a" * 500]
    items = [item(client, f"r{n}", title=title) for n, title in enumerate(titles)]
    assert await api.post_items(items) == 3
    assert await metered_items(api, client) == 3
    usage = await api.usage(client, last_month().key)
    classes = {(c["service_line"], c["complexity"]): c["items"] for c in usage["by_class"]}
    assert classes == {("hr", "complex"): 1, ("customer_support", "basic"): 2}
    await another_client_closes(api, run_id, "redos")


# --- HTTP parameters: 4xx, never 5xx ----------------------------------------------------------


async def test_malformed_paths_and_queries_are_4xx_naming_the_parameter(api: Api) -> None:
    billing, metering = api.stack.url("billing"), api.stack.url("metering")
    cases = [
        (f"{billing}/v1/agreements/%00", None, "client_id"),
        (f"{billing}/v1/agreements/a%00b", None, "client_id"),
        (f"{billing}/v1/invoices", {"client_id": "\u0000"}, "client_id"),
        (f"{billing}/v1/invoices", {"period": "9999-12"}, "period"),
        (f"{billing}/v1/forecast/a%00", None, "client_id"),
        (f"{billing}/v1/forecast/acme", {"period": "9999-12"}, "period"),
        (f"{billing}/v1/recommendations/%00", None, "client_id"),
        (f"{metering}/v1/usage/acme", {"period": "9999-12"}, "period"),
        (f"{metering}/v1/usage/acme", {"period": "1999-12"}, "period"),
        (f"{metering}/v1/usage/%00", {"period": "2026-10"}, "client_id"),
        (f"{metering}/v1/usage/acme", {"period": "\u0000"}, "period"),
    ]
    for url, params, word in cases:
        response = await api.http.get(url, params=params, headers=api.admin)
        names(response, word)
    response = await api.http.get(f"{billing}/v1/invoices/%00", headers=api.admin)
    assert response.status_code in (404, 422), response.text
    for period in ("9999-12", "0001-01", "2100-01"):
        response = await api.close(period)
        assert response.status_code == 422, (period, response.text)
        names(response, "period")


# --- poison records on Kafka: dead-lettered, the partition keeps flowing ----------------------


def classified(client: str, item_id: str, **fields: Any) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        **item(client, item_id),
        "received_at": now,
        "key_source": "jira",
        "service_line": "customer_support",
        "complexity": "basic",
        "rule_id": "care",
        "agreement_version": 1,
        **fields,
    }


async def test_poison_classified_records_are_dead_lettered_and_valid_ones_counted_once(
    api: Api, run_id: str
) -> None:
    client = f"poison-{run_id}"
    response = await api.put_agreement(agreement(client, "USD", "UTC", ("100.00", "200.00")))
    assert response.status_code == 200, response.text
    poison = {
        "nul-id": classified(client, "p\u0000"),
        "year-0001": classified(client, "p1", completed_at="0001-01-01T00:00:00+14:00"),
        "version-3e9": classified(client, "p2", agreement_version=3_000_000_000),
        "unknown-line": classified(client, "p3", service_line="astrology"),
        "unknown-complexity": classified(client, "p4", complexity="epic"),
    }
    values = {case: json.dumps(record).encode() for case, record in poison.items()}
    garbage = f"garbage {run_id}".encode()
    key = client.encode()
    valid = [json.dumps(classified(client, f"v{n}")).encode() for n in range(3)]
    # valid, poison and valid again, one key: one partition, most likely one batch
    await send(
        WORKITEMS_CLASSIFIED,
        api.stack.kafka_bootstrap,
        [(key, valid[0]), *((key, v) for v in values.values()), (key, garbage), (key, valid[1])],
    )
    await send(WORKITEMS_CLASSIFIED, api.stack.kafka_bootstrap, [(key, valid[2]), (key, valid[0])])
    assert await metered_items(api, client) == 3  # each valid item once, the copy not again

    dead = await dead_letters(
        api.stack.kafka_bootstrap, WORKITEMS_CLASSIFIED, {*values.values(), garbage}
    )
    assert dead.keys() == {*values.values(), garbage}
    for headers in dead.values():
        assert headers["origin_topic"] == WORKITEMS_CLASSIFIED
        assert headers["origin_partition"].isdigit() and headers["origin_offset"].isdigit()
        assert headers["error"]
    usage = await api.usage(client, last_month().key)
    assert [(c["service_line"], c["items"]) for c in usage["by_class"]] == [("customer_support", 3)]
    await another_client_closes(api, run_id, "poison")


async def test_a_completed_record_whose_classified_copy_kafka_refuses_is_dead_lettered(
    api: Api, run_id: str
) -> None:
    """An item just under the broker's limit: its classified copy is a little larger, and the
    classifier once retried it once a second forever."""
    client = f"edge-{run_id}"
    record = {
        **item(client, "edge"),
        "received_at": datetime.now(UTC).isoformat(),
        "key_source": "jira",
        "attributes": {"a": "x"},
    }
    # 1,048,400 bytes: the broker (message.max.bytes 1,048,588) takes it, but not its copy
    pad = 1_048_400 - len(json.dumps(record).encode())
    record["attributes"] = {"a" * (1 + pad): "x"}
    value = json.dumps(record).encode()
    assert len(value) == 1_048_400
    key = client.encode()
    after = json.dumps(
        {**item(client, "after"), "received_at": datetime.now(UTC).isoformat(), "key_source": "j"}
    ).encode()
    await send(WORKITEMS_COMPLETED, api.stack.kafka_bootstrap, [(key, value), (key, after)])
    assert await metered_items(api, client) == 1  # the one after it
    dead = await dead_letters(api.stack.kafka_bootstrap, WORKITEMS_COMPLETED, {value})
    assert dead.keys() == {value}
    assert dead[value]["origin_topic"] == WORKITEMS_COMPLETED


async def test_bad_agreement_records_are_dead_lettered_and_never_applied(
    api: Api, run_id: str
) -> None:
    client, other = f"victim-{run_id}", f"forger-{run_id}"
    real = agreement(client, "USD", "UTC", ("100.00", "200.00"))
    response = await api.put_agreement(real)
    assert response.status_code == 200, response.text
    # Under `client`'s key, a body naming another client, with a higher version and a default
    # that would put every item in hr/complex. Applied, it would beat every real version.
    forged = {**response.json(), "client_id": other, "version": 99}
    forged["classification"] = {
        "rules": [],
        "default": {"service_line": "hr", "complexity": "complex"},
    }
    mismatched = json.dumps(forged).encode()
    garbage = f"not an agreement {run_id}".encode()
    await send(
        AGREEMENTS,
        api.stack.kafka_bootstrap,
        [(client.encode(), mismatched), (client.encode(), garbage)],
    )
    # published after the bad ones: the views must have moved past them
    response = await api.put_agreement(real)
    assert response.status_code == 200 and response.json()["version"] == 2, response.text
    assert await api.post_items([item(client, "i1"), item(client, "i2")]) == 2
    assert await metered_items(api, client) == 2
    usage = await api.usage(client, last_month().key)
    assert [(c["service_line"], c["complexity"]) for c in usage["by_class"]] == [
        ("customer_support", "basic")
    ]
    dead = await dead_letters(api.stack.kafka_bootstrap, AGREEMENTS, {mismatched, garbage})
    assert dead.keys() == {mismatched, garbage}
    assert all(h["origin_topic"] == AGREEMENTS and h["error"] for h in dead.values())
    await another_client_closes(api, run_id, "agreements")
