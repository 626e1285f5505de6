"""`tierline dlq list|show|redrive <topic>`: dead letters through the console's admin API.

    tierline dlq list workitems.completed [--error-contains TEXT] [--limit N]
    tierline dlq show workitems.completed 0:42
    tierline dlq redrive workitems.completed --all [--error-contains TEXT] [--dry-run]
    tierline dlq redrive workitems.completed --offset 0:42 --offset 1:7

`<topic>` is a consumed topic or its `.dlq`. The console is TIERLINE_CONSOLE_URL (default
http://127.0.0.1:8085) and the key TIERLINE_ADMIN_KEY (the first, if it lists several). A
redrive sends its dead letters in chunks (`--chunk`, 100) and draws its progress on stderr; the
summary goes to stdout. Exit status: 0 done, 1 some dead letter failed, 2 the request was refused.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any, Final, TextIO

import httpx

DEFAULT_CONSOLE_URL: Final = "http://127.0.0.1:8085"
#: Dead letters asked for per list request while collecting an `--all` selection.
_LIST_PAGE: Final = 1000
_BAR_WIDTH: Final = 30


class ApiError(Exception):
    """The console refused a request or could not be reached."""


def add_dlq_commands(commands: Any) -> None:
    """Add `dlq` to the `tierline` argument parser's subcommands."""
    dlq = commands.add_parser(
        "dlq",
        help="list, show and redrive dead letters (through the console's admin API)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--console-url",
        default=os.environ.get("TIERLINE_CONSOLE_URL", DEFAULT_CONSOLE_URL),
        help="the console (default: TIERLINE_CONSOLE_URL or %(default)s)",
    )
    actions = dlq.add_subparsers(dest="dlq_command", required=True)

    listing = actions.add_parser("list", help="a table of a topic's dead letters", parents=[common])
    listing.add_argument("topic")
    _add_filters(listing)
    listing.add_argument(
        "--redriven", choices=("yes", "no"), help="only those redriven, or only those not"
    )
    listing.add_argument("--limit", type=int, default=50, help="rows to show (default 50)")
    listing.add_argument("--cursor", help="PARTITION:OFFSET to start from (next_cursor)")

    show = actions.add_parser("show", help="one dead letter: headers and value", parents=[common])
    show.add_argument("topic")
    show.add_argument("position", metavar="PARTITION:OFFSET")

    redrive = actions.add_parser(
        "redrive", help="re-publish dead letters to their origin topic", parents=[common]
    )
    redrive.add_argument("topic")
    chosen = redrive.add_mutually_exclusive_group(required=True)
    chosen.add_argument("--all", action="store_true", help="every dead letter the filters match")
    chosen.add_argument(
        "--offset",
        action="append",
        metavar="PARTITION:OFFSET",
        help="one dead letter (repeat for more)",
    )
    _add_filters(redrive)
    redrive.add_argument("--dry-run", action="store_true", help="say what would happen, only")
    redrive.add_argument(
        "--chunk", type=int, default=100, help="dead letters per request (default 100)"
    )


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--error-contains", help="only those whose error contains this text")
    parser.add_argument("--error-type", help="only those of this error_type")
    parser.add_argument("--partition", type=int, help="only this partition of the .dlq topic")


def admin_key(environ: os._Environ[str] | dict[str, str]) -> str:
    keys = [k.strip() for k in environ.get("TIERLINE_ADMIN_KEY", "").split(",") if k.strip()]
    if not keys:
        raise ApiError("set TIERLINE_ADMIN_KEY to an admin key")
    return keys[0]


