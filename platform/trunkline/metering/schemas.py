"""The usage event: one per request, keyed by request id so ingest is idempotent."""

from __future__ import annotations

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


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(UsageRecord)


def encode_usage(record: UsageRecord) -> bytes:
    return _encoder.encode(record)


def decode_usage(blob: bytes) -> UsageRecord:
    return _decoder.decode(blob)
