"""`tierline agreements`: agreement templates and agreements through billing's admin API.

    tierline agreements templates                      the templates: name, industry, description
    tierline agreements templates healthcare [--client acme] [-o acme.yaml]
                                                       a template's body as YAML (client_id added)
    tierline agreements apply acme.yaml [--client acme]  PUT the YAML as JSON; prints the version
    tierline agreements show acme                      the current agreement as YAML, with version

Billing is TIERLINE_BILLING_URL (default http://127.0.0.1:<BILLING_PORT or 8084>) and the key
TIERLINE_ADMIN_KEY (the first, if it lists several). `apply` takes the file's `client_id`, or
`--client` (which wins). Exit status: 0 done, 1 billing refused the agreement (each problem is
printed with the field it names), 2 anything else (no key, billing unreachable, unknown name).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import httpx
import yaml

from shared.domain.agreement.agreement import read_agreement_yaml
from tools.dlq_cli import ApiError, admin_key, table
from tools.supervisor import ports_from_env

#: Exit status when billing refuses the agreement itself (413, 422).
REFUSED = 1
#: Exit status for everything else that goes wrong.
FAILED = 2


class AgreementRefused(Exception):
    """Billing answered 413 or 422 to a PUT: the agreement is at fault, as `problems` say."""

    def __init__(self, status: int, problems: list[str]) -> None:
        super().__init__(f"{status}: {'; '.join(problems)}")
        self.status = status
        self.problems = problems


def add_agreements_commands(commands: Any) -> None:
    """Add `agreements` to the `tierline` argument parser's subcommands."""
    agreements = commands.add_parser(
        "agreements",
        help="agreement templates, apply and show agreements (through billing's admin API)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--billing-url",
        help="billing (default: TIERLINE_BILLING_URL, or 127.0.0.1 on BILLING_PORT or 8084)",
    )
    actions = agreements.add_subparsers(dest="agreements_command", required=True)

    templates = actions.add_parser(
        "templates", help="list the templates, or print one as YAML", parents=[common]
    )
    templates.add_argument("name", nargs="?", help="a template's name (an industry slug)")
    templates.add_argument("--client", metavar="ID", help="add this client_id to the body")
    templates.add_argument(
        "-o", "--output", metavar="FILE", help="write the YAML to FILE instead of stdout"
    )

    apply = actions.add_parser(
        "apply", help="PUT an agreement YAML file (a new version)", parents=[common]
    )
    apply.add_argument("file", metavar="FILE.yaml")
    apply.add_argument("--client", metavar="ID", help="the client (overrides the file's)")

    show = actions.add_parser("show", help="a client's current agreement as YAML", parents=[common])
    show.add_argument("client_id")


