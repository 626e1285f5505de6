"""``python -m tools.localinfra [--data-dir DIR] [--kafka-brokers N] [--postgres-ha]``: Kafka and
PostgreSQL until Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from tools.localinfra.cluster import kafka_brokers
from tools.localinfra.infra import LocalInfra
from tools.localinfra.processes import log


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.localinfra",
        description="Run a real Kafka broker and PostgreSQL locally until Ctrl-C.",
    )
    parser.add_argument(
        "--data-dir", type=Path,
        help="keep the data here (reused next time); default: a temp dir removed at exit",
    )  # fmt: skip
    parser.add_argument(
        "--kafka-brokers", type=kafka_brokers, default=1, metavar="N",
        help="1 (default), or a local KRaft cluster of N >= 3 brokers",
    )  # fmt: skip
    parser.add_argument(
        "--postgres-ha", action="store_true",
        help="PostgreSQL as a primary and a synchronous standby (Patroni, etcd)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_keyboard_interrupt)

    with contextlib.ExitStack() as stack:
        data_dir: Path = args.data_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="tierline-localinfra-"))
        )
        if args.data_dir is None:
            data_dir.chmod(0o755)  # postgres runs as nobody when we are root
        try:
            began = time.monotonic()
            infra = stack.enter_context(
                LocalInfra(data_dir, kafka_brokers=args.kafka_brokers, postgres_ha=args.postgres_ha)
            )
            log(f"started in {time.monotonic() - began:.1f}s; data in {data_dir}")
            print(f"KAFKA_BOOTSTRAP_SERVERS={infra.kafka_bootstrap}", flush=True)
            print(f"DATABASE_URL={infra.database_url}", flush=True)
            log("running: Ctrl-C to stop")
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            log("stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
