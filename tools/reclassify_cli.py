"""`tierline reclassify`: correct the class of a period's items, and read the audit trail.

    tierline reclassify --client acme --period 2026-10 --id rc-42 \\
        --rule-id ap-invoices-large --to accounting/standard --reason "dispute #42"
    tierline reclassify --client acme --period 2026-10 --id rc-43 --status unclassified \\
        --rules --reason "new vendor rule"
    tierline reclassify --client acme --period 2026-10 --id rc-44 --item-ids-file ids.txt \\
        --to hr/basic --reason "..."
    tierline reclassify history --client acme [--period 2026-10]

Metering is TIERLINE_METERING_URL (default http://127.0.0.1:8083), the key TIERLINE_ADMIN_KEY
(the first, if it lists several). Sending the same id and body again answers the same and moves
nothing (safe to retry). Exit status: 0 done, 2 the request was refused.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import httpx

from tools.dlq_cli import ApiError, admin_key, table
from tools.items_cli import DEFAULT_METERING_URL


def add_reclassify_commands(commands: Any) -> None:
    """Add `reclassify` to the `tierline` argument parser's subcommands."""
    parser = commands.add_parser(
        "reclassify",
        help="correct the class of a period's items (SPEC §10), or show the audit trail",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "action", nargs="?", choices=("run", "history"), default="run", help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--metering-url",
        default=os.environ.get("TIERLINE_METERING_URL", DEFAULT_METERING_URL),
        help="metering (default: TIERLINE_METERING_URL or %(default)s)",
    )
    parser.add_argument("--client", required=True, help="the client id")
    parser.add_argument("--period", help="YYYY-MM (required to reclassify)")
    parser.add_argument("--id", dest="ident", help="the reclassification's id (idempotency key)")
    parser.add_argument("--reason", help="why: kept in the audit trail and on any note")
    parser.add_argument("--service-line", help="match: items of this service line")
    parser.add_argument("--complexity", help="match: items of this complexity")
    parser.add_argument("--rule-id", help="match: items placed by this rule")
    parser.add_argument("--status", choices=("classified", "unclassified"), help="match")
    parser.add_argument("--item-ids", help="match: these ids, comma-separated")
    parser.add_argument("--item-ids-file", type=Path, help="match: the ids in FILE, one a line")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--to", metavar="LINE/COMPLEXITY", help="the class to move them to")
    target.add_argument(
        "--rules", action="store_true", help="classify them again with the current agreement"
    )


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    """The reclassification the arguments describe; ValueError naming what is missing."""
    for flag, value in (("--period", args.period), ("--id", args.ident), ("--reason", args.reason)):
        if not value:
            raise ValueError(f"{flag} is required")
    if not args.to and not args.rules:
        raise ValueError("say where they go: --to LINE/COMPLEXITY or --rules")
    match: dict[str, Any] = {}
    for key in ("service_line", "complexity", "rule_id", "status"):
        if (value := getattr(args, key)) is not None:
            match[key] = value
    ids = [i.strip() for i in (args.item_ids or "").split(",") if i.strip()]
    if args.item_ids_file is not None:
        ids += [
            line.strip() for line in args.item_ids_file.read_text().splitlines() if line.strip()
        ]
    if ids:
        match["item_ids"] = ids
    to: Any = "rules"
    if args.to:
        line, sep, complexity = args.to.partition("/")
        if not sep or not line or not complexity:
            raise ValueError("--to must be LINE/COMPLEXITY, e.g. accounting/standard")
        to = {"service_line": line, "complexity": complexity}
    return {
        "id": args.ident,
        "client_id": args.client,
        "period": args.period,
        "match": match,
        "to": to,
        "reason": args.reason,
    }


def _class(value: dict[str, str] | None) -> str:
    return "unclassified" if value is None else f"{value['service_line']}/{value['complexity']}"


def print_answer(answer: dict[str, Any], out: TextIO) -> None:
    print(
        f"{answer['id']}: {answer['items']} item(s) moved in {answer['client_id']} "
        f"{answer['period']} ({answer['period_status']} period)",
        file=out,
    )
    rows = [
        (_class(m["from"]), _class(m["to"]), str(m["items"]), str(m["units"]), m["weighted_units"])
        for m in answer["moved"]
    ]
    print(table(rows, ("from", "to", "items", "units", "weighted units")), file=out)
    if answer["period_status"] == "closed" and answer["items"]:
        print("the period is closed: billing issues a note (tierline: GET /v1/notes)", file=out)


def print_history(records: Sequence[dict[str, Any]], out: TextIO) -> None:
    rows = [
        (r["made_at"], r["id"], r["period"], r["made_by"], str(r["items"]), r["body"]["reason"])
        for r in records
    ]
    print(table(rows, ("when", "id", "period", "by", "items", "reason")), file=out)


def run(
    args: argparse.Namespace,
    *,
    transport: httpx.BaseTransport | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    try:
        headers = {"Authorization": f"Bearer {admin_key(os.environ)}"}
        with httpx.Client(
            base_url=args.metering_url, headers=headers, timeout=120, transport=transport
        ) as http:
            if args.action == "history":
                params = {
                    "client_id": args.client,
                    **({"period": args.period} if args.period else {}),
                }
                response = http.get("/v1/reclassifications", params=params)
            else:
                response = http.post("/v1/reclassifications", json=request_body(args))
    except (ApiError, ValueError, OSError, httpx.HTTPError) as error:
        print(f"tierline reclassify: {error}", file=err)
        return 2
    if response.status_code != 200:
        print(f"tierline reclassify: {response.status_code} {response.text}", file=err)
        return 2
    if args.action == "history":
        print_history(response.json()["reclassifications"], out)
    else:
        print_answer(response.json(), out)
    return 0
