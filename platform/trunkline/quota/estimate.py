"""How many tokens a request reserves before it is sent: a prompt estimate plus its completion
budget. Pure functions over the parsed JSON body; no tokenizer.

The estimate errs high on purpose (one token per three UTF-8 bytes, plus a chat template's
overhead per message): what a reservation over-estimates is refunded at settle, what it
under-estimates is what lets concurrent requests overshoot a limit. A chat request counts every
text the template renders: message contents, tool calls and their results, and the ``tools``
definitions and ``documents`` as JSON. Media parts count a fixed :data:`MEDIA_PART_TOKENS`, not
their bytes.
"""

from __future__ import annotations

from typing import Any, Final, TypeGuard

import msgspec

BYTES_PER_TOKEN: Final = 3
PER_MESSAGE_TOKENS: Final = 8
"""Role, separators and special tokens a chat template wraps around each message."""
PER_REQUEST_TOKENS: Final = 8
"""The generation prompt and beginning-of-sequence tokens of a chat request."""
MEDIA_PART_TOKENS: Final = 4096
"""What one non-text content part (an image, audio or video, inline or by URL) reserves. The
model's processor decides its tokens from pixels or samples, not from the part's bytes: a 1 MB
base64 image counted as text would reserve 350k tokens. 4,096 is above most single-image
encodings (LLaVA 576, Llama 3.2 Vision up to 6,404 in four tiles, Qwen2-VL by resolution);
settle corrects it to what the engine reported."""
MAX_COMPLETION_BUDGET: Final = 2**31 - 1
"""The most completion tokens one request reserves, whatever ``max_tokens`` and ``n`` say: far
above what any engine generates, and small enough that the Redis counters stay integers (a
``max_tokens`` of 10**20 made the reserve script fail, a 500 for tenants without a token limit)."""
COMPLETIONS_DEFAULT_MAX_TOKENS: Final = 16
"""The answer maximum of a ``/v1/completions`` request without ``max_tokens`` (vLLM's and
OpenAI's default); one that sends ``max_tokens: null`` has none (what the context leaves)."""
_PAYLOAD = {"chat": "messages", "completions": "prompt", "embeddings": "input"}
_RENDERED_KEYS = ("tools", "functions", "documents")
"""Request fields a chat template renders into the prompt besides the messages: tool
definitions (``functions``: the legacy name) and a RAG template's ``documents``."""


def estimate_prompt_tokens(
    kind: str, body: dict[str, Any], *, context_length: int | None = None
) -> int:
    """The prompt estimate, each prompt at most :func:`prompt_limit` of the body."""
    limit = prompt_limit(body, context_length)
    conversations = chat_conversations(kind, body)
    if conversations is not None:
        rendered = [body.get(key) for key in _RENDERED_KEYS]
        return sum(_at_most(_chat_tokens(c, rendered), limit) for c in conversations)
    payload = body.get(_PAYLOAD[kind])
    return sum(_at_most(tokens, limit) for tokens in _prompt_lengths(payload))


def chat_conversations(kind: str, body: dict[str, Any]) -> list[list[Any]] | None:
    """The conversations a request has rendered by a chat template: a chat's ``messages``;
    on embeddings (vLLM's chat embeddings), ``messages`` or an ``input`` of messages, one
    conversation or a list of them. None: the prompt is text or token ids."""
    if kind == "chat":
        messages = body.get("messages")
        return [messages] if isinstance(messages, list) else None
    if kind != "embeddings":
        return None
    payload = body.get("messages")
    if payload is None:
        payload = body.get("input")
    if is_conversation(payload):
        return [payload]
    if isinstance(payload, list) and payload and all(is_conversation(c) for c in payload):
        return payload
    return None


def is_conversation(value: object) -> TypeGuard[list[Any]]:
    """A non-empty list of chat messages (objects with a string ``role``), as vLLM tells one."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in value)
    )


def prompt_limit(body: dict[str, Any], context_length: int | None) -> int | None:
    """The most tokens the engine runs of one prompt: vLLM truncates it to the request's
    ``truncate_prompt_tokens`` (-1: to the context window), and refuses, unrun, one longer than
    the model's ``context_length``. An embeddings client sends whole documents with
    ``truncate_prompt_tokens: 512``: counted whole, a batch of them was refused as larger than a
    token limit it fitted. None: no limit known."""
    truncate = body.get("truncate_prompt_tokens")
    limits = [context_length] if context_length is not None else []
    if _positive_int(truncate):
        limits.append(truncate)
    return min(limits, default=None)


def _at_most(tokens: int, limit: int | None) -> int:
    return tokens if limit is None else min(tokens, limit)


def completion_budget(
    kind: str, body: dict[str, Any], cap: int, *, context_length: int | None = None
) -> int:
    """Completion tokens to reserve: the maximum the engine will generate per answer, times
    ``n`` and the number of prompts; ``cap`` per answer when there is no maximum (chat without
    one, completions with ``max_tokens: null``). The maximum is :func:`completion_maximum`.
    Embeddings generate none.

    A maximum the client set is reserved whole (as OpenAI counts it; at most
    :data:`MAX_COMPLETION_BUDGET`): the engine generates up to it, and a reservation below it
    would let a request spend far past a budget (``max_tokens: 100000`` against 5,000 tokens
    left). One too large to fit is refused with *Lower max_tokens*. No answer is longer than
    the model's ``context_length`` (prompt included), so none reserves more than that."""
    if kind == "embeddings":
        return 0
    count = answer_count(kind, body)
    asked = completion_maximum(kind, body)
    budget = min((cap if asked is None else asked) * count, MAX_COMPLETION_BUDGET)
    if context_length is not None:
        budget = min(budget, context_length * count)
    return budget


