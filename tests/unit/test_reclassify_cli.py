"""`tierline reclassify` (tools/reclassify_cli.py): the request the arguments make, what it
prints, and refusals, against a fake metering (httpx.MockTransport)."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest

from tools.cli import main
from tools.reclassify_cli import run

ANSWER = {
    "id": "rc-42",
    "client_id": "acme",
    "period": "2026-10",
    "items": 12,
    "moved": [
        {
            "from": {"service_line": "accounting", "complexity": "complex"},
            "to": {"service_line": "accounting", "complexity": "standard"},
            "items": 12,
            "units": 300,
            "weighted_units": "24",
        }
    ],
    "period_status": "closed",
}


def parsed(*argv: str) -> Any:
    import argparse

    from tools.reclassify_cli import add_reclassify_commands

    parser = argparse.ArgumentParser()
    add_reclassify_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(["reclassify", *argv])


@pytest.fixture(autouse=True)
def admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIERLINE_ADMIN_KEY", "admin-key-0123456789,next-admin-key-0123")


def test_a_reclassification_posts_the_body_the_arguments_describe(tmp_path: Any) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("T-1\n\nT-2\n")
    sent: list[httpx.Request] = []

    def metering(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json=ANSWER)

    out = io.StringIO()
    args = parsed(
        "--client", "acme", "--period", "2026-10", "--id", "rc-42", "--rule-id",
        "ap-invoices-large", "--item-ids-file", str(ids), "--to", "accounting/standard",
        "--reason", "dispute #42",
    )  # fmt: skip
    assert run(args, transport=httpx.MockTransport(metering), out=out) == 0
    [request] = sent
    assert request.headers["authorization"] == "Bearer admin-key-0123456789"
    assert json.loads(request.content) == {
        "id": "rc-42",
        "client_id": "acme",
        "period": "2026-10",
        "match": {"rule_id": "ap-invoices-large", "item_ids": ["T-1", "T-2"]},
        "to": {"service_line": "accounting", "complexity": "standard"},
        "reason": "dispute #42",
    }
    printed = out.getvalue()
    assert "rc-42: 12 item(s) moved in acme 2026-10 (closed period)" in printed
    assert "accounting/complex  accounting/standard  12" in printed
    assert "billing issues a note" in printed


def test_missing_arguments_and_refusals_exit_2_saying_why() -> None:
    err = io.StringIO()
    args = parsed("--client", "acme", "--period", "2026-10", "--id", "x", "--reason", "r")
    assert run(args, transport=httpx.MockTransport(lambda r: httpx.Response(500)), err=err) == 2
    assert "--to LINE/COMPLEXITY or --rules" in err.getvalue()

    def conflict(_: httpx.Request) -> httpx.Response:
        return httpx.Response(409, json={"detail": "this reclassification id was used"})

    err = io.StringIO()
    args = parsed(
        "--client", "acme", "--period", "2026-10", "--id", "x", "--reason", "r", "--rules"
    )
    assert run(args, transport=httpx.MockTransport(conflict), err=err) == 2
    assert "409" in err.getvalue()


def test_history_prints_the_audit_trail() -> None:
    record = {
        **ANSWER,
        "made_by": "admin:1a2b3c4d",
        "made_at": "2026-11-07T10:00:00Z",
        "body": {"reason": "dispute #42"},
    }

    def metering(request: httpx.Request) -> httpx.Response:
        assert request.url.params["client_id"] == "acme"
        return httpx.Response(200, json={"reclassifications": [record]})

    out = io.StringIO()
    assert (
        run(parsed("history", "--client", "acme"), transport=httpx.MockTransport(metering), out=out)
        == 0
    )
    assert "admin:1a2b3c4d" in out.getvalue() and "dispute #42" in out.getvalue()


def test_the_tierline_command_knows_reclassify() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["reclassify", "--help"])
    assert exited.value.code == 0
