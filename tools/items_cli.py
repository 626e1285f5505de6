"""`tierline items show|list|export`: metered items through metering's items API (SPEC §10).

    tierline items show acme T-1042
    tierline items list --client acme --period 2026-10 [--service-line accounting]
                        [--complexity complex] [--rule-id R] [--status unclassified]
                        [--limit 50] [--cursor C | --all]
    tierline items export --client acme --period 2026-10 [filters] [--format csv|ndjson]
                          [-o items.csv]

Metering is TIERLINE_METERING_URL (default http://127.0.0.1:8083). The key is TIERLINE_ADMIN_KEY
(the first, if it lists several) or else TIERLINE_CLIENT_KEY (a client's own key: it reads that
client's items, and `--client` may be left out). `list` prints a table of one page and the
cursor of the next (`--all`: every page). `export` streams every matching item in one response
to `-o FILE` (written whole or not at all) or stdout, drawing items so far and the rate on
stderr. Exit status: 0 done, 2 the request was refused or failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Final, TextIO
from urllib.parse import quote

import httpx

from shared.domain.agreement.fields import COMPLEXITIES, SERVICE_LINES
from tools.dlq_cli import table
from tools.supervisor import DEFAULT_PORTS

DEFAULT_METERING_URL: Final = f"http://127.0.0.1:{DEFAULT_PORTS['metering']}"
_MEDIA: Final = {"csv": "text/csv", "ndjson": "application/x-ndjson"}
#: How often the export's progress line is redrawn (seconds; a line each on a non-terminal).
_DRAW_EVERY: Final = 0.25
_LOG_EVERY: Final = 5.0


class ApiError(Exception):
    """Metering refused a request or could not be reached."""


def add_items_commands(commands: Any) -> None:
    """Add `items` to the `tierline` argument parser's subcommands."""
    items = commands.add_parser(
        "items",
        help="show, list and export metered items (through metering's items API)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--metering-url",
        default=os.environ.get("TIERLINE_METERING_URL", DEFAULT_METERING_URL),
        help="metering (default: TIERLINE_METERING_URL or %(default)s)",
    )
    actions = items.add_subparsers(dest="items_command", required=True)

    show = actions.add_parser("show", help="one item: its fields and history", parents=[common])
    show.add_argument("client")
    show.add_argument("id")

    listing = actions.add_parser("list", help="a table of a period's items", parents=[common])
    _add_selection(listing)
    listing.add_argument("--limit", type=int, default=50, help="items per page (default 50)")
    paging = listing.add_mutually_exclusive_group()
    paging.add_argument("--cursor", help="start after this cursor (a page's next_cursor)")
    paging.add_argument("--all", action="store_true", help="every page, not only the first")

    export = actions.add_parser(
        "export", help="every item of a period, as CSV or NDJSON", parents=[common]
    )
    _add_selection(export)
    export.add_argument("--format", choices=tuple(_MEDIA), default="csv")
    export.add_argument("-o", "--output", help="write to this file (default: stdout)")


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--client", help="the client (a client key's own when left out)")
    parser.add_argument("--period", required=True, help="YYYY-MM")
    parser.add_argument("--service-line", choices=SERVICE_LINES)
    parser.add_argument("--complexity", choices=COMPLEXITIES)
    parser.add_argument("--rule-id")
    parser.add_argument("--status", choices=("classified", "unclassified"))


def api_key(environ: Mapping[str, str]) -> str:
    """The admin key (the first of TIERLINE_ADMIN_KEY) or else TIERLINE_CLIENT_KEY."""
    admin = [k.strip() for k in environ.get("TIERLINE_ADMIN_KEY", "").split(",") if k.strip()]
    if admin:
        return admin[0]
    client = environ.get("TIERLINE_CLIENT_KEY", "").strip()
    if client:
        return client
    raise ApiError("set TIERLINE_ADMIN_KEY (or TIERLINE_CLIENT_KEY, a client's own key)")


def selection(args: argparse.Namespace) -> dict[str, str]:
    """The query parameters of `list` and `export`."""
    given = {
        "client_id": args.client,
        "period": args.period,
        "service_line": args.service_line,
        "complexity": args.complexity,
        "rule_id": args.rule_id,
        "status": args.status,
    }
    return {name: value for name, value in given.items() if value is not None}


class Metering:
    def __init__(self, http: httpx.Client, base_url: str) -> None:
        self.http = http
        self.base = base_url.rstrip("/")

    def _get(self, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.http.get(f"{self.base}{path}", **kwargs)
        except httpx.HTTPError as error:
            raise ApiError(f"cannot reach metering at {self.base}: {error}") from error
        if response.status_code >= 400:
            raise ApiError(f"{response.status_code}: {_detail(response)}")
        body: dict[str, Any] = response.json()
        return body

    def item(self, client: str, item_id: str) -> dict[str, Any]:
        # Every byte but unreserved ones percent-encoded: an id may hold `/`, `?` or `#`.
        return self._get(f"/v1/items/{quote(client, safe='')}/{quote(item_id, safe='')}")

    def page(self, params: dict[str, Any]) -> dict[str, Any]:
        return self._get("/v1/items", params=params)

    def pages(self, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every page from `params`' cursor (or the start), following next_cursor."""
        while True:
            page = self.page(params)
            yield page
            if page["next_cursor"] is None:
                return
            params = {**params, "cursor": page["next_cursor"]}

    def export(
        self, params: dict[str, Any], media: str, sink: BinaryIO, progress: Progress
    ) -> None:
        url = f"{self.base}/v1/items"
        try:
            with self.http.stream("GET", url, params=params, headers={"Accept": media}) as answer:
                if answer.status_code >= 400:
                    answer.read()
                    raise ApiError(f"{answer.status_code}: {_detail(answer)}")
                for chunk in answer.iter_raw():
                    sink.write(chunk)
                    progress.add(chunk)
        except httpx.HTTPError as error:
            raise ApiError(f"the export from {self.base} broke off: {error}") from error


def _detail(response: httpx.Response) -> str:
    """The refusal's `detail`; FastAPI's validation errors as `where: what` each."""
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        return response.text
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(part) for part in problem.get('loc', []))}: {problem.get('msg')}"
            for problem in detail
            if isinstance(problem, dict)
        )
    return str(detail)