def answers_per_prompt(body: dict[str, Any]) -> int:
    """``n``: how many answers the engine generates for each prompt (1 unless a positive
    integer says otherwise)."""
    choices = body.get("n")
    return choices if _positive_int(choices) else 1


def answer_count(kind: str, body: dict[str, Any]) -> int:
    """How many answers the engine generates side by side: ``n`` for each prompt, and on
    completions one prompt per item of a list of them."""
    count = answers_per_prompt(body)
    if kind == "completions":
        count *= _prompt_count(body.get("prompt"))
    return count


def completion_field(kind: str, body: dict[str, Any]) -> str | None:
    """The field vLLM reads an answer's maximum from: ``max_completion_tokens`` before
    ``max_tokens`` on chat, ``max_tokens`` alone on completions (which ignore the other, so a
    small ``max_completion_tokens`` there must not shrink the reservation); None for
    embeddings."""
    if kind == "chat":
        return "max_completion_tokens" if body.get("max_completion_tokens") else "max_tokens"
    return "max_tokens" if kind == "completions" else None


def completion_maximum(kind: str, body: dict[str, Any]) -> int | None:
    """The most tokens the client lets one answer have (:func:`completion_field`), on
    completions without ``max_tokens`` their default of 16; None when unset (or not a positive
    integer, which the gateway refuses before it reserves)."""
    field = completion_field(kind, body)
    if kind == "completions" and "max_tokens" not in body:
        return COMPLETIONS_DEFAULT_MAX_TOKENS
    asked = None if field is None else body.get(field)
    if asked == 0 and kind == "completions" and body.get("echo") is True:
        return 1  # a prompt scored (echoed, nothing shown): vLLM generates one token all the same
    return asked if _positive_int(asked) else None


def _prompt_count(prompt: object) -> int:
    """How many prompts a completions ``prompt`` holds: a list of texts or of token-id lists
    is one per item; a text or one list of token ids is one."""
    if isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt):
        return len(prompt)
    return 1


def _positive_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _prompt_lengths(payload: object) -> list[int]:
    """The estimate of each prompt of a completions ``prompt`` or an embeddings ``input``:
    a text, texts, token ids (one prompt) or lists of token ids."""
    if isinstance(payload, str):
        return [_tokens(_utf8_len(payload))]
    if not isinstance(payload, list):
        return []
    if all(isinstance(item, int) for item in payload):
        return [len(payload)]  # one prompt as token ids
    lengths = []
    for item in payload:
        if isinstance(item, int):
            lengths.append(1)
        elif isinstance(item, list):
            lengths.append(len(item))
        elif isinstance(item, str):
            lengths.append(_tokens(_utf8_len(item)))
    return lengths


def _chat_tokens(messages: list[Any], rendered: list[object]) -> int:
    size = media = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        for key, value in message.items():
            if key == "role":
                continue  # in PER_MESSAGE_TOKENS
            if key == "content" and isinstance(value, list):
                for part in value:
                    if _is_media(part):
                        media += 1
                    elif isinstance(part, dict):  # its text, under "text", "refusal"...
                        size += sum(_text_bytes(v) for k, v in part.items() if k != "type")
                    else:
                        size += _text_bytes(part)
            else:
                size += _text_bytes(value)
    size += sum(_json_bytes(field) for field in rendered if field)
    return (
        _tokens(size)
        + MEDIA_PART_TOKENS * media
        + PER_MESSAGE_TOKENS * len(messages)
        + PER_REQUEST_TOKENS
    )


_TEXT_PARTS: Final = frozenset(
    {"text", "input_text", "output_text", "refusal", "thinking", "tool_reference"}
)
"""Content part types vLLM renders as text (``renderers/chat_utils.py``): the Responses API's
``input_text`` and ``output_text``, an assistant's ``refusal`` and ``thinking`` parts as
clients send their history back, and ``tool_reference`` (a tool's name)."""


def _is_media(part: object) -> bool:
    """A typed content part that is not text: ``image_url``, ``input_audio``, ``video_url``…"""
    if not isinstance(part, dict):
        return False
    kind = part.get("type")
    return kind is not None and (not isinstance(kind, str) or kind not in _TEXT_PARTS)


def _json_bytes(value: object) -> int:
    """Bytes of ``value`` as JSON, keys included, as a template prints tool definitions."""
    try:
        return len(msgspec.json.encode(value))
    except (TypeError, ValueError, OverflowError):  # not JSON-shaped: count its strings
        return _text_bytes(value)


def _text_bytes(content: object) -> int:
    """Bytes of every string in a message's field (a string, or lists and objects of them)."""
    if isinstance(content, str):
        return _utf8_len(content)
    if isinstance(content, list):
        return sum(_text_bytes(part) for part in content)
    if isinstance(content, dict):
        return sum(_text_bytes(value) for value in content.values())
    return 0


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def _tokens(byte_count: int) -> int:
    return -(-byte_count // BYTES_PER_TOKEN)
