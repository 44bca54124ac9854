"""``netops``: network operations — few users re-reading long documents (runbooks, topology).

Each request is a short system prompt, one document picked by a Zipf law (a few documents are
read all the time), and a question. Documents are long, so whether a request lands where its
document is cached decides its TTFT.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from trunkline.workloads.prompts import build_prompt, segment, stable_key
from trunkline.workloads.sampling import length, poisson_arrivals
from trunkline.workloads.schemas import WorkloadRequest

__all__ = ["NetopsWorkload"]


@dataclass(frozen=True, slots=True)
class NetopsWorkload:
    name: str = "netops"
    seed: int = 1
    duration_s: float = 600.0
    rate: float = 0.5
    """Requests per second, all users together."""
    users: int = 8
    documents: int = 12
    document_tokens: float = 8000.0
    zipf: float = 1.1
    """Document popularity exponent: weight of the k-th document is 1 / k^zipf."""
    system_tokens: int = 200
    question_tokens: float = 80.0
    answer_tokens: float = 250.0
    tier: str = "gold"

    @property
    def tenants(self) -> Mapping[str, str]:
        return {"netops": self.tier}

    def requests(self) -> Iterator[WorkloadRequest]:
        rng = random.Random(self.seed)
        weights = [1.0 / (k + 1) ** self.zipf for k in range(self.documents)]
        doc_rng = random.Random(stable_key("netops-docs", self.seed))
        sizes = [
            length(doc_rng, self.document_tokens, sigma=0.3, high=4 * int(self.document_tokens))
            for _ in range(self.documents)
        ]
        system = segment(stable_key("netops-system", self.seed), self.system_tokens)
        for index, at in enumerate(poisson_arrivals(rng, self.rate, 0.0, self.duration_s)):
            document = rng.choices(range(self.documents), weights)[0]
            user = rng.randrange(self.users)
            question = length(rng, self.question_tokens, high=8 * int(self.question_tokens))
            answer = length(rng, self.answer_tokens, high=8 * int(self.answer_tokens))
            parts = [
                system,
                segment(stable_key("netops-doc", self.seed, document), sizes[document]),
                segment(stable_key("netops-question", self.seed, index, user), question),
            ]
            yield WorkloadRequest(f"netops-{index}", at, "netops", build_prompt(parts), answer)
