"""``difficulty``: easy-heavy question answering with each request labelled easy or hard.

The workload a model cascade is for (B2B assistants, edge sites): most questions are short
look-ups a small model answers well, a minority need a large model. Hard questions come with
longer prompts (documents, context) and longer answers. Arrivals are a Poisson process; every
request is independent (a fresh question, no shared preamble), so prefix caching does not
blur the comparison. ``labelled()`` yields each request with its label; ``requests()`` the
requests alone, as every workload does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from trunkline.workloads.prompts import build_prompt, segment, stable_key
from trunkline.workloads.sampling import length, poisson_arrivals
from trunkline.workloads.schemas import WorkloadRequest

__all__ = ["DifficultyWorkload", "LabelledRequest"]


@dataclass(frozen=True, slots=True)
class LabelledRequest:
    request: WorkloadRequest
    hard: bool
    """Needs the large model: a small model's answer would fail a cascade's checks."""


@dataclass(frozen=True, slots=True)
class DifficultyWorkload:
    name: str = "difficulty"
    seed: int = 1
    duration_s: float = 300.0
    rate: float = 4.0
    """Questions per second."""
    hard_share: float = 0.2
    easy_prompt_tokens: float = 250.0
    hard_prompt_tokens: float = 900.0
    easy_answer_tokens: float = 120.0
    hard_answer_tokens: float = 350.0
    tier: str = "silver"

    def __post_init__(self) -> None:
        if not 0.0 <= self.hard_share <= 1.0:
            raise ValueError("hard_share must be in [0, 1]")

    @property
    def tenants(self) -> Mapping[str, str]:
        return {"qa": self.tier}

    def labelled(self) -> Iterator[LabelledRequest]:
        rng = random.Random(self.seed)
        for index, at in enumerate(poisson_arrivals(rng, self.rate, 0.0, self.duration_s)):
            hard = rng.random() < self.hard_share
            yield LabelledRequest(self._request(index, at, hard), hard)

    def requests(self) -> Iterator[WorkloadRequest]:
        for labelled in self.labelled():
            yield labelled.request

    def _request(self, index: int, at: float, hard: bool) -> WorkloadRequest:
        rng = random.Random(stable_key("difficulty-lengths", self.seed, index))
        prompt_mean = self.hard_prompt_tokens if hard else self.easy_prompt_tokens
        answer_mean = self.hard_answer_tokens if hard else self.easy_answer_tokens
        prompt = length(rng, prompt_mean, high=4 * int(prompt_mean) + 1)
        answer = length(rng, answer_mean, high=4 * int(answer_mean) + 1)
        tokens = segment(stable_key("difficulty-question", self.seed, index), prompt)
        return WorkloadRequest(
            request_id=f"q-{index}",
            arrival=at,
            tenant="qa",
            prompt=build_prompt([tokens]),
            max_tokens=answer,
            output_tokens=segment(stable_key("difficulty-answer", self.seed, index), answer),
        )
