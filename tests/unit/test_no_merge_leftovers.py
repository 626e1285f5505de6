"""No tracked text file keeps a merge's conflict markers: a README with `<<<<<<< HEAD` in it
reads as two contradicting documents (one landed once, unnoticed by every other test)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(rb"^(<{7} |={7}$|>{7} )", re.MULTILINE)
NEWLINE = b"\n"


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout
    paths = [REPO_ROOT / name.decode() for name in listed.split(b"\0") if name]
    return [p for p in paths if p.is_file() and b"\0" not in p.read_bytes()[:8192]]


def test_no_tracked_file_holds_conflict_markers() -> None:
    files = tracked_text_files()
    assert len(files) > 100  # the listing worked
    leftovers = [
        f"{path.relative_to(REPO_ROOT)}:{text[: match.start()].count(NEWLINE) + 1}"
        for path in files
        for text in [path.read_bytes()]
        for match in MARKER.finditer(text)
    ]
    assert leftovers == []


def test_the_marker_pattern_finds_a_conflict() -> None:
    conflict = b"a\n<<<<<<< HEAD\nb\n=======\nc\n>>>>>>> branch\n"
    assert len(MARKER.findall(conflict)) == 3
