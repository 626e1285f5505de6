"""`tierline items`: the key it uses, the records it counts while an export streams, and what
each command prints — against a fake metering (httpx.MockTransport)."""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path
from typing import Any

import httpx
import pytest

from tools.cli import main as tierline
from tools.items_cli import ApiError, Progress, RowCounter, add_items_commands, api_key, run

ADMIN = "admin-key-0123456789abcdef"
CSV_TEXT = (
    'client_id,id,source\r\nacme,T-1,"multi\nline, ""quoted"""\nacme,T-2,plain\n'
    'acme,"T-""3""\n",x\n'
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tierline")
    add_items_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["items", *argv, "--metering-url", "http://metering"])


def document(item_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "client_id": "acme",
        "id": item_id,
        "source": "jira",
        "completed_at": "2026-10-05T10:00:00.5Z",
        "opened_at": None,
        "received_at": "2026-10-05T10:00:01Z",
        "period": "2026-10",
        "late": False,
        "status": "classified",
        "service_line": "accounting",
        "complexity": "complex",
        "rule_id": "ap-invoices-large",
        "agreement_version": 3,
        "units": 1,
        "handling_seconds": None,
        "weighted_units": "5",
        "history": [],
        **changes,
    }


def test_the_admin_key_comes_first_then_a_client_key() -> None:
    assert api_key({"TIERLINE_ADMIN_KEY": f" {ADMIN} ,other", "TIERLINE_CLIENT_KEY": "c"}) == ADMIN
    assert api_key({"TIERLINE_CLIENT_KEY": " client-key "}) == "client-key"
    with pytest.raises(ApiError, match="TIERLINE_ADMIN_KEY"):
        api_key({})


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 1000])
def test_csv_records_are_counted_whatever_the_chunks_even_with_quoted_newlines(size: int) -> None:
    data = CSV_TEXT.encode()
    counter = RowCounter(csv=True)
    for start in range(0, len(data), size):
        counter.add(data[start : start + size])
    assert counter.records == len(list(csv.reader(io.StringIO(CSV_TEXT, newline="")))) - 1 == 3


def test_ndjson_records_are_its_lines() -> None:
    counter = RowCounter(csv=False)
    for chunk in (b'{"id": "a\\nb"}\n{"id"', b': "c"}\n'):
        counter.add(chunk)
    assert counter.records == 2


def test_progress_says_items_bytes_and_rate() -> None:
    now = [100.0]
    err = io.StringIO()
    progress = Progress(err, csv=True, clock=lambda: now[0])
    progress.add(b"client_id,id\nacme,1\nacme,2\n")
    now[0] = 102.0
    assert progress.line(now[0]) == "export 2 items  0.0 MB  1 items/s  2.0 s"
    progress.close()
    assert err.getvalue().endswith("export 2 items  0.0 MB  1 items/s  2.0 s\n")


def fake_metering(seen: list[httpx.Request], *, cut: bool = False) -> httpx.MockTransport:
    pages = {
        None: {"items": [document("T-1"), document("T-2")], "next_cursor": "c1"},
        "c1": {
            "items": [document("T-3", status="unclassified", service_line=None, complexity=None)],
            "next_cursor": None,
        },
    }

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        assert request.headers["authorization"] == f"Bearer {ADMIN}"
        if request.url.path == "/v1/items/acme/AP/17":
            history = [
                {
                    "at": "2026-11-07T10:00:00Z",
                    "from": None,
                    "to": {"service_line": "hr", "complexity": "basic"},
                    "reclassification": "rc-1",
                    "reason": "misfiled",
                }
            ]
            return httpx.Response(200, json=document("AP/17", history=history))
        if request.url.path.startswith("/v1/items/"):
            return httpx.Response(404, json={"detail": "no item 'NOPE' of client 'acme'"})
        accept = request.headers.get("accept", "")
        if accept == "text/csv":

            def body() -> Any:
                yield CSV_TEXT.encode()[:20]
                if cut:
                    raise httpx.ReadError("connection reset")
                yield CSV_TEXT.encode()[20:]

            return httpx.Response(200, stream=_Stream(body()))
        if request.url.params.get("period") == "2026-13":
            detail = [{"loc": ["query", "period"], "msg": "period: no month 13", "type": "x"}]
            return httpx.Response(422, json={"detail": detail})
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    return httpx.MockTransport(handle)


