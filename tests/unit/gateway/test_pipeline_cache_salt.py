"""The body sent upstream carries the tenant's cache salt, and only that one."""

from __future__ import annotations

import json

import pytest

from trunkline.gateway.pipeline import parse_body, upstream_body

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": "m", "prompt": "hi"}
EMBEDDING = {"model": "m", "input": "hi"}


@pytest.mark.parametrize(
    ("kind", "body", "tenant_salt", "sent"),
    [
        ("chat", CHAT, "salt-a", "salt-a"),
        ("completions", COMPLETION, "salt-a", "salt-a"),
        ("embeddings", EMBEDDING, "salt-a", None),
        ("chat", CHAT, None, None),
        ("chat", {**CHAT, "cache_salt": "salt-b"}, "salt-a", "salt-a"),
        ("chat", {**CHAT, "cache_salt": "salt-b"}, None, None),
        ("embeddings", {**EMBEDDING, "cache_salt": "salt-b"}, None, None),
    ],
)
def test_upstream_cache_salt(
    kind: str, body: dict[str, object], tenant_salt: str | None, sent: str | None
) -> None:
    request = parse_body(kind, json.dumps(body).encode(), cache_salt=tenant_salt)
    upstream = upstream_body(request, "served")
    assert upstream.get("cache_salt") == sent
    assert upstream["model"] == "served"
