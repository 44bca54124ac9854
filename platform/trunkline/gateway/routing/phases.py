"""Prefill/decode disaggregation: which ranked endpoints serve a request, and which prefill it.

A pool's ``role`` says which phases of a request its engines run: ``both`` (the default: a
request is prefilled and decoded where it is served), ``prefill`` (they only prefill prompts
for engines of other pools, and hand over the KV: vLLM's ``kv_transfer_params`` with
``do_remote_decode``) or ``decode`` (they serve requests, taking the prompt's KV from a prefill
engine when one prefills it). Prefill pools never serve a request themselves.

A prefill pool's prompt range (``min_prompt_tokens`` / ``max_prompt_tokens``) is over the
tokens the serving endpoint would have to prefill, its prompt less what its prefix cache holds,
as llm-d's prefill/decode decider counts them: a short or mostly cached prompt is cheaper to
prefill where it is decoded than to move.
"""

from __future__ import annotations

from collections.abc import Sequence

from trunkline.gateway.routing.candidates import Candidate
from trunkline.gateway.routing.views import PromptRange

__all__ = ["BOTH", "DECODE", "PREFILL", "ROLES", "prefill_candidates", "serving_candidates"]

BOTH = "both"
PREFILL = "prefill"
DECODE = "decode"
ROLES = (BOTH, PREFILL, DECODE)


def serving_candidates(ordered: Sequence[Candidate]) -> list[Candidate]:
    """The endpoints of a ranking that may serve the request, in its order: every pool's but
    prefill pools'."""
    return [c for c in ordered if c.pool.role != PREFILL]


def prefill_candidates(ordered: Sequence[Candidate], uncached_tokens: int) -> list[Candidate]:
    """The prefill endpoints of a ranking placed for ``uncached_tokens`` (the tokens the serving
    endpoint lacks), in its order; empty when the serving endpoint prefills it itself."""
    return [
        c
        for c in ordered
        if c.pool.role == PREFILL
        and uncached_tokens in PromptRange(c.pool.min_prompt_tokens, c.pool.max_prompt_tokens)
    ]