class _Stream(httpx.SyncByteStream):
    def __init__(self, chunks: Any) -> None:
        self.chunks = chunks

    def __iter__(self) -> Any:
        yield from self.chunks


def call(args: argparse.Namespace, transport: httpx.MockTransport) -> tuple[int, str, str, bytes]:
    out, err, binary = io.StringIO(), io.StringIO(), io.BytesIO()
    code = run(
        args,
        out=out,
        err=err,
        binary_out=binary,
        transport=transport,
        environ={"TIERLINE_ADMIN_KEY": ADMIN},
    )
    return code, out.getvalue(), err.getvalue(), binary.getvalue()


def test_show_prints_every_field_and_the_history() -> None:
    seen: list[httpx.Request] = []
    code, out, _, _ = call(parse("show", "acme", "AP/17"), fake_metering(seen))
    assert code == 0
    assert seen[0].url.raw_path == b"/v1/items/acme/AP%2F17"
    assert "completed_at       2026-10-05T10:00:00.5Z" in out
    assert "opened_at          -" in out
    assert "unclassified -> hr/basic  rc-1: misfiled" in out


def test_an_unknown_item_is_reported_and_exits_2() -> None:
    code, _, err, _ = call(parse("show", "acme", "NOPE"), fake_metering([]))
    assert code == 2 and "404: no item 'NOPE'" in err


def test_list_prints_one_page_and_the_next_cursor() -> None:
    seen: list[httpx.Request] = []
    args = parse("list", "--client", "acme", "--period", "2026-10", "--status", "classified")
    code, out, _, _ = call(args, fake_metering(seen))
    assert code == 0
    assert dict(seen[0].url.params) == {
        "client_id": "acme",
        "period": "2026-10",
        "status": "classified",
        "limit": "50",
    }
    lines = out.splitlines()
    assert lines[0].split() == [
        "COMPLETED_AT",
        "ID",
        "CLASS",
        "RULE",
        "UNITS",
        "WEIGHTED",
        "LATE",
        "CHANGES",
    ]
    assert lines[1].split() == [
        "2026-10-05T10:00:00.5Z",
        "T-1",
        "accounting/complex",
        "ap-invoices-large",
        "1",
        "5",
    ]
    assert lines[-2:] == ["2 items", "more: --cursor c1  (or --all)"]


def test_list_all_follows_every_cursor() -> None:
    seen: list[httpx.Request] = []
    code, out, _, _ = call(parse("list", "--period", "2026-10", "--all"), fake_metering(seen))
    assert code == 0
    assert [r.url.params.get("cursor") for r in seen] == [None, "c1"]
    assert "unclassified" in out and out.splitlines()[-1] == "3 items"


def test_a_refused_list_names_the_parameter() -> None:
    code, _, err, _ = call(parse("list", "--period", "2026-13"), fake_metering([]))
    assert (code, err) == (2, "tierline items: 422: query.period: period: no month 13\n")


def test_export_writes_the_file_whole_and_draws_its_progress(tmp_path: Path) -> None:
    target = tmp_path / "items.csv"
    args = parse("export", "--client", "acme", "--period", "2026-10", "-o", str(target))
    seen: list[httpx.Request] = []
    code, _, err, _ = call(args, fake_metering(seen))
    assert code == 0
    assert seen[0].headers["accept"] == "text/csv"
    assert target.read_bytes() == CSV_TEXT.encode()
    assert list(tmp_path.iterdir()) == [target]
    assert "export 3 items" in err and f"wrote {target}" in err


def test_export_to_stdout_writes_the_bytes_as_they_come() -> None:
    args = parse("export", "--period", "2026-10")
    code, _, _, written = call(args, fake_metering([]))
    assert (code, written) == (0, CSV_TEXT.encode())


def test_an_export_cut_short_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "items.csv"
    args = parse("export", "--period", "2026-10", "-o", str(target))
    code, _, err, _ = call(args, fake_metering([], cut=True))
    assert code == 2 and "broke off" in err
    assert list(tmp_path.iterdir()) == []


def test_the_tierline_command_has_items_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        tierline(["items", "--help"])
    assert "show" in capsys.readouterr().out
