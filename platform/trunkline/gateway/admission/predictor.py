"""Predict a request's time to first token on one endpoint from the endpoint's load.

The model follows vLLM's scheduler: a new request starts prefilling once the prompt tokens queued
ahead of it are prefilled (``queued_prompt_tokens``, plus a typical prompt for each waiting
request the gateway did not send, ``unaccounted_waiting``; with no accounting at all,
``waiting`` x a typical prompt), and its own uncached tokens take their turn after them. Every
step also carries one decode token per running request, so the share of the step budget left for
prefill shrinks as ``running`` grows.
When the engine is full (KV cache or ``max_num_seqs``), the request cannot start until running
requests finish: each request queued ahead then waits about one mean service time divided by the
number running.

Service rates come from the endpoint's measured figures (``prefill_tokens_per_s``,
``decode_step_s``); until they are measured, from the accelerator's engine profile
(:mod:`trunkline.engines.profiles`), else from conservative defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

from trunkline.engines.profiles import get_profile
from trunkline.errors import ConfigurationError
from trunkline.gateway.routing.views import EndpointView, PromptView, RequestView

__all__ = [
    "DEFAULT_RATES",
    "PrefixIndex",
    "ServiceRates",
    "TtftPredictor",
    "prior_rates",
    "uncached_tokens",
]


class PrefixIndex(Protocol):
    """Where prompts' blocks are likely cached (the routing prefix index, or an engine's cache)."""

    def cached_tokens(self, prompt: PromptView, endpoint: EndpointView) -> int:
        """Prompt tokens the endpoint will likely find in its prefix cache."""
        ...


@dataclass(frozen=True, slots=True)
class ServiceRates:
    prefill_tokens_per_s: float
    decode_step_s: float
    step_token_budget: int = 8192
    """Tokens one step may schedule (vLLM ``max_num_batched_tokens``)."""
    max_num_seqs: int = 256
    decode_step_per_seq_s: float = 0.0
    """How much longer a decode step gets per running request beyond 32 (prior only)."""

    def decode_step_at(self, running: float) -> float:
        return self.decode_step_s + self.decode_step_per_seq_s * max(running - 32.0, 0.0)


DEFAULT_RATES = ServiceRates(prefill_tokens_per_s=4000.0, decode_step_s=0.04)
"""A slow engine: better to hold a request too long at first than to queue it into failure."""


def prior_rates(accelerator: str, max_num_batched_tokens: int | None = None) -> ServiceRates:
    """Rates of an unloaded engine of ``accelerator`` from its profile (defaults if unknown),
    run with ``max_num_batched_tokens`` (None: the profile's, vLLM's default)."""
    try:
        profile = get_profile(accelerator)
    except ConfigurationError:
        if max_num_batched_tokens is None:
            return DEFAULT_RATES
        return dataclasses.replace(DEFAULT_RATES, step_token_budget=max_num_batched_tokens)
    if max_num_batched_tokens is not None:
        profile = dataclasses.replace(profile, max_num_batched_tokens=max_num_batched_tokens)
    budget = profile.max_num_batched_tokens
    small = profile.step_time(32, 32, 0, 32 * 1024)
    large = profile.step_time(256, 256, 0, 256 * 1024)
    return ServiceRates(
        prefill_tokens_per_s=profile.prefill_tokens_per_s(),
        decode_step_s=small,
        step_token_budget=budget,
        max_num_seqs=profile.max_num_seqs,
        decode_step_per_seq_s=(large - small) / (256 - 32),
    )


def uncached_tokens(
    request: RequestView, endpoint: EndpointView, prefix_index: PrefixIndex | None
) -> int:
    """The request's prompt tokens ``endpoint`` will have to prefill: its prompt less what
    ``prefix_index`` says the endpoint caches (at least one: the last token is always computed)."""
    tokens = request.num_prompt_tokens
    if request.prompt is not None and prefix_index is not None:
        tokens -= prefix_index.cached_tokens(request.prompt, endpoint)
    return max(tokens, 1)


@dataclass(frozen=True, slots=True)
class Prediction:
    ttft_s: float
    uncached_tokens: int
    saturated: bool
    """The engine has no room for another request: it waits for running ones to finish."""
    occupancy: float
    """How full the engine is: the larger of KV-cache use and requests / ``max_num_seqs``."""


class TtftPredictor:
    """``predict(request, endpoint)``; pure apart from a per-accelerator cache of priors."""

    def __init__(
        self,
        *,
        prefix_index: PrefixIndex | None = None,
        typical_prompt_tokens: int = 1000,
        typical_output_tokens: int = 200,
        kv_full: float = 0.95,
    ) -> None:
        self.prefix_index = prefix_index
        self.typical_prompt_tokens = typical_prompt_tokens
        self.typical_output_tokens = typical_output_tokens
        self.kv_full = kv_full
        self._priors: dict[tuple[str, int | None], ServiceRates] = {}

    def rates(self, endpoint: EndpointView) -> ServiceRates:
        key = (endpoint.accelerator, endpoint.max_num_batched_tokens)
        prior = self._priors.get(key)
        if prior is None:
            prior = self._priors[key] = prior_rates(*key)
        load = endpoint.load
        if load.prefill_tokens_per_s <= 0 and load.decode_step_s <= 0:
            return prior
        measured_step = load.decode_step_s > 0
        return ServiceRates(
            load.prefill_tokens_per_s or prior.prefill_tokens_per_s,
            load.decode_step_s if measured_step else prior.decode_step_s,
            prior.step_token_budget,
            prior.max_num_seqs,
            # A measured step is the step at the current batch size already.
            0.0 if measured_step else prior.decode_step_per_seq_s,
        )

    def uncached_tokens(self, request: RequestView, endpoint: EndpointView) -> int:
        return uncached_tokens(request, endpoint, self.prefix_index)

    def predict(
        self,
        request: RequestView,
        endpoint: EndpointView,
        *,
        extra_tokens: float = 0.0,
        extra_requests: float = 0.0,
    ) -> Prediction:
        """TTFT from now; ``extra_*`` is work sent to the endpoint since its load was measured."""
        load, rates = endpoint.load, self.rates(endpoint)
        uncached = self.uncached_tokens(request, endpoint)
        waiting = load.waiting + extra_requests
        if load.unaccounted_waiting is None:
            ahead = load.queued_prompt_tokens or waiting * self.typical_prompt_tokens
        else:
            # The prompts queued are known, but for requests someone else sent.
            unknown = load.unaccounted_waiting * self.typical_prompt_tokens
            ahead = load.queued_prompt_tokens + unknown
        ahead += extra_tokens
        # Decode tokens of running requests take their share of every step's budget first.
        share = max(1.0 - load.running / rates.step_token_budget, 0.1)
        prefill_s = (ahead + uncached) / (rates.prefill_tokens_per_s * share)
        step_s = rates.decode_step_at(load.running)
        # On average the step in flight is half done; the first token comes one step after prefill.
        ttft = prefill_s + 1.5 * step_s
        # Requests queued ahead take the free sequence slots first.
        slots = rates.max_num_seqs - load.running - waiting
        saturated = load.kv_usage >= self.kv_full or slots < 1
        if saturated:
            # Running requests are spread over their answers: one finishes every service / running.
            service_s = self.typical_output_tokens * step_s
            ttft += max(1.0 - slots, 1.0) * service_s / max(load.running, 1.0)
        occupancy = max(load.kv_usage, (load.running + waiting + 1) / rates.max_num_seqs)
        return Prediction(ttft, uncached, saturated, occupancy)
