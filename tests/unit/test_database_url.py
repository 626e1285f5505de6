"""DATABASE_URL may name a primary and its standbys (a multi-host DSN, as for PostgreSQL with
failover); a bad one stops the service at start naming the variable and what is wrong."""

from __future__ import annotations

import pytest

from shared.infra.settings import database_hosts
from tests.unit.test_settings import start

FAILOVER_DSN = (
    "postgresql://postgres@127.0.0.1:5432,127.0.0.1:5433/postgres?target_session_attrs=read-write"
)


@pytest.mark.parametrize(
    ("url", "hosts"),
    [
        ("postgresql://postgres@127.0.0.1:1/postgres", [("127.0.0.1", 1)]),
        (FAILOVER_DSN, [("127.0.0.1", 5432), ("127.0.0.1", 5433)]),
        ("postgres://u:secret@db-a,db-b:6432/x?target_session_attrs=primary",
         [("db-a", 5432), ("db-b", 6432)]),
        ("postgresql://u@[::1]:5433,[fe80::1]/x?target_session_attrs=read-write",
         [("::1", 5433), ("fe80::1", 5432)]),
        ("postgresql:///tierline", []),  # the client's default host
    ],
)  # fmt: skip
def test_every_host_of_a_dsn_is_read_in_order(url: str, hosts: list[tuple[str, int]]) -> None:
    assert database_hosts(url) == hosts


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("mysql://db/x", "must be a postgresql:// URL"),
        ("postgresql://u@a:1,b:2/x", "names 2 hosts but not target_session_attrs=read-write"),
        ("postgresql://u@a:1,b:2/x?target_session_attrs=any", "names 2 hosts"),
        ("postgresql://u@a:1,b:2/x?target_session_attrs=prefer-standby", "names 2 hosts"),
        ("postgresql://u@a:1,,b:2/x?target_session_attrs=read-write", "host 2 is empty"),
        ("postgresql://u@a:1,:2/x?target_session_attrs=read-write", "host 2 (':2') has no name"),
        ("postgresql://u@a:1,b:x/x?target_session_attrs=read-write", "host 2 ('b:x') has no port"),
        ("postgresql://u@a:70000/x", "host 1 ('a:70000') has no port in 1..65535"),
        ("postgresql://u@a:1/x?target_session_attrs=rw", "target_session_attrs must be one of"),
    ],
)
def test_a_bad_dsn_says_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(ValueError) as error:
        database_hosts(url)
    assert problem in str(error.value)


def test_a_multi_host_dsn_without_read_write_stops_the_service_naming_it() -> None:
    result = start("metering", DATABASE_URL="postgresql://postgres@127.0.0.1:1,127.0.0.1:2/x")
    assert result.returncode == 2
    assert "configuration error: DATABASE_URL" in result.stderr
    assert "target_session_attrs=read-write" in result.stderr