# --- counting what streams by -------------------------------------------------------------------


class RowCounter:
    """Counts the records of a CSV or NDJSON stream as it arrives in arbitrary chunks. A CSV
    newline inside a quoted field is no record's end: quotes toggle whether one is open (a
    doubled quote toggles twice), so only newlines outside quotes count."""

    def __init__(self, *, csv: bool) -> None:
        self.csv = csv
        self.in_quotes = False
        self.lines = 0

    def add(self, chunk: bytes) -> None:
        if not self.csv:
            self.lines += chunk.count(b"\n")
            return
        for n, piece in enumerate(chunk.split(b'"')):
            if n:
                self.in_quotes = not self.in_quotes
            if not self.in_quotes:
                self.lines += piece.count(b"\n")

    @property
    def records(self) -> int:
        """Records so far (a CSV's header row is not one)."""
        return max(0, self.lines - 1) if self.csv else self.lines


class Progress:
    """`export 120,000 items  31.2 MB  98,765 items/s` on `err`: redrawn in place on a
    terminal, a line every few seconds otherwise; the last one when done."""

    def __init__(self, err: TextIO, *, csv: bool, clock: Any = time.monotonic) -> None:
        self.err = err
        self.counter = RowCounter(csv=csv)
        self.bytes = 0
        self.clock = clock
        self.started = clock()
        self.drawn = self.started
        self.live = err.isatty()

    def add(self, chunk: bytes) -> None:
        self.counter.add(chunk)
        self.bytes += len(chunk)
        now = self.clock()
        if now - self.drawn >= (_DRAW_EVERY if self.live else _LOG_EVERY):
            self.drawn = now
            self._draw(now, end="" if self.live else "\n")

    def line(self, now: float) -> str:
        seconds = max(now - self.started, 1e-9)
        items = self.counter.records
        return (
            f"export {items:,} items  {self.bytes / 1e6:,.1f} MB  "
            f"{items / seconds:,.0f} items/s  {seconds:,.1f} s"
        )

    def _draw(self, now: float, *, end: str) -> None:
        prefix = "\r" if self.live else ""
        print(f"{prefix}{self.line(now)}", end=end, file=self.err, flush=True)

    def close(self) -> None:
        self._draw(self.clock(), end="\n")


