"""Bad input on every gateway route that takes a body: an OpenAI error with a 4xx status, or
the request served, never a 500. The routes are read from the app, so a new one is walked too
(its test fails until it has a body here)."""

from __future__ import annotations

import json
from typing import Any

import httpx
from litestar import Litestar
from litestar.routes import HTTPRoute
from tests.unit.gateway.conftest import Harness
from tests.unit.gateway.test_gateway import _ready, auth
from tests.unit.gateway.upstreams import chat_any

CHAT = {"model": "llama", "messages": [{"role": "user", "content": "hello"}]}
BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "/v1/chat/completions": ("/v1/chat/completions", CHAT),
    "/v1/completions": ("/v1/completions", {"model": "llama", "prompt": "hello"}),
    "/v1/embeddings": ("/v1/embeddings", {"model": "bge", "input": "hello"}),
    "/v1/deployments/{route}": ("/v1/deployments/llama/chat/completions",
                                {"messages": CHAT["messages"]}),
    "/openai/deployments/{route}": ("/openai/deployments/bge/embeddings?api-version=2024-02-01",
                                    {"input": "hello"}),
}  # fmt: skip
"""The URL a body route is called at and a body it serves, by the route's path."""
FIELDS = (
    "model", "messages", "prompt", "input", "max_tokens", "max_completion_tokens", "n", "best_of",
    "stream", "stream_options", "temperature", "logprobs", "top_logprobs", "prompt_logprobs",
    "echo", "stop", "min_tokens", "cache_salt", "truncate_prompt_tokens", "dimensions",
    "encoding_format", "user",
)  # fmt: skip
"""Fields the gateway reads itself (to route, meter, reserve quota or check), given bad values."""
BAD_VALUES: list[Any] = [
    None, True, -1, 1.5, 1e308, -1e308, 2**70, "", "x" * 10_000, "a\x00b", "1", [], [None],
    [1, "a"], [[1]], {}, {"text": 1}, [{"role": "user", "content": 5}], [{"role": 5}],
    [{"role": "user", "content": [{"type": "text", "text": 5}]}],
    [{"role": "user", "content": [5]}],
]  # fmt: skip
MALFORMED = [
    b"", b"{", b"NaN", b'{"a": Infinity}', b"1e999", b"null", b'"text"', b"[]", b"\xff\xfe",
    b'\xef\xbb\xbf{"model": "llama"}', b"[" * 5_000 + b"]" * 5_000,
]  # fmt: skip


def engine(request: httpx.Request) -> httpx.Response:
    """Scripted engines answering whatever reaches them; embeddings never as a stream (vLLM's
    are not: the scripted chat engine's stream would be a 502 of the gateway's own)."""
    if request.url.path == "/v1/embeddings":
        request = httpx.Request("POST", request.url, json={**json.loads(request.content),
                                                           "stream": False})  # fmt: skip
    return chat_any(request)


def _body_routes(gw: Harness) -> list[tuple[str, dict[str, Any]]]:
    app = gw.client.app
    assert isinstance(app, Litestar)
    found = []
    for route in app.routes:
        if isinstance(route, HTTPRoute) and "POST" in route.methods:
            assert route.path_format in BODIES, f"add a body of {route.path_format} to BODIES"
            found.append(BODIES[route.path_format])
    return found


def _wrong(response: Any, what: str) -> list[str]:
    """What is wrong with ``response``: a 5xx, or an error not in OpenAI's shape."""
    status = response.status_code
    if status >= 500:
        return [f"{what}: {status} {response.text[:200]}"]
    if status >= 400:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            return [f"{what}: {status} not an OpenAI error: {response.text[:200]}"]
        if set(error) != {"message", "type", "param", "code"} or not error["message"]:
            return [f"{what}: {status} {error}"]
    return []


def test_every_body_route_answers_bad_input_with_an_openai_error_never_a_500(
    make_gateway: Any,
) -> None:
    gw, key = _ready(make_gateway, handler=engine, max_body=1024 * 1024)
    wrong: list[str] = []
    routes = _body_routes(gw)
    assert len(routes) >= 5
    for url, body in routes:
        headers = auth(key) | {"content-type": "application/json"}
        for raw in MALFORMED:
            response = gw.client.post(url, content=raw, headers=headers)
            wrong += _wrong(response, f"{url} {raw[:20]!r}")
            if response.status_code != 400:
                wrong.append(f"{url} {raw[:20]!r}: {response.status_code}, not 400")
        for field in FIELDS:  # each in turn, the others valid; a stream too
            for value in BAD_VALUES:
                for stream in (False, True):
                    given = (
                        {**body, "stream": True, field: value} if stream else {**body, field: value}
                    )
                    response = gw.client.post(url, content=json.dumps(given), headers=headers)
                    wrong += _wrong(response, f"{url} {field}={str(value)[:40]!r} stream={stream}")
    assert not wrong, wrong


def test_model_names_out_of_range_are_not_found_in_openai_shape(make_gateway: Any) -> None:
    gw, key = _ready(make_gateway, handler=chat_any)
    wrong: list[str] = []
    for prefix in ("/v1/models/", "/openai/models/"):
        for name in ("x" * 5000, "%00", "%FF", "%E2%80%AE", "a%2Fb", "%2E%2E", "llama%20"):
            response = gw.client.get(prefix + name, headers=auth(key))
            wrong += _wrong(response, prefix + name[:40])
            if response.status_code != 404:
                wrong.append(f"{prefix}{name[:40]}: {response.status_code}, not 404")
    assert not wrong, wrong
