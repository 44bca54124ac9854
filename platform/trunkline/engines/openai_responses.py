"""Responses of the simulated vLLM server: bodies and SSE chunks shaped exactly like vLLM's.

Pure functions building plain dicts for JSON encoding: the same fields, in the same places and
with the same nulls as vLLM's OpenAI-compatible server, so clients and the gateway cannot tell
a simulated engine from a real one by its responses.
"""

from __future__ import annotations

import base64
import itertools
import uuid
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from trunkline.engines.events import RequestUsage
from trunkline.engines.tokens import TokenLogprob, detokenize

__all__ = ["Answer", "Reply", "embeddings_body", "logprobs_body", "model_list_body", "usage_body"]

Json = dict[str, Any]


def model_list_body(model: str, created: int, max_model_len: int) -> Json:
    """``GET /v1/models`` for a server that serves one model."""
    permission = {
        "id": f"modelperm-{uuid.uuid4().hex}",
        "object": "model_permission",
        "created": created,
        "allow_create_engine": False,
        "allow_sampling": True,
        "allow_logprobs": True,
        "allow_search_indices": False,
        "allow_view": True,
        "allow_fine_tuning": False,
        "organization": "*",
        "group": None,
        "is_blocking": False,
    }
    card = {
        "id": model,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": model,
        "parent": None,
        "max_model_len": max_model_len,
        "permission": [permission],
    }
    return {"object": "list", "data": [card]}


def embeddings_body(
    model: str, created: int, vectors: list[list[float]], encoding: str, prompt_tokens: int
) -> Json:
    """``POST /v1/embeddings``; ``base64`` packs little-endian float32 as OpenAI's does."""
    data = [
        {"index": index, "object": "embedding", "embedding": _encode(vector, encoding)}
        for index, vector in enumerate(vectors)
    ]
    return {
        "id": f"embd-{uuid.uuid4().hex}",
        "object": "list",
        "created": created,
        "model": model,
        "data": data,
        "usage": usage_body(prompt_tokens, 0, None),
    }


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(array("f", vector).tobytes()).decode()
    return vector


def usage_body(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None) -> Json:
    details = None if cached_tokens is None else {"cached_tokens": cached_tokens}
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": details,
    }


def logprobs_body(
    kind: Literal["chat", "completion"], tokens: Sequence[TokenLogprob], text_offset: int = 0
) -> Json:
    """A choice's ``logprobs`` for ``tokens``, in vLLM's shape for ``kind``; a completion's
    ``text_offset`` counts from ``text_offset`` (the answer's characters sent before)."""
    texts = [detokenize((token.token_id,)) for token in tokens]
    if kind == "chat":
        return {
            "content": [
                {**_chat_logprob(text, token.logprob), "top_logprobs": _chat_top(token)}
                for text, token in zip(texts, tokens, strict=True)
            ]
        }
    return {
        "text_offset": list(itertools.accumulate(map(len, texts[:-1]), initial=text_offset)),
        "token_logprobs": [token.logprob for token in tokens],
        "tokens": texts,
        "top_logprobs": [
            {detokenize((other,)): logprob for other, logprob in token.top} for token in tokens
        ],
    }


def _chat_logprob(text: str, logprob: float) -> Json:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode())}


def _chat_top(token: TokenLogprob) -> list[Json]:
    return [_chat_logprob(detokenize((other,)), logprob) for other, logprob in token.top]


@dataclass(frozen=True, slots=True)
class Answer:
    """One choice of a non-streamed response."""

    text: str
    finish_reason: str
    logprobs: Json | None = None
    stop_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """Builds the response body or SSE chunks of one chat or text completion."""

    kind: Literal["chat", "completion"]
    id: str
    created: int
    model: str

    @classmethod
    def new(cls, kind: Literal["chat", "completion"], model: str, created: int) -> Reply:
        prefix = "chatcmpl-" if kind == "chat" else "cmpl-"
        return cls(kind, prefix + uuid.uuid4().hex, created, model)

    def _envelope(self, choices: list[Json], *, chunk: bool) -> Json:
        suffix = ".chunk" if chunk else ""
        name = "chat.completion" + suffix if self.kind == "chat" else "text_completion"
        return {
            "id": self.id,
            "object": name,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def chunks(
        self,
        text: str,
        finish_reason: str | None,
        *,
        first: bool,
        logprobs: Json | None = None,
        index: int = 0,
        running: tuple[int, int] | None = None,
        stop_reason: str | None = None,
    ) -> list[Json]:
        """SSE payloads for one token of choice ``index`` (with its ``logprobs``, when asked
        for); a chat answer's first token is preceded by its role chunk. ``running`` (the
        choice's prompt tokens and tokens sent, this one included) puts that usage in every
        payload, as vLLM's ``continuous_usage_stats`` do."""
        payloads: list[Json] = []
        if self.kind == "chat":
            if first:
                delta = {"role": "assistant", "content": ""}
                role = self._envelope(
                    [self._stream_choice(index, "delta", delta, None)], chunk=True
                )
                if running is not None:
                    role["usage"] = self._running_usage(running[0], 0)
                payloads.append(role)
            content = {"content": text}
            choice = self._stream_choice(index, "delta", content, finish_reason, logprobs)
        else:
            choice = self._stream_choice(index, "text", text, finish_reason, logprobs)
            choice.setdefault("stop_reason", None)
        if stop_reason is not None:
            choice["stop_reason"] = stop_reason
        payload = self._envelope([choice], chunk=True)
        if running is not None:
            payload["usage"] = self._running_usage(*running)
        payloads.append(payload)
        return payloads

    def _running_usage(self, prompt_tokens: int, completion_tokens: int) -> Json:
        usage: Json = {
            "prompt_tokens": prompt_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "completion_tokens": completion_tokens,
        }
        if self.kind == "chat":  # vLLM's chat chunks say it, its completion chunks do not
            usage["completion_tokens_details"] = None
        return usage

    @staticmethod
    def _stream_choice(
        index: int,
        field: str,
        value: object,
        finish_reason: str | None,
        logprobs: Json | None = None,
    ) -> Json:
        choice: Json = {
            "index": index,
            field: value,
            "logprobs": logprobs,
            "finish_reason": finish_reason,
        }
        if finish_reason is not None:
            choice["stop_reason"] = None
        return choice

    def usage_chunk(self, usage: RequestUsage) -> Json:
        body = self._envelope([], chunk=True)
        body["usage"] = usage_body(
            usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens
        )
        return body

    def full(self, answers: Sequence[Answer], usage: RequestUsage) -> Json:
        """The non-streamed response body: one choice per answer, in order."""
        choices = []
        for index, answer in enumerate(answers):
            if self.kind == "chat":
                message: Json = {
                    "role": "assistant",
                    "content": answer.text,
                    "refusal": None,
                    "annotations": None,
                    "audio": None,
                    "function_call": None,
                    "reasoning": None,  # vLLM leaves out an empty tool_calls
                }
                choice: Json = {"index": index, "message": message, "logprobs": answer.logprobs}
            else:
                choice = {"index": index, "text": answer.text, "logprobs": answer.logprobs}
            choice.update(finish_reason=answer.finish_reason, stop_reason=answer.stop_reason)
            choices.append(choice)
        body = self._envelope(choices, chunk=False)
        body["usage"] = usage_body(
            usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens
        )
        return body
