"""Replay a finished (non-streamed) completion as the SSE stream a streaming client expects.

The events follow vLLM's and OpenAI's chunk shapes: a role chunk, the content (with the tool
calls and reasoning, if any), a chunk with the finish reason, then, when the client asked for
``stream_options.include_usage``, a usage chunk with no choices, and ``data: [DONE]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgspec

_DONE = b"data: [DONE]\n\n"
_EXTRA_FIELDS = ("reasoning_content", "reasoning", "refusal")
"""Fields of an answer's message besides content and tool calls that a stream's deltas carry."""
_ENVELOPE_EXTRAS = ("system_fingerprint", "service_tier")
"""Fields of a whole answer besides id, created and model that each of its chunks carries."""


def replay_chunks(kind: str, document: dict[str, Any], include_usage: bool) -> Iterator[Any]:
    """The chunk objects, in order, of ``document`` (a chat or text completion)."""
    choices = [c for c in document.get("choices") or () if isinstance(c, dict)]
    envelope = {
        "id": document.get("id", ""),
        "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
        "created": document.get("created", 0),
        "model": document.get("model", ""),
    }
    for field in _ENVELOPE_EXTRAS:  # on every chunk of a stream, as vLLM and OpenAI send them
        if field in document:
            envelope[field] = document[field]
    extra = {"usage": None} if include_usage else {}
    for choice in choices:
        index = choice.get("index", 0)
        if kind == "chat":
            message = choice.get("message") or {}
            opening = {"role": message.get("role", "assistant"), "content": ""}
            yield {**envelope, "choices": [_delta(index, opening, None, None)], **extra}
            body = _delta(index, _message_delta(message), choice.get("logprobs"), None)
            yield {**envelope, "choices": [body], **extra}
            closing = _delta(index, {}, None, choice.get("finish_reason"))
        else:
            text = {"index": index, "text": choice.get("text") or "", "finish_reason": None}
            yield {**envelope, "choices": [{**text, "logprobs": choice.get("logprobs")}], **extra}
            closing = {"index": index, "text": "", "logprobs": None}
            closing["finish_reason"] = choice.get("finish_reason")
        yield {**envelope, "choices": [closing], **extra}
    if include_usage:
        yield {**envelope, "choices": [], "usage": document.get("usage")}


async def replay_events(kind: str, payload: bytes, include_usage: bool) -> AsyncIterator[bytes]:
    """``replay_chunks`` as SSE bytes, ending with ``data: [DONE]``."""
    document = msgspec.json.decode(payload)
    for chunk in replay_chunks(kind, document, include_usage):
        yield b"data: " + msgspec.json.encode(chunk) + b"\n\n"
    yield _DONE


def _message_delta(message: dict[str, Any]) -> dict[str, Any]:
    """The whole answer as one delta: its content, the tool calls (each with its ``index``, as
    streamed tool calls carry one) and vLLM's reasoning and refusal fields when set."""
    delta: dict[str, Any] = {"content": message.get("content") or ""}
    for field in _EXTRA_FIELDS:
        if message.get(field):
            delta[field] = message[field]
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        delta["tool_calls"] = [
            {"index": index, **call} for index, call in enumerate(calls) if isinstance(call, dict)
        ]
    return delta


def _delta(index: int, delta: dict[str, Any], logprobs: Any, finish: Any) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
