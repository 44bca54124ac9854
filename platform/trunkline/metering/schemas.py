"""The usage event: one per request, keyed by request id so ingest is idempotent."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

import msgspec

# What the ledger can store, checked when an event is read from the stream (``decode_usage``):
# an event that decodes but that PostgreSQL refuses (a count past its ``integer``, a NUL in a
# text, a string longer than its column) failed its whole batch on every retry, and every
# event behind it waited for ever. Refused at decode, it goes to the dead-letter stream alone.
_INT32 = 2**31 - 1
_TEXT = r"^[^\x00]*$"
"""PostgreSQL refuses NUL in text."""
_UUID = r"^[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}$"
_YEAR_10000 = 253_402_300_800.0
"""Seconds since the epoch of 10000-01-01: no timestamp of either database reaches it."""

Count = Annotated[int, msgspec.Meta(ge=0, le=_INT32)]
"""Tokens, a status, milliseconds: none negative (tokens would come off a bill), none past the
ledger's ``integer``."""
Id = Annotated[str, msgspec.Meta(pattern=_UUID)]
Started = Annotated[float, msgspec.Meta(ge=0, lt=_YEAR_10000)]


def _text(max_length: int, min_length: int = 0) -> object:
    return msgspec.Meta(min_length=min_length, max_length=max_length, pattern=_TEXT)


class UsageRecord(msgspec.Struct, frozen=True, kw_only=True):
    request_id: Annotated[str, _text(64, 1)]
    tenant_id: Id
    project_id: Id
    key_id: Annotated[str, _text(32)]
    alias: Annotated[str, _text(200)]
    model: Annotated[str, _text(200)]
    endpoint_kind: Annotated[str, _text(32)]
    """``chat``, ``completions`` or ``embeddings``."""
    tier: Annotated[str, _text(32)]
    stream: bool
    status: Count
    error_code: Annotated[str, _text(64)] | None = None
    pool: Annotated[str, _text(100)] | None = None
    endpoint: Annotated[str, _text(500)] | None = None
    region: Annotated[str, _text(64)] | None = None
    accelerator: Annotated[str, _text(64)] | None = None
    prompt_tokens: Count = 0
    cached_tokens: Count = 0
    completion_tokens: Count = 0
    ttft_ms: float | None = None
    latency_ms: float = 0.0
    started_at: Started = 0.0
    """Seconds since the epoch."""
    ttft_slo_ms: Count | None = None
    """The tier's time-to-first-token SLO when the request was served: SLA attainment is
    judged by it, so changing a tier's SLO never rewrites the attainment of past hours (None:
    recorded before it was kept; the tier's SLO at rollup time applies)."""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(UsageRecord)


def encode_usage(record: UsageRecord) -> bytes:
    return _encoder.encode(record)


def decode_usage(blob: bytes) -> UsageRecord:
    return _decoder.decode(blob)


# --- usage API ----------------------------------------------------------------------------------

GroupBy = Literal["model", "project", "key", "tier", "day"]


class UsageRow(msgspec.Struct, kw_only=True):
    group: str
    """The model, project id, key id, tier or day (``YYYY-MM-DD``) of this row."""
    label: str
    """A readable name for ``group`` (project and key names)."""
    requests: int = 0
    failed_requests: int = 0
    """Requests that failed on the platform's side (metered, not billed)."""
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    list_cost: str = "0"
    cost: str = "0"
    """After contracted discounts, before SLA credits. Costs are decimal strings in plain
    notation (``"0.00000015"``, never ``"1.5E-7"``)."""


class UsageReport(msgspec.Struct, kw_only=True):
    tenant_id: uuid.UUID
    period: str
    currency: str
    group_by: GroupBy
    rows: list[UsageRow]
    total: UsageRow
    pending_hours: int = 0
    """Hours of the period holding usage ingested but not rolled up yet, which the figures
    leave out until the next rollup (every few seconds to a minute): 0 when they are whole."""
