"""Every metering and billing table is keyed by `client_id` first (deploy/README.md, "A plan past
one database"): the ledger can then be distributed by client (Citus, distribution column
`client_id`) without a change of model, since a distributed table's primary key and unique
constraints must hold the distribution column, and every query of one client stays on one node.

Read from the catalog of a real PostgreSQL after shared/ledger/schema.sql is applied the way the
services apply it (`shared.infra.db.apply_schema`), so a table or key added later is held to it.
"""

from __future__ import annotations

from typing import Final

import asyncpg

from shared.infra.db import apply_schema, create_pool
from tests.databases import private_database

LEDGER_SCHEMAS: Final = ("metering", "billing")

#: Every unique rule of every table in the ledger's schemas: primary keys, unique constraints
#: and unique indexes (one without a constraint binds as much), with their columns in order.
_UNIQUE_KEYS = """
SELECT n.nspname || '.' || t.relname AS table_name,
       coalesce(c.conname, i.relname) AS key_name,
       CASE WHEN x.indisprimary THEN 'primary key' ELSE 'unique' END AS kind,
       array_agg(a.attname ORDER BY k.ordinality) AS columns
  FROM pg_index x
  JOIN pg_class t ON t.oid = x.indrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace
  JOIN pg_class i ON i.oid = x.indexrelid
  LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = t.oid
  CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ordinality)
  LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
 WHERE n.nspname = ANY($1::text[]) AND x.indisunique AND t.relkind IN ('r', 'p')
 GROUP BY 1, 2, 3
 ORDER BY 1, 2
"""

_TABLES = """
SELECT n.nspname || '.' || t.relname AS table_name,
       bool_or(a.attname = 'client_id') AS has_client_id,
       bool_or(c.contype = 'p') AS has_primary_key
  FROM pg_class t
  JOIN pg_namespace n ON n.oid = t.relnamespace
  LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_constraint c ON c.conrelid = t.oid
 WHERE n.nspname = ANY($1::text[]) AND t.relkind IN ('r', 'p')
 GROUP BY 1
 ORDER BY 1
"""


async def test_every_ledger_table_has_a_client_id_and_a_primary_key(pool: asyncpg.Pool) -> None:
    tables = await pool.fetch(_TABLES, list(LEDGER_SCHEMAS))
    assert len(tables) >= 9, [t["table_name"] for t in tables]  # the schema was applied
    for table in tables:
        assert table["has_client_id"], f"{table['table_name']} has no client_id column"
        assert table["has_primary_key"], f"{table['table_name']} has no primary key"


async def test_every_unique_key_of_the_ledger_starts_with_client_id(pool: asyncpg.Pool) -> None:
    """Primary keys, unique constraints and unique indexes of metering.* and billing.* begin
    with client_id, every one of them."""
    keys = await pool.fetch(_UNIQUE_KEYS, list(LEDGER_SCHEMAS))
    assert keys, "no unique keys found: the schema was not applied"
    tables = {key["table_name"] for key in keys}
    assert {"metering.items", "metering.usage_days", "billing.invoices", "billing.notes"} <= tables
    otherwise = {
        key["table_name"]: f"{key['kind']} {key['key_name']} ({', '.join(key['columns'])})"
        for key in keys
        if key["columns"][0] != "client_id"
    }
    assert otherwise == {}


#: billing.invoices and billing.notes as a database from before keyed them: by id alone.
_ID_KEYED = """
CREATE SCHEMA billing;
CREATE TABLE billing.notes (
    note_id text PRIMARY KEY, client_id text NOT NULL, period text NOT NULL, k integer NOT NULL,
    reclassification text NOT NULL, body jsonb NOT NULL, issued_at timestamptz NOT NULL,
    published boolean NOT NULL DEFAULT false,
    UNIQUE (client_id, reclassification), UNIQUE (client_id, period, k));
CREATE TABLE billing.invoices (
    invoice_id text PRIMARY KEY, client_id text NOT NULL, period text NOT NULL,
    body jsonb NOT NULL, issued_at timestamptz NOT NULL, published boolean NOT NULL DEFAULT false);
INSERT INTO billing.invoices VALUES ('acme-2026-10-1', 'acme', '2026-10', '{}', now(), false);
INSERT INTO billing.notes VALUES ('acme-2026-10-n1', 'acme', '2026-10', 1, 'rc-1', '{}', now());
"""


async def test_a_database_keyed_by_ids_alone_is_rekeyed_by_client_at_start(
    database_url: str,
) -> None:
    async with private_database(database_url, "rekey") as url:
        old = await create_pool(url, size=2)
        try:
            await old.execute(_ID_KEYED)
            await apply_schema(old)
            await apply_schema(old)  # a second start changes nothing
            keys = {
                key["table_name"]: list(key["columns"])
                for key in await old.fetch(_UNIQUE_KEYS, ["billing"])
                if key["kind"] == "primary key"
            }
            assert keys["billing.invoices"] == ["client_id", "invoice_id"]
            assert keys["billing.notes"] == ["client_id", "note_id"]
            assert (
                await old.fetchval(  # kept, and still found by its id alone
                    "SELECT client_id FROM billing.invoices WHERE invoice_id = 'acme-2026-10-1'"
                )
                == "acme"
            )
            assert await old.fetchval("SELECT count(*) FROM billing.notes") == 1
        finally:
            await old.close()
