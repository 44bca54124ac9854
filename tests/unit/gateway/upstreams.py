"""Scripted engine answers for gateway unit tests (vLLM's wire format)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx

USAGE = {
    "prompt_tokens": 21,
    "completion_tokens": 3,
    "total_tokens": 24,
    "prompt_tokens_details": {"cached_tokens": 16},
}


def chat_json(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hi there you"},
                    "finish_reason": "length",
                }
            ],
            "usage": USAGE,
        },
    )


def sse_events(model: str, with_usage: bool) -> list[bytes]:
    def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
        data = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    events = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "hi"}),
        chunk({"content": " there"}),
        chunk({"content": " you"}, "length"),
    ]
    if with_usage:
        usage = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "model": model,
            "choices": [],
            "usage": USAGE,
        }
        events.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


class Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes], fail_after: int | None = None) -> None:
        self.chunks = chunks
        self.fail_after = fail_after

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for index, piece in enumerate(self.chunks):
            if self.fail_after is not None and index == self.fail_after:
                raise httpx.ReadError("engine died")
            yield piece


def chat_any(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    if body.get("stream"):
        include = bool((body.get("stream_options") or {}).get("include_usage"))
        return httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            stream=Chunks(sse_events(body["model"], include)),
        )
    if request.url.path == "/v1/embeddings":
        return httpx.Response(
            200,
            json={
                "object": "list",
                "model": body["model"],
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                "usage": {"prompt_tokens": 4, "total_tokens": 4},
            },
        )
    return chat_json(request)
