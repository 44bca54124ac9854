"""Checks on a small model's answer that decide whether a cascade escalates. Pure functions.

Each check looks at one thing an engine's OpenAI-shaped answer carries: the finish reason
(truncation), the text or the ``refusal`` field (refusal), token log-probabilities (logprob
threshold) and a self-assessed confidence line the first attempt was asked to write.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from trunkline.snapshot import CascadeEntry

CONFIDENCE_INSTRUCTION = (
    "After your answer, write one last line of the form `Confidence: X`, where X is a number "
    "from 0 to 1 saying how sure you are that your answer is correct and complete."
)
_CONFIDENCE_LINE = re.compile(
    r"(?:\A|\n)[ \t>*_`]*confidence[ \t*_`]*[:=][ \t*_`]*"
    r"([0-9]+(?:\.[0-9]+)?)[ \t]*(%?)[ \t*_`.]*\s*\Z",
    re.IGNORECASE,
)
_REFUSAL = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry, (?:but )?i|i apologi[sz]e|i can(?:'|no)t (?:help|assist"
    r"|answer|provide|do|comply)|i cannot|i'?m (?:not able|unable) to|i am (?:not able|unable) to|"
    r"i won'?t be able to|as an ai\b)",
    re.IGNORECASE,
)
_REFUSAL_WINDOW = 200
"""Characters at the start of an answer a refusal is looked for in."""


@dataclass(frozen=True, slots=True)
class Answer:
    """What the checks need from a first answer (the first choice of a non-streamed reply)."""

    text: str
    finish_reason: str | None
    refusal: str | None = None
    token_logprobs: tuple[float, ...] | None = None
    completion_tokens: int | None = None
    """The answer's ``usage.completion_tokens``: every choice's together."""
    choices: int = 1

    def reached(self, limit: int) -> bool:
        """Whether the first choice has ``limit`` tokens (none has more): usage sums every
        choice, each of at most ``limit``, so the first has at least the sum less the others'
        most. Unknown (no usage) reads as not reached."""
        if self.completion_tokens is None:
            return False
        return self.completion_tokens - (self.choices - 1) * limit >= limit

    @property
    def mean_logprob(self) -> float | None:
        values = [v for v in self.token_logprobs or () if math.isfinite(v)]
        return sum(values) / len(values) if values else None


def read_answer(kind: str, payload: dict[str, Any]) -> Answer:
    """The first choice of a chat or text completion; an empty answer if there is none."""
    choices = payload.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    if not isinstance(choice, dict):
        return Answer("", None)
    if kind == "chat":
        message = choice.get("message") or {}
        text, refusal = message.get("content"), message.get("refusal")
    else:
        text, refusal = choice.get("text"), None
    usage = payload.get("usage")
    tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    return Answer(
        text if isinstance(text, str) else "",
        choice.get("finish_reason"),
        refusal if isinstance(refusal, str) and refusal else None,
        _token_logprobs(choice.get("logprobs")),
        tokens if isinstance(tokens, int) and not isinstance(tokens, bool) else None,
        len(choices) if isinstance(choices, list) and choices else 1,
    )


def _token_logprobs(logprobs: object) -> tuple[float, ...] | None:
    if not isinstance(logprobs, dict):
        return None
    content = logprobs.get("content")  # chat: [{"token", "logprob", ...}]
    if isinstance(content, list):
        values = [item.get("logprob") for item in content if isinstance(item, dict)]
    else:  # completions: {"token_logprobs": [...]}
        values = list(logprobs.get("token_logprobs") or [])
    return tuple(float(v) for v in values if isinstance(v, int | float))


def split_confidence(text: str) -> tuple[str, float | None]:
    """The answer without its trailing ``Confidence: X`` line, and X in [0, 1] (None if absent).

    ``Confidence: 85%`` and ``Confidence: 85`` read as 0.85.
    """
    found = _CONFIDENCE_LINE.search(text)
    if found is None:
        return text, None
    value = float(found.group(1))
    if found.group(2) or value > 1:
        value /= 100
    return text[: found.start()].rstrip(), min(max(value, 0.0), 1.0)


def is_refusal(answer: Answer) -> bool:
    return answer.refusal is not None or bool(_REFUSAL.match(answer.text[:_REFUSAL_WINDOW]))


def escalation_reason(
    answer: Answer,
    cascade: CascadeEntry,
    confidence: float | None = None,
    client_limit: int | None = None,
) -> str | None:
    """Why the answer is not good enough (``truncation``, ``refusal``, ``low_logprob``,
    ``low_confidence``), or None to accept it. A check that cannot be evaluated (no
    log-probabilities, no confidence line) counts as failed: escalating is the safe side.

    ``client_limit``: the tokens the client's request allows each answer (its own maximum, or
    the API's default), which the large model gets too. An answer that stopped there is not
    truncated for the cascade: the large one would stop at the same limit. One that stopped
    short of it (the small model's context ran out) is."""
    if (
        cascade.on_truncation
        and answer.finish_reason == "length"
        and (client_limit is None or not answer.reached(client_limit))
    ):
        return "truncation"
    if cascade.on_refusal and is_refusal(answer):
        return "refusal"
    if cascade.min_mean_logprob is not None:
        mean = answer.mean_logprob
        if mean is None or mean < cascade.min_mean_logprob:
            return "low_logprob"
    if cascade.min_confidence is not None and (
        confidence is None or confidence < cascade.min_confidence
    ):
        return "low_confidence"
    return None
