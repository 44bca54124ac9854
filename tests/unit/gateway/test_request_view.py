"""What routing sees of a request: the answer maximum is the one the engine will apply."""

from __future__ import annotations

import json
from typing import Any

import pytest

from trunkline.gateway.authn import Principal
from trunkline.gateway.pipeline import parse_body
from trunkline.gateway.request_view import prompt_text, request_view
from trunkline.snapshot import AliasEntry, KeyEntry, TenantEntry, TierEntry

PRINCIPAL = Principal(
    KeyEntry("k", b"", "t", "p", None, None, None),
    TenantEntry("t", "acme", "gold", (), frozenset({"m"})),
    TierEntry("gold", 100, 500, 50, True),
)
ALIAS = AliasEntry("m", "served", "chat", ("pool",))


@pytest.mark.parametrize(
    ("kind", "body", "expected"),
    [
        ("chat", {"messages": [], "max_tokens": 10, "max_completion_tokens": 40}, 40),
        ("chat", {"messages": [], "max_tokens": 10}, 10),
        # vLLM's completions read max_tokens alone: the other field is ignored there.
        ("completions", {"prompt": "x", "max_tokens": 10, "max_completion_tokens": 4000}, 10),
        # ...and without it end at 16 tokens, vLLM's default; null is no maximum.
        ("completions", {"prompt": "x", "max_completion_tokens": 4000}, 16),
        ("completions", {"prompt": "x", "max_tokens": None}, None),
        ("completions", {"prompt": "x", "echo": True, "max_tokens": 0}, 1),  # scored: one token
        ("embeddings", {"input": "x", "max_tokens": 10}, None),
    ],
)
def test_the_answer_maximum_is_the_field_the_engine_reads(
    kind: str, body: dict[str, Any], expected: int | None
) -> None:
    if kind == "chat":
        body = {**body, "messages": [{"role": "user", "content": "x"}]}
    request = parse_body(kind, json.dumps({"model": "m", **body}).encode())
    view = request_view("r", PRINCIPAL, ALIAS, request, prompt_tokens=1)
    assert view.max_tokens == expected


def test_an_embedded_conversation_is_routed_by_its_messages_text() -> None:
    """vLLM's chat embeddings: routed by their text like a chat, not as an empty prompt."""
    messages = [
        {"role": "system", "content": "policy"},
        {"role": "user", "content": [{"type": "text", "text": "question"}]},
    ]
    request = parse_body("embeddings", json.dumps({"model": "m", "messages": messages}).encode())
    assert prompt_text(request) == "policy\nquestion"
