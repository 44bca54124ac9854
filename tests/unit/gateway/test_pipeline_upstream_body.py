"""The body sent upstream carries the tenant's cache salt, and only that one, and none of the
client's engine controls; decoding a body leaves the garbage collector as it found it."""

from __future__ import annotations

import contextlib
import gc
import json

import pytest

from trunkline.errors import InvalidRequest
from trunkline.gateway.pipeline import ENGINE_CONTROLS, parse_body, upstream_body

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
COMPLETION = {"model": "m", "prompt": "hi"}
EMBEDDING = {"model": "m", "input": "hi"}


@pytest.mark.parametrize(
    ("kind", "body", "tenant_salt", "sent"),
    [
        ("chat", CHAT, "salt-a", "salt-a"),
        ("completions", COMPLETION, "salt-a", "salt-a"),
        # vLLM caches the prefixes of causal embedding models (last-token pooling) too, and
        # salts them alike: an isolated tenant's embeddings must not be timed by another.
        ("embeddings", EMBEDDING, "salt-a", "salt-a"),
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


def test_no_engine_control_reaches_the_engine_at_the_top_or_inside_vllm_xargs() -> None:
    controls = {key: {"remote_block_ids": [1]} for key in ENGINE_CONTROLS}
    extras = {**controls, "my_plugin": "on"}
    body = {**CHAT, **controls, "vllm_xargs": extras}
    upstream = upstream_body(parse_body("chat", json.dumps(body).encode()), "served")
    assert set(ENGINE_CONTROLS).isdisjoint(upstream)
    assert upstream["vllm_xargs"] == {"my_plugin": "on"}  # the rest of the extensions' fields stay


def test_a_client_cannot_have_the_engine_publish_its_cached_blocks_again() -> None:
    """``kv_cache_report_mode: "full"`` in vllm_xargs has vLLM 0.32 publish a BlockStored event
    for every cached block each request reuses, on the KV-event stream the gateways share."""
    body = {**CHAT, "vllm_xargs": {"kv_cache_report_mode": "full", "my_plugin": "on"}}
    upstream = upstream_body(parse_body("chat", json.dumps(body).encode()), "served")
    assert upstream["vllm_xargs"] == {"my_plugin": "on"}


@pytest.mark.parametrize("raw", [json.dumps({**CHAT, "x": [[[0]]] * 1000}).encode(), b"{"])
def test_decoding_a_body_leaves_the_garbage_collector_running(raw: bytes) -> None:
    assert gc.isenabled()
    with contextlib.suppress(InvalidRequest):
        parse_body("chat", raw)
    assert gc.isenabled()


@pytest.mark.parametrize(
    ("options", "sent"),
    [
        (None, {"include_usage": True}),
        ({"include_usage": False}, {"include_usage": True}),
        # vLLM gives usage in every chunk only with include_usage: a client asking for
        # continuous_usage_stats alone gets none, and must not through the gateway either.
        ({"continuous_usage_stats": True}, {"include_usage": True}),
        (
            {"include_usage": True, "continuous_usage_stats": True},
            {"include_usage": True, "continuous_usage_stats": True},
        ),
    ],
)
def test_a_stream_asks_the_engine_for_the_usage_the_gateway_meters_and_no_more(
    options: dict[str, bool] | None, sent: dict[str, bool]
) -> None:
    body = {**CHAT, "stream": True, "stream_options": options}
    request = parse_body("chat", json.dumps(body).encode())
    assert upstream_body(request, "served")["stream_options"] == sent
