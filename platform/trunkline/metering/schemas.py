"""The usage event: one per request, keyed by request id so ingest is idempotent."""

from __future__ import annotations

import uuid
from typing import Literal

import msgspec


class UsageRecord(msgspec.Struct, frozen=True, kw_only=True):
    request_id: str
    tenant_id: str
    project_id: str
    key_id: str
    alias: str
    model: str
    endpoint_kind: str
    """``chat``, ``completions`` or ``embeddings``."""
    tier: str
    stream: bool
    status: int
    error_code: str | None = None
    pool: str | None = None
    endpoint: str | None = None
    region: str | None = None
    accelerator: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    latency_ms: float = 0.0
    started_at: float = 0.0
    """Seconds since the epoch."""
    ttft_slo_ms: int | None = None
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
