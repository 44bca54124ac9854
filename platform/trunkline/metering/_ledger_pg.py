"""The PostgreSQL ledger write: COPY a batch into a staging table, then one statement inserts
the new events (``ON CONFLICT DO NOTHING`` on request id), bumps the rollup watermark of every
tenant-hour that got new events and records the keys' last use.

COPY moves a batch in one round trip, and only events that were really inserted (not
redeliveries) touch watermarks and keys, because both read the INSERT's ``RETURNING``.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec
from sqlalchemy.orm import Session

from trunkline.metering.schemas import UsageRecord

_STAGING_TYPES = {
    "request_id": "text",
    "tenant_id": "uuid",
    "project_id": "uuid",
    "key_id": "text",
    "alias": "text",
    "model": "text",
    "endpoint_kind": "text",
    "tier": "text",
    "stream": "boolean",
    "status": "integer",
    "error_code": "text",
    "pool": "text",
    "endpoint": "text",
    "region": "text",
    "accelerator": "text",
    "prompt_tokens": "integer",
    "cached_tokens": "integer",
    "completion_tokens": "integer",
    "ttft_ms": "double precision",
    "latency_ms": "double precision",
    "started_at": "double precision",
    "ttft_slo_ms": "integer",
}
_LEDGER_NAME = {"key_id": "api_key_id"}


@functools.cache
def _statements() -> tuple[str, str]:
    """Staging DDL (columns in ``UsageRecord`` field order, so a record COPYs as its tuple)
    and the insert; built on first use from the record's fields so neither can drift."""
    fields = UsageRecord.__struct_fields__
    if set(fields) != set(_STAGING_TYPES):
        raise RuntimeError("UsageRecord fields and the ledger staging table differ")
    columns = ", ".join(f"{name} {_STAGING_TYPES[name]}" for name in fields)
    ddl = f"CREATE TEMP TABLE IF NOT EXISTS usage_staging ({columns}) ON COMMIT DELETE ROWS"
    targets = ", ".join(_LEDGER_NAME.get(name, name) for name in fields)
    sources = ", ".join("to_timestamp(started_at)" if n == "started_at" else n for n in fields)
    # column names come from the record type, never from input
    insert = f"""
WITH ins AS (
    INSERT INTO usage_events ({targets}) SELECT {sources} FROM usage_staging
    ON CONFLICT DO NOTHING
    RETURNING tenant_id, api_key_id, started_at
), marks AS (
    INSERT INTO usage_rollup_watermarks (tenant_id, hour, changed_seq, rolled_seq)
    SELECT tenant_id, hour, 1, 0 FROM (
        SELECT DISTINCT tenant_id, date_trunc('hour', started_at, 'UTC') AS hour FROM ins
    ) AS touched
    ORDER BY tenant_id, hour
    ON CONFLICT (tenant_id, hour)
    DO UPDATE SET changed_seq = usage_rollup_watermarks.changed_seq + 1
    RETURNING 1
), keys AS (
    UPDATE api_keys SET last_used_at = used.last
    FROM (SELECT api_key_id, max(started_at) AS last FROM ins GROUP BY api_key_id) AS used
    WHERE api_keys.key_id = used.api_key_id
      AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < used.last)
    RETURNING 1
)
SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM marks), (SELECT count(*) FROM keys)
"""  # noqa: S608
    return ddl, insert


def write_usage_pg(session: Session, records: list[UsageRecord]) -> int:
    """Write ``records`` in the session's transaction; returns how many were new.

    Call it once per transaction: the staging table empties at commit (or rollback).
    """
    ddl, insert = _statements()
    connection: Any = session.connection().connection.driver_connection
    astuple = msgspec.structs.astuple
    with connection.cursor() as cursor:
        cursor.execute(ddl)
        with cursor.copy("COPY usage_staging FROM STDIN") as copy:
            for record in records:
                copy.write_row(astuple(record))
        cursor.execute(insert)
        inserted, _marks, _keys = cursor.fetchone()
    return int(inserted)