class Console:
    def __init__(self, http: httpx.Client, base_url: str) -> None:
        self.http = http
        self.base = base_url.rstrip("/")

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.http.request(method, f"{self.base}{path}", **kwargs)
        except httpx.HTTPError as error:
            raise ApiError(f"cannot reach the console at {self.base}: {error}") from error
        if response.status_code >= 400:
            raise ApiError(f"{response.status_code}: {_detail(response)}")
        body: dict[str, Any] = response.json()
        return body

    def page(self, topic: str, params: dict[str, Any]) -> dict[str, Any]:
        given = {k: v for k, v in params.items() if v is not None}
        return self._call("GET", f"/v1/dead-letters/{topic}", params=given)

    def matching(self, topic: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every dead letter the filters match, page after page."""
        cursor = None
        while True:
            page = self.page(topic, {**params, "limit": _LIST_PAGE, "cursor": cursor})
            yield from page["entries"]
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def show(self, topic: str, position: str) -> dict[str, Any]:
        partition, _, offset = position.partition(":")
        return self._call("GET", f"/v1/dead-letters/{topic}/{partition}/{offset}")

    def redrive(
        self, topic: str, positions: Sequence[tuple[int, int]], *, dry_run: bool
    ) -> dict[str, Any]:
        records = [{"partition": p, "offset": o} for p, o in positions]
        return self._call(
            "POST",
            f"/v1/dead-letters/{topic}/redrive",
            json={"records": records, "dry_run": dry_run},
        )


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


def parse_offset(text: str) -> tuple[int, int]:
    """`P:O` → (P, O); argparse-friendly errors."""
    partition, sep, offset = text.partition(":")
    if not sep or not partition.isascii() or not offset.isascii():
        raise ValueError(f"{text!r} is not PARTITION:OFFSET, e.g. 0:42")
    if not (partition.isdigit() and offset.isdigit()):
        raise ValueError(f"{text!r} is not PARTITION:OFFSET, e.g. 0:42")
    return int(partition), int(offset)


def progress_bar(done: int, total: int, width: int = _BAR_WIDTH) -> str:
    """`[#########.....]  30/100  30%`"""
    fraction = done / total if total else 1.0
    filled = round(width * fraction)
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {fraction:4.0%}"


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _clip(text: str | None, width: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def origin_text(origin: dict[str, Any] | None) -> str:
    """`P:O` of the origin record, `P:O item I` for one item of a batch record ("" if unknown)."""
    if origin is None:
        return ""
    where = f"{origin['partition']}:{origin['offset']}"
    # .get: a console from before item dead letters sends no `item`
    item = origin.get("item")
    return where if item is None else f"{where} item {item}"


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "error_contains": args.error_contains,
        "error_type": args.error_type,
        "partition": args.partition,
    }


def run_list(console: Console, args: argparse.Namespace, out: TextIO) -> int:
    params = {
        **_filters(args),
        "limit": args.limit,
        "cursor": args.cursor,
        "redriven": {"yes": "true", "no": "false"}.get(args.redriven or ""),
    }
    page = console.page(args.topic, params)
    rows = [
        (
            f"{e['partition']}:{e['offset']}",
            e["time"],
            _clip(e["key"], 24),
            e["error_type"] or "",
            _clip(e["error"], 60),
            origin_text(e["origin"]),
            e["redriven"]["redriven_at"] if e["redriven"] else "no",
        )
        for e in page["entries"]
    ]
    header = ("POSITION", "TIME", "KEY", "ERROR_TYPE", "ERROR", "ORIGIN", "REDRIVEN")
    print(f"{page['dlq_topic']} (dead letters of {page['origin_topic']})", file=out)
    print(table(rows, header), file=out)
    if page["next_cursor"]:
        print(f"more: --cursor {page['next_cursor']}", file=out)
    return 0


def run_show(console: Console, args: argparse.Namespace, out: TextIO) -> int:
    parse_offset(args.position)
    entry = console.show(args.topic, args.position)
    origin = entry["origin"]
    redriven = entry["redriven"]
    print(f"position    {entry['partition']}:{entry['offset']}", file=out)
    print(f"time        {entry['time']}", file=out)
    print(f"key         {entry['key']}", file=out)
    print(f"error_type  {entry['error_type']}", file=out)
    print(f"error       {entry['error']}", file=out)
    where = f"{origin['topic']} {origin_text(origin)}" if origin else "unknown"
    print(f"origin      {where}", file=out)
    if redriven:
        print(
            f"redriven    {redriven['redriven_at']} by {redriven['by']} "
            f"(as {redriven['partition']}:{redriven['offset']})",
            file=out,
        )
    else:
        print("redriven    no", file=out)
    print("headers", file=out)
    for name, value in entry["headers"].items():
        print(f"  {name}: {value}", file=out)
    cut = "" if entry["value_complete"] else " (cut short)"
    print(f"value ({entry['value_bytes']} bytes){cut}", file=out)
    print(entry["value_preview"], file=out)
    return 0


def run_redrive(console: Console, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.chunk < 1 or args.chunk > 1000:
        raise ApiError("--chunk must be between 1 and 1000")
    if args.offset is not None:
        if any(v is not None for v in _filters(args).values()):
            raise ApiError("--error-contains, --error-type and --partition go with --all only")
        positions = list(dict.fromkeys(parse_offset(text) for text in args.offset))
    else:
        print(f"collecting the dead letters of {args.topic} to redrive…", file=err)
        positions = [
            (e["partition"], e["offset"]) for e in console.matching(args.topic, _filters(args))
        ]
    total = len(positions)
    counts = {"redriven": 0, "would_redrive": 0, "skipped": 0, "failed": 0}
    failures: list[str] = []
    topics = (args.topic, "its origin")
    progress = Progress(err, total)
    try:
        for start in range(0, total, args.chunk):
            chunk = positions[start : start + args.chunk]
            answer = console.redrive(args.topic, chunk, dry_run=args.dry_run)
            topics = (answer["dlq_topic"], answer["origin_topic"])
            for name in counts:
                counts[name] += answer[name]
            failures += [
                f"  {r['position']}: {r['reason']}"
                for r in answer["results"]
                if r["outcome"] == "failed"
            ]
            progress.draw(start + len(chunk))
    finally:
        progress.close()
        verb = "would redrive" if args.dry_run else "redriven"
        done = counts["would_redrive"] if args.dry_run else counts["redriven"]
        print(
            f"{verb} {done}, skipped {counts['skipped']} (already redriven), "
            f"failed {counts['failed']}, of {total} from {topics[0]} to {topics[1]}",
            file=out,
        )
        for line in failures:
            print(line, file=out)
    return 1 if counts["failed"] else 0


class Progress:
    """A progress bar on `err`: drawn in place on a terminal, a line per step otherwise."""

    def __init__(self, err: TextIO, total: int) -> None:
        self.err = err
        self.total = total
        self.live = err.isatty()
        self.draw(0)

    def draw(self, done: int) -> None:
        bar = f"redrive {progress_bar(done, self.total)}"
        if self.live:
            print(f"\r{bar}", end="", file=self.err, flush=True)
        else:
            print(bar, file=self.err, flush=True)

    def close(self) -> None:
        if self.live:
            print(file=self.err, flush=True)


def run(args: argparse.Namespace, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        key = admin_key(os.environ)
        with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {key}"}) as http:
            console = Console(http, args.console_url)
            if args.dlq_command == "list":
                return run_list(console, args, out)
            if args.dlq_command == "show":
                return run_show(console, args, out)
            return run_redrive(console, args, out, err)
    except (ApiError, ValueError) as error:
        print(f"tierline dlq: {error}", file=err)
        return 2