def billing_url(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    """--billing-url, else TIERLINE_BILLING_URL, else billing's local port (`./tierline up`)."""
    if args.billing_url:
        return str(args.billing_url)
    if url := environ.get("TIERLINE_BILLING_URL", "").strip():
        return url
    return f"http://127.0.0.1:{ports_from_env(environ)['billing']}"


class Billing:
    def __init__(self, http: httpx.Client, base_url: str) -> None:
        self.http = http
        self.base = base_url.rstrip("/")

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, f"{self.base}{path}", **kwargs)
        except httpx.HTTPError as error:
            raise ApiError(f"cannot reach billing at {self.base}: {error}") from error

    def _json(self, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            raise ApiError(f"{response.status_code}: {'; '.join(_problems(response))}")
        body: dict[str, Any] = response.json()
        return body

    def templates(self) -> dict[str, Any]:
        return self._json(self._call("GET", "/v1/agreement-templates"))

    def template(self, name: str) -> dict[str, Any]:
        return self._json(self._call("GET", f"/v1/agreement-templates/{name}"))

    def agreement(self, client_id: str) -> dict[str, Any]:
        return self._json(self._call("GET", f"/v1/agreements/{client_id}"))

    def put_agreement(self, client_id: str, body_json: bytes) -> dict[str, Any]:
        response = self._call(
            "PUT",
            f"/v1/agreements/{client_id}",
            content=body_json,
            headers={"Content-Type": "application/json"},
        )
        if response.status_code in (413, 422):
            raise AgreementRefused(response.status_code, _problems(response))
        return self._json(response)


def _problems(response: httpx.Response) -> list[str]:
    """What a refusal says, one problem a line: billing's `errors` (`where: why`), FastAPI's
    list of problems, or its `detail`."""
    try:
        body = response.json()
    except ValueError:
        return [response.text.strip() or response.reason_phrase]
    if not isinstance(body, dict):
        return [str(body)]
    listed = body.get("errors")
    if not isinstance(listed, list):
        listed = body.get("detail") if isinstance(body.get("detail"), list) else None
    if listed:
        return [
            f"{'.'.join(str(part) for part in problem.get('loc', [])) or 'body'}: "
            f"{problem.get('msg')}"
            for problem in listed
            if isinstance(problem, dict)
        ]
    return [str(body.get("detail", body))]


# --- YAML and JSON ------------------------------------------------------------------------------


def to_yaml(document: Mapping[str, Any]) -> str:
    """An agreement as YAML a person edits: block style, the leaves' small mappings in flow
    style (`then: {service_line: hr, complexity: basic}`), keys in the document's order."""
    return yaml.safe_dump(
        dict(document), sort_keys=False, allow_unicode=True, default_flow_style=None, width=4096
    )


def to_json(value: Any) -> str:
    """JSON for an agreement read from YAML: decimals written exactly as numbers (a float would
    round `0.123456789012345678`), dates as ISO strings."""
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k))}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(to_json(item) for item in value) + "]"
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a number an agreement can hold")
        return f"{value:f}"
    if isinstance(value, date):
        return json.dumps(value.isoformat())
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


# --- commands -----------------------------------------------------------------------------------


def run_templates(billing: Billing, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.name is None:
        if args.client or args.output:
            raise ApiError("--client and -o go with a template's name")
        listed = billing.templates()["templates"]
        rows = [(t["name"], t["industry"], t["description"]) for t in listed]
        print(table(rows, ("NAME", "INDUSTRY", "DESCRIPTION")), file=out)
        return 0
    body = billing.template(args.name)
    if args.client:
        body = {"client_id": args.client, **body}
    header = (
        f"# Agreement template {args.name!r} from billing. Edit it, then:\n"
        f"#   ./tierline agreements apply FILE.yaml"
        f"{'' if args.client else ' --client <client_id>'}\n"
    )
    text = header + to_yaml(body)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=err)
    else:
        print(text, end="", file=out)
    return 0


def run_apply(billing: Billing, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    path = Path(args.file)
    try:
        data = dict(read_agreement_yaml(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        print(f"tierline agreements: {path}: {error}", file=err)
        return REFUSED
    if args.client:
        data["client_id"] = args.client
    client_id = data.get("client_id")
    if not isinstance(client_id, str) or not client_id:
        print(f"tierline agreements: {path}: no client_id: give --client ID", file=err)
        return REFUSED
    try:
        stored = billing.put_agreement(client_id, to_json(data).encode())
    except AgreementRefused as refused:
        print(f"billing refused the agreement of {client_id} ({refused.status}):", file=err)
        for problem in refused.problems:
            print(f"  {problem}", file=err)
        return REFUSED
    print(f"agreement {stored['client_id']} version {stored['version']}", file=out)
    return 0


def run_show(billing: Billing, args: argparse.Namespace, out: TextIO) -> int:
    agreement = billing.agreement(args.client_id)
    print(f"# {agreement['client_id']}: version {agreement['version']}", file=out)
    print(to_yaml(agreement), end="", file=out)
    return 0


def run(
    args: argparse.Namespace,
    *,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    environ: Mapping[str, str] = os.environ,
    transport: httpx.BaseTransport | None = None,
) -> int:
    try:
        base = billing_url(args, environ)
        key = admin_key(dict(environ))
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(timeout=60, headers=headers, transport=transport) as http:
            billing = Billing(http, base)
            if args.agreements_command == "templates":
                return run_templates(billing, args, out, err)
            if args.agreements_command == "apply":
                return run_apply(billing, args, out, err)
            return run_show(billing, args, out)
    except (ApiError, ValueError, OSError) as error:
        print(f"tierline agreements: {error}", file=err)
        return FAILED
