"""The Kafka broker's jars, fetched once from Maven Central by Maven (deploy/kafka/pom.xml)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from tools.localinfra.processes import LocalInfraError, log

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"


def cache_dir() -> Path:
    """``${TIERLINE_CACHE_DIR:-~/.cache/tierline}``."""
    return Path(os.environ.get("TIERLINE_CACHE_DIR") or "~/.cache/tierline").expanduser()


def kafka_version(pom: Path = KAFKA_POM) -> str:
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", pom.read_text())
    if match is None:
        raise LocalInfraError(f"no <kafka.version> property in {pom}")
    return match.group(1)


def kafka_jars_dir(pom: Path = KAFKA_POM) -> Path:
    """The broker's runtime jars, fetched once with Maven into the cache dir.

    A marker holding the pom's hash is written only after a complete fetch, so an interrupted
    fetch (or an edited pom) is fetched again. A file lock serialises concurrent callers.
    """
    home = cache_dir() / f"kafka-{kafka_version(pom)}"
    lib, marker = home / "lib", home / "lib.ok"
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()

    def fetched() -> bool:
        return lib.is_dir() and marker.is_file() and marker.read_text().strip() == digest

    if fetched():
        return lib
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if fetched():
            return lib
        mvn = shutil.which("mvn")
        if mvn is None:
            raise LocalInfraError("Maven (mvn) is not on PATH: it fetches the Kafka jars")
        partial = home / f"lib.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        log(f"fetching the Kafka jars with Maven into {lib} (the first time takes a minute)")
        began = time.monotonic()
        result = subprocess.run(
            [mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
             "-DincludeScope=runtime", f"-DoutputDirectory={partial}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0 or not any(partial.glob("kafka_2.13-*.jar")):
            shutil.rmtree(partial, ignore_errors=True)
            raise LocalInfraError(f"Maven could not fetch the Kafka jars:\n{result.stdout[-4000:]}")
        marker.unlink(missing_ok=True)
        shutil.rmtree(lib, ignore_errors=True)
        partial.rename(lib)
        marker.write_text(digest + "\n")
        log(f"fetched {sum(1 for _ in lib.glob('*.jar'))} jars in {time.monotonic() - began:.1f}s")
    return lib
