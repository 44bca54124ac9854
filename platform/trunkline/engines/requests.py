"""One request inside the engine model: its tokens, progress and how it samples."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from trunkline.engines.events import FinishReason, RequestUsage
from trunkline.engines.kv_cache import BlockHash
from trunkline.engines.tokens import FIRST_ORDINARY_ID, VOCAB_SIZE, detokenize

__all__ = ["EngineRequest", "check_request", "find_stop"]

_SPAN = VOCAB_SIZE - FIRST_ORDINARY_ID


def check_request(num_prompt_tokens: int, max_tokens: int, max_model_len: int) -> None:
    """Raise ``ValueError`` for a request vLLM would refuse (its HTTP 400)."""
    if num_prompt_tokens < 1:
        raise ValueError("prompt must contain at least one token")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    if num_prompt_tokens + max_tokens > max_model_len:
        raise ValueError(
            f"{num_prompt_tokens} prompt tokens + {max_tokens} max_tokens exceed "
            f"max_model_len {max_model_len}"
        )


@dataclass(slots=True, eq=False)
class EngineRequest:
    req_id: str
    token_ids: list[int]
    """The prompt, then every generated token."""
    num_prompt_tokens: int
    max_tokens: int
    arrival_time: float
    rng: random.Random
    cache_salt: str | None
    output_tokens: Sequence[int] | None
    block_hashes: list[BlockHash] = field(default_factory=list)
    ends_at_max: bool = False
    """Its ``max_tokens`` is where the model's answer ends (an end-of-sequence token), not a
    cap it hit: the simulated server's stand-in for a chat answer with no maximum set."""
    stop_texts: tuple[str, ...] = ()
    """Stop strings: the answer ends with the token that completes one of them (vLLM checks
    them as it detokenizes, and aborts the request in its engine core)."""
    min_tokens: int = 0
    """Stop strings are looked for only in the tokens after the first ``min_tokens``."""
    remote_prefill: bool = False
    """Its prompt's KV comes from another engine's prefill (prefill/decode disaggregation, vLLM's
    ``kv_transfer_params`` with ``do_remote_prefill``): when first scheduled, the whole prompt
    but its last token counts as computed, with blocks allocated for it and no compute spent;
    the last token is recomputed for its logits, as vLLM does. After a preemption the KV is
    gone and the prompt is prefilled here."""
    num_computed_tokens: int = 0
    cached_tokens: int = -1
    """Prompt tokens found in the prefix cache when first scheduled (-1 before)."""
    num_preemptions: int = 0
    queued_time: float = 0.0
    """When the scheduler took it in: the start of the first step after it arrived (vLLM's
    engine core adds new requests between steps). Its queue time starts here."""
    scheduled_time: float = 0.0
    """When the request was first scheduled: its queue time ends, its prefill starts."""
    first_token_time: float = 0.0
    last_token_time: float = 0.0

    @classmethod
    def new(
        cls,
        req_id: str,
        prompt_tokens: Sequence[int],
        max_tokens: int,
        now: float,
        *,
        sampling_key: str,
        cache_salt: str | None,
        output_tokens: Sequence[int] | None,
        ends_at_max: bool = False,
        remote_prefill: bool = False,
        stop_texts: Sequence[str] = (),
        min_tokens: int = 0,
    ) -> EngineRequest:
        return cls(
            req_id=req_id,
            token_ids=list(prompt_tokens),
            num_prompt_tokens=len(prompt_tokens),
            max_tokens=max_tokens,
            arrival_time=now,
            rng=random.Random(sampling_key),
            cache_salt=cache_salt,
            output_tokens=output_tokens,
            ends_at_max=ends_at_max,
            remote_prefill=remote_prefill,
            stop_texts=tuple(text for text in stop_texts if text),
            min_tokens=min_tokens,
        )

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def tokens_left(self) -> int:
        """Tokens still to generate, the next one included."""
        left = self.max_tokens - self.num_output_tokens
        if self.output_tokens is not None:
            left = min(left, len(self.output_tokens) - self.num_output_tokens)
        return left

    def next_tokens(self, count: int) -> list[int]:
        """The next ``count`` generated tokens: the script's, or uniform random ids."""
        if self.output_tokens is not None:
            start = self.num_output_tokens
            return list(self.output_tokens[start : start + count])
        draw = self.rng.random
        return [FIRST_ORDINARY_ID + int(draw() * _SPAN) for _ in range(count)]

    def finish_reason(self) -> FinishReason | None:
        """Why the request ends after its latest token, if it does."""
        generated = self.num_output_tokens
        if self.stop_texts and self._stop_text_met():
            return "stop"
        if generated >= self.max_tokens:
            return "stop" if self.ends_at_max else "length"
        if self.output_tokens is not None and generated >= len(self.output_tokens):
            return "stop"
        return None

    def _stop_text_met(self) -> bool:
        """A stop string ends in the latest token's text, past ``min_tokens`` (every token
        reads as one character at least: the last ``longest`` tokens hold any such string)."""
        if self.num_output_tokens <= self.min_tokens:
            return False
        longest = max(len(text) for text in self.stop_texts)
        start = max(self.num_prompt_tokens, len(self.token_ids) - longest)
        tail = detokenize(self.token_ids[start:])
        latest = len(detokenize(self.token_ids[-1:]))
        return find_stop(tail, latest, self.stop_texts) is not None

    def usage(self, now: float) -> RequestUsage:
        return RequestUsage(
            prompt_tokens=self.num_prompt_tokens,
            completion_tokens=self.num_output_tokens,
            cached_tokens=max(self.cached_tokens, 0),
            e2e_latency=now - self.arrival_time,
            num_preemptions=self.num_preemptions,
            ttft=self.first_token_time - self.arrival_time,
            engine_ttft=self.first_token_time - self.queued_time,
        )


def find_stop(text: str, new_chars: int, stop_texts: Sequence[str]) -> tuple[str, int] | None:
    """The stop string that ``text``'s last ``new_chars`` characters complete, and where it
    starts; as vLLM's detokenizer, the first such in the request's order (None: none)."""
    if not new_chars:
        return None
    for stop in stop_texts:
        at = text.find(stop, max(len(text) + 1 - new_chars - len(stop), 0))
        if at >= 0:
            return stop, at
    return None
