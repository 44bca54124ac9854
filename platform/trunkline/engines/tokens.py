"""A deterministic toy tokenizer, chat template and text generator for the engine simulator.

Nothing here models a real vocabulary. What matters is what routing and caching see: the same
text always gives the same ids (in every process — no use of Python's salted ``hash``), token
counts grow like a real BPE's (about one token per short word, long words split in 4-character
pieces), and chat messages are encoded one by one so that conversations sharing their first
messages share a token prefix, which is what prefix caching keys on.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from array import array
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import NamedTuple

__all__ = [
    "BOS",
    "FIRST_ORDINARY_ID",
    "IM_END",
    "IM_START",
    "VOCAB_SIZE",
    "ChatMessage",
    "TokenLogprob",
    "answer_logprobs",
    "apply_chat_template",
    "detokenize",
    "embed_tokens",
    "logprob_seed",
    "tokenize",
]

VOCAB_SIZE = 32_000
BOS = 1
IM_START = 2
IM_END = 3
FIRST_ORDINARY_ID = 16  # ids below are reserved for special tokens
_MAX_PIECE_CHARS = 4

# A run of whitespace sticks to the piece after it, as in byte-level BPEs; trailing whitespace
# becomes a piece of its own.
_PIECES = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"


class ChatMessage(NamedTuple):
    """One chat turn, reduced to plain text."""

    role: str
    content: str


@lru_cache(maxsize=1 << 16)
def _piece_id(piece: str) -> int:
    digest = hashlib.blake2b(piece.encode(), digest_size=8).digest()
    return FIRST_ORDINARY_ID + int.from_bytes(digest, "little") % (VOCAB_SIZE - FIRST_ORDINARY_ID)


def tokenize(text: str) -> list[int]:
    """Encode ``text`` as token ids in ``[FIRST_ORDINARY_ID, VOCAB_SIZE)``."""
    ids: list[int] = []
    for match in _PIECES.finditer(text):
        piece = match.group()
        word = piece.lstrip()
        if len(word) <= _MAX_PIECE_CHARS:
            ids.append(_piece_id(piece))
            continue
        space = piece[: len(piece) - len(word)]
        ids.append(_piece_id(space + word[:_MAX_PIECE_CHARS]))
        ids.extend(
            _piece_id(word[start : start + _MAX_PIECE_CHARS])
            for start in range(_MAX_PIECE_CHARS, len(word), _MAX_PIECE_CHARS)
        )
    return ids


def apply_chat_template(messages: Iterable[ChatMessage]) -> list[int]:
    """Encode a conversation ChatML-style and append the assistant generation prompt."""
    ids = [BOS]
    for message in messages:
        ids.append(IM_START)
        ids.extend(tokenize(message.role + "\n"))
        ids.extend(tokenize(message.content))
        ids.append(IM_END)
    ids.append(IM_START)
    ids.extend(tokenize("assistant\n"))
    return ids


@lru_cache(maxsize=1 << 15)
def _pseudo_word(token_id: int) -> str:
    syllables = len(_CONSONANTS) * len(_VOWELS)
    value = token_id
    parts: list[str] = []
    for _ in range(1 + token_id % 3):
        value, syllable = divmod(value, syllables)
        consonant, vowel = divmod(syllable, len(_VOWELS))
        parts.append(_CONSONANTS[consonant] + _VOWELS[vowel])
    return " " + "".join(parts)


def detokenize(token_ids: Iterable[int]) -> str:
    """Render generated ids as pseudo-words: each id always gives the same word."""
    return "".join(_pseudo_word(token_id) for token_id in token_ids)


@lru_cache(maxsize=1 << 14)
def _token_vector(token_id: int, dimensions: int) -> tuple[float, ...]:
    rng = random.Random(token_id)
    return tuple(rng.uniform(-1.0, 1.0) for _ in range(dimensions))


def embed_tokens(token_ids: Sequence[int], dimensions: int) -> list[float]:
    """A unit vector that depends only on the ids: equal inputs embed equally."""
    totals = [0.0] * dimensions
    for token_id in token_ids:
        for index, component in enumerate(_token_vector(token_id, dimensions)):
            totals[index] += component
    norm = math.sqrt(sum(value * value for value in totals))
    if norm == 0.0:
        return totals
    return [value / norm for value in totals]


class TokenLogprob(NamedTuple):
    """A generated token's log-probability, and the likeliest tokens at its position (itself
    first), as ``(token id, logprob)``."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...]


_MIN_LOGPROB = -9999.0
"""What vLLM reports for a probability of zero (it clamps ``-inf``)."""
_MAX_MEAN_LOGPROB_DROP = 2.0


def _unit(digest: bytes) -> float:
    """A number in [0, 1) from a digest's first 8 bytes."""
    return int.from_bytes(digest[:8], "little") / 2**64


def logprob_seed(prompt: Sequence[int]) -> bytes:
    """What the log-probabilities of an answer to ``prompt`` are drawn from."""
    return hashlib.blake2b(array("q", prompt).tobytes(), digest_size=16).digest()


def answer_logprobs(
    seed: bytes, answer: Sequence[int], top: int, start: int = 0
) -> list[TokenLogprob]:
    """Log-probabilities of ``answer``'s tokens (generated after the prompt whose
    :func:`logprob_seed` is ``seed``, the first at position ``start`` of the answer), each
    with the ``top`` likeliest tokens at its position (the generated one first: the simulated
    model samples its likeliest token).

    The simulated model is as sure of an answer as its prompt makes it: each prompt draws how
    sure (the mean log-probability of its answer's tokens, from 0 down to -2, most prompts near
    0), and each token varies around that mean. So a cascade's logprob check keeps the answers
    to some prompts and escalates others, always the same ones. Deterministic in every process.
    """
    mean = -_MAX_MEAN_LOGPROB_DROP * _unit(seed) ** 2
    out: list[TokenLogprob] = []
    for position, token_id in enumerate(answer, start):
        here = hashlib.blake2b(seed + position.to_bytes(8, "little"), digest_size=16).digest()
        logprob = mean * (0.5 + _unit(here))
        ranked = [(token_id, logprob)] if top > 0 else []
        chance = math.exp(logprob)
        # The others share what is left, each less likely than the one before.
        below = min(chance, 1.0 - chance)
        for rank in range(1, top):
            other = _piece_id(f"{here.hex()}:{rank}")
            share = below * 0.5**rank
            ranked.append((other, math.log(share) if share > 0 else _MIN_LOGPROB))
        out.append(TokenLogprob(token_id, logprob, tuple(ranked)))
    return out
