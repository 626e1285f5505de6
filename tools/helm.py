"""Helm, built once from the Go module proxy into the cache dir (like the Kafka jars).

The chart's test (tests/deploy/test_helm_chart.py) renders deploy/helm/tierline with `helm
template` and `helm lint`. No release binary is downloaded: `./tierline setup` runs `go install`
of Helm's pinned module version into `${TIERLINE_CACHE_DIR:-~/.cache/tierline}/helm-<version>`,
so a fresh machine (and CI) builds the same Helm from source the first time, in a few minutes.

    python -m tools.helm          # prints the binary's path, building it when missing
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Final

from tools.localinfra.jars import cache_dir
from tools.localinfra.processes import LocalInfraError, log

#: Helm's Go module and version: v4, the line the Go module proxy serves and this project
#: approves (v3.22.0 is served but not approved).
HELM_MODULE: Final = "helm.sh/helm/v4"
HELM_VERSION: Final = "v4.3.2"
#: Where Go is installed on this project's machines when it is not on PATH.
GO_FALLBACK: Final = Path("/usr/local/go/bin/go")


def go_binary() -> Path:
    found = shutil.which("go")
    if found is not None:
        return Path(found)
    if GO_FALLBACK.is_file():
        return GO_FALLBACK
    raise LocalInfraError(
        f"Go is not installed (no `go` on PATH, no {GO_FALLBACK}): it builds Helm "
        f"({HELM_MODULE}@{HELM_VERSION}) for the chart's tests"
    )


def helm_binary(version: str = HELM_VERSION) -> Path:
    """The `helm` executable of `version`, built with `go install` the first time.

    The binary is moved into place only after a complete build, and a marker naming the version
    is written last, so an interrupted build is built again. A file lock serialises callers.
    """
    home = cache_dir() / f"helm-{version}"
    binary, marker = home / "helm", home / "helm.ok"

    def built() -> bool:
        return binary.is_file() and marker.is_file() and marker.read_text().strip() == version

    if built():
        return binary
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if built():
            return binary
        partial = home / f"bin.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        log(f"building Helm {version} with `go install` into {home} (the first time: minutes)")
        began = time.monotonic()
        env = {**os.environ, "GOBIN": str(partial), "GOFLAGS": "-mod=mod"}
        result = subprocess.run(
            [str(go_binary()), "install", f"{HELM_MODULE}/cmd/helm@{version}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, check=False, env=env,
        )  # fmt: skip
        if result.returncode != 0 or not (partial / "helm").is_file():
            shutil.rmtree(partial, ignore_errors=True)
            raise LocalInfraError(f"go install could not build Helm {version}:\n{result.stdout}")
        marker.unlink(missing_ok=True)
        (partial / "helm").replace(binary)
        shutil.rmtree(partial, ignore_errors=True)
        marker.write_text(version + "\n")
        log(f"built Helm {version} in {time.monotonic() - began:.0f}s")
    return binary


if __name__ == "__main__":
    print(helm_binary())