# --- the commands -------------------------------------------------------------------------------


def run_show(metering: Metering, args: argparse.Namespace, out: TextIO) -> int:
    item = metering.item(args.client, args.id)
    width = max(len(name) for name in item)
    for name, value in item.items():
        if name != "history":
            print(f"{name:<{width}}  {_cell(value)}", file=out)
    print(f"history ({len(item['history'])} changes)", file=out)
    for change in item["history"]:
        print(
            f"  {change['at']}  {_class(change['from'])} -> {_class(change['to'])}  "
            f"{change['reclassification']}: {change['reason']}",
            file=out,
        )
    return 0


_COLUMNS: Final = ("COMPLETED_AT", "ID", "CLASS", "RULE", "UNITS", "WEIGHTED", "LATE", "CHANGES")


def _row(item: dict[str, Any]) -> tuple[str, ...]:
    return (
        item["completed_at"],
        _clip(item["id"], 40),
        _class(item if item["status"] == "classified" else None),
        _clip(item["rule_id"] or "", 30),
        str(item["units"]),
        item["weighted_units"],
        "late" if item["late"] else "",
        str(len(item["history"])) if item["history"] else "",
    )


def run_list(metering: Metering, args: argparse.Namespace, out: TextIO) -> int:
    params: dict[str, Any] = {**selection(args), "limit": args.limit}
    if args.cursor:
        params["cursor"] = args.cursor
    pages = metering.pages(params) if args.all else iter([metering.page(params)])
    rows: list[tuple[str, ...]] = []
    next_cursor = None
    for page in pages:
        rows += [_row(item) for item in page["items"]]
        next_cursor = page["next_cursor"]
    print(table(rows, _COLUMNS), file=out)
    print(f"{len(rows)} items", file=out)
    if next_cursor:
        print(f"more: --cursor {next_cursor}  (or --all)", file=out)
    return 0


def run_export(metering: Metering, args: argparse.Namespace, out: BinaryIO, err: TextIO) -> int:
    media = _MEDIA[args.format]
    progress = Progress(err, csv=args.format == "csv")
    if args.output is None:
        metering.export(selection(args), media, out, progress)
        out.flush()
        progress.close()
        return 0
    target = Path(args.output)
    partial = target.with_name(target.name + ".partial")
    try:
        with partial.open("wb") as sink:
            metering.export(selection(args), media, sink, progress)
        partial.replace(target)  # the file appears whole, or not at all
    finally:
        partial.unlink(missing_ok=True)
    progress.close()
    print(f"wrote {target}", file=err)
    return 0


def _class(value: dict[str, Any] | None) -> str:
    return "unclassified" if value is None else f"{value['service_line']}/{value['complexity']}"


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _clip(text: str, width: int) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def run(
    args: argparse.Namespace,
    *,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    binary_out: BinaryIO | None = None,
    transport: httpx.BaseTransport | None = None,
    environ: Mapping[str, str] = os.environ,
) -> int:
    try:
        key = api_key(environ)
        with httpx.Client(
            timeout=httpx.Timeout(60, read=600),
            headers={"Authorization": f"Bearer {key}"},
            transport=transport,
        ) as http:
            metering = Metering(http, args.metering_url)
            if args.items_command == "show":
                return run_show(metering, args, out)
            if args.items_command == "list":
                return run_list(metering, args, out)
            return run_export(metering, args, binary_out or sys.stdout.buffer, err)
    except (ApiError, OSError) as error:
        print(f"tierline items: {error}", file=err)
        return 2
