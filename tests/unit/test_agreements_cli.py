"""`tierline agreements` (tools/agreements_cli.py) against a fake billing (httpx.MockTransport):
its arguments, what it prints and what it sends.

The fake serves the real template catalog and keeps agreements as billing would, parsing each
PUT body with the real parser, so a printed template is shown to be a file `apply` can send
back, and a refusal carries the field billing names.
"""

from __future__ import annotations

import argparse
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import ValidationError

from services.billing.templates_api import read_catalog
from shared.domain.agreement.agreement import load_agreement_yaml, parse_agreement_body
from tools.agreements_cli import add_agreements_commands, billing_url, run, to_json

ADMIN = "first-admin-key-0123456789"
ENV = {"TIERLINE_ADMIN_KEY": f"{ADMIN}, second-admin-key-0123456789"}
CATALOG = read_catalog()


class FakeBilling:
    """Billing's template and agreement routes, in memory; records every request."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.agreements: dict[str, dict[str, Any]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {ADMIN}":
            return httpx.Response(401, json={"detail": "missing or unknown API key"})
        parts = request.url.path.strip("/").split("/")
        if parts == ["v1", "agreement-templates"]:
            return httpx.Response(200, json=CATALOG.listing().model_dump(mode="json"))
        if parts[:2] == ["v1", "agreement-templates"]:
            template = CATALOG.get(parts[2])
            if template is None:
                return httpx.Response(404, json={"detail": f"no agreement template {parts[2]}"})
            return httpx.Response(200, content=json.dumps(template.body))
        if parts[:2] == ["v1", "agreements"] and request.method == "PUT":
            return self.put(parts[2], request.content)
        if parts[:2] == ["v1", "agreements"]:
            found = self.agreements.get(parts[2])
            if found is None:
                return httpx.Response(404, json={"detail": f"no agreement for {parts[2]}"})
            return httpx.Response(200, json=found)
        return httpx.Response(404, json={"detail": "Not Found"})

    def put(self, client_id: str, raw: bytes) -> httpx.Response:
        try:
            agreement = parse_agreement_body(raw)
        except ValidationError as error:
            errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in error.errors()]
            where = ".".join(str(part) for part in errors[0]["loc"])
            return httpx.Response(
                422, json={"detail": f"{where}: {errors[0]['msg']}", "errors": errors}
            )
        previous = self.agreements.get(client_id)
        version = 1 if previous is None else previous["version"] + 1
        stored = agreement.with_version(version).to_wire()
        self.agreements[client_id] = stored
        return httpx.Response(200, json=stored)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tierline")
    add_agreements_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["agreements", *argv])


def call(
    billing: FakeBilling | httpx.MockTransport, *argv: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    if not isinstance(billing, httpx.MockTransport):
        billing = httpx.MockTransport(billing)
    status = run(
        parse(*argv), out=out, err=err, environ=ENV if env is None else env, transport=billing
    )
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def billing() -> FakeBilling:
    return FakeBilling()


def test_arguments_parse_into_each_command() -> None:
    one = parse("templates", "healthcare", "--client", "acme", "-o", "acme.yaml")
    assert (one.agreements_command, one.name, one.client, one.output) == (
        "templates", "healthcare", "acme", "acme.yaml",
    )  # fmt: skip
    listing = parse("templates")
    assert (listing.name, listing.client, listing.output) == (None, None, None)
    apply = parse("apply", "acme.yaml", "--client", "acme", "--billing-url", "http://b:9")
    assert (apply.file, apply.client, apply.billing_url) == ("acme.yaml", "acme", "http://b:9")
    assert parse("show", "acme").client_id == "acme"
    with pytest.raises(SystemExit):
        parse("apply")  # the file is required


def test_billing_is_the_flag_then_the_variable_then_the_local_port() -> None:
    assert billing_url(parse("show", "a", "--billing-url", "http://x:1"), {}) == "http://x:1"
    env = {"TIERLINE_BILLING_URL": "https://billing.example"}
    assert billing_url(parse("show", "a"), env) == "https://billing.example"
    assert billing_url(parse("show", "a"), {"BILLING_PORT": "9184"}) == "http://127.0.0.1:9184"
    assert billing_url(parse("show", "a"), {}) == "http://127.0.0.1:8084"


def test_the_list_is_a_table_of_name_industry_and_description(billing: FakeBilling) -> None:
    status, out, _ = call(billing, "templates")
    assert status == 0
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "INDUSTRY", "DESCRIPTION"]
    names = [row.split()[0] for row in rows]
    assert names == [t.name for t in CATALOG.listing().templates] == sorted(names)
    healthcare = next(row for row in rows if row.startswith("healthcare "))
    assert "Healthcare" in healthcare and "claims adjudication" in healthcare
    [request] = billing.requests
    assert str(request.url) == "http://127.0.0.1:8084/v1/agreement-templates"
    assert request.headers["authorization"] == f"Bearer {ADMIN}"  # the first admin key


def test_a_printed_template_with_a_client_is_an_agreement_file(billing: FakeBilling) -> None:
    status, out, _ = call(billing, "templates", "telecom", "--client", "acme")
    assert status == 0
    assert out.startswith("# Agreement template 'telecom'")
    agreement = load_agreement_yaml(out)  # the comment lines are YAML comments
    assert agreement.client_id == "acme"
    assert next(iter(yaml.safe_load(out))) == "client_id"
    template = CATALOG.get("telecom")
    assert template is not None
    assert {k: v for k, v in agreement.to_wire().items() if k not in ("client_id", "version")} == (
        template.body
    )


def test_a_template_is_written_to_a_file_and_applied_back(
    billing: FakeBilling, tmp_path: Path
) -> None:
    target = tmp_path / "acme.yaml"
    status, out, err = call(billing, "templates", "logistics", "-o", str(target))
    assert (status, out, err) == (0, "", f"wrote {target}\n")
    assert "client_id" not in yaml.safe_load(target.read_text())

    status, out, err = call(billing, "apply", str(target), "--client", "acme")
    assert (status, out, err) == (0, "agreement acme version 1\n", "")
    put = billing.requests[-1]
    assert (put.method, put.url.path) == ("PUT", "/v1/agreements/acme")
    assert put.headers["content-type"] == "application/json"
    assert json.loads(put.content)["client_id"] == "acme"

    assert call(billing, "apply", str(target), "--client", "acme")[1] == (
        "agreement acme version 2\n"
    )


def test_apply_sends_the_files_decimals_exactly_and_the_client_flag_wins(
    billing: FakeBilling, tmp_path: Path
) -> None:
    path = tmp_path / "globex.yaml"
    path.write_text(
        "client_id: someone-else\ncurrency: USD\neffective_from: 2026-01-01\n"
        "pricing:\n  weights: {basic: 0.123456, standard: 2, complex: 5.5}\n"
        "  tiers: [{name: Flat, up_to: 999999999999.999999, fee: '10.00'}]\n"
        "  overage_rate: '1.25'\n"
    )
    status, out, _ = call(billing, "apply", str(path), "--client", "globex")
    assert (status, out) == (0, "agreement globex version 1\n")
    sent = billing.requests[-1].content.decode()
    assert '"basic":0.123456' in sent and '"up_to":999999999999.999999' in sent
    assert '"effective_from":"2026-01-01"' in sent and '"client_id":"globex"' in sent
    assert "someone-else" not in billing.agreements


def test_a_refused_agreement_prints_each_field_billing_names(
    billing: FakeBilling, tmp_path: Path
) -> None:
    path = tmp_path / "acme.yaml"
    path.write_text(
        "client_id: acme\ncurrency: USD\npricing:\n  weights: {basic: 1, standard: 2}\n"
        "  tiers: [{name: Flat, up_to: null, fee: 10}]\n"
    )
    status, out, err = call(billing, "apply", str(path))
    assert (status, out) == (1, "")
    lines = err.splitlines()
    assert lines[0] == "billing refused the agreement of acme (422):"
    assert "  pricing.weights.complex: Field required" in lines
    assert any(line.startswith("  pricing.tiers.0.fee: ") for line in lines), lines


def test_apply_refuses_a_file_without_a_client_or_that_is_no_yaml(
    billing: FakeBilling, tmp_path: Path
) -> None:
    nameless = tmp_path / "nameless.yaml"
    nameless.write_text("currency: USD\n")
    status, _, err = call(billing, "apply", str(nameless))
    assert status == 1 and "no client_id: give --client ID" in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("client_id: [\n")
    status, _, err = call(billing, "apply", str(broken))
    assert status == 1 and f"{broken}: not valid YAML" in err
    status, _, err = call(billing, "apply", str(tmp_path / "missing.yaml"))
    assert status == 1 and "missing.yaml" in err
    assert billing.requests == []  # nothing was sent


def test_show_prints_the_current_agreement_with_its_version(
    billing: FakeBilling, tmp_path: Path
) -> None:
    status, _, err = call(billing, "show", "acme")
    assert (status, err) == (2, "tierline agreements: 404: no agreement for acme\n")
    target = tmp_path / "acme.yaml"
    call(billing, "templates", "retail", "--client", "acme", "-o", str(target))
    call(billing, "apply", str(target))
    call(billing, "apply", str(target))
    status, out, _ = call(billing, "show", "acme")
    assert status == 0
    assert out.splitlines()[0] == "# acme: version 2"
    shown = yaml.safe_load(out)
    assert (shown["client_id"], shown["version"]) == ("acme", 2)
    assert load_agreement_yaml(out).name == "Retail operations (template)"


def test_failures_say_what_and_exit_2(billing: FakeBilling) -> None:
    status, _, err = call(billing, "templates", "aerospace")
    assert (status, err) == (2, "tierline agreements: 404: no agreement template aerospace\n")
    status, _, err = call(billing, "templates", "--client", "acme")
    assert status == 2 and "--client and -o go with a template's name" in err
    status, _, err = call(billing, "templates", env={})
    assert status == 2 and "set TIERLINE_ADMIN_KEY" in err
    status, _, err = call(billing, "show", "acme", env={**ENV, "BILLING_PORT": "x"})
    assert status == 2 and "BILLING_PORT must be a port number" in err

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    status, _, err = call(httpx.MockTransport(unreachable), "templates")
    assert status == 2 and "cannot reach billing at http://127.0.0.1:8084" in err


def test_json_from_yaml_keeps_decimals_exact_and_dates_as_text() -> None:
    assert to_json({"w": Decimal("0.123456789012345678"), "n": 3, "b": True, "x": None}) == (
        '{"w":0.123456789012345678,"n":3,"b":true,"x":null}'
    )
    assert to_json([Decimal("1E+3"), "é"]) == '[1000,"é"]'
    with pytest.raises(ValueError, match="not a number"):
        to_json(Decimal("NaN"))
