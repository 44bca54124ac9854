from __future__ import annotations

import dataclasses

import pytest
from tests.unit.admission.helpers import FULL, endpoint, request

from trunkline.gateway.admission import DEFAULT_RATES, TtftPredictor, prior_rates
from trunkline.gateway.routing import EndpointLoad, EndpointView, PromptView
from trunkline.workloads import Prompt, segment, stable_key


def test_an_idle_engine_predicts_the_prefill_of_the_prompt_alone() -> None:
    predictor = TtftPredictor()
    rates = prior_rates("l40s")
    ttft = predictor.predict(request(prompt_tokens=2000), endpoint()).ttft_s
    assert ttft == pytest.approx(2000 / rates.prefill_tokens_per_s + 1.5 * rates.decode_step_s)


@pytest.mark.parametrize(
    "load",
    [
        EndpointLoad(queued_prompt_tokens=8000.0),
        EndpointLoad(waiting=8.0),
        EndpointLoad(running=200.0),
        EndpointLoad(running=100.0, kv_usage=0.97),
    ],
)
def test_work_ahead_makes_the_first_token_later(load: EndpointLoad) -> None:
    predictor = TtftPredictor()
    idle = predictor.predict(request(), endpoint()).ttft_s
    assert predictor.predict(request(), endpoint(load=load)).ttft_s > idle


def test_only_waiting_requests_the_gateway_cannot_account_for_count_as_typical_prompts() -> None:
    predictor = TtftPredictor(typical_prompt_tokens=1000)
    rate = 1000.0
    rates = EndpointLoad(prefill_tokens_per_s=rate, decode_step_s=0.01)

    def ttft(**load: float | None) -> float:
        view = endpoint(load=dataclasses.replace(rates, **load))
        return predictor.predict(request(prompt_tokens=500), view).ttft_s

    idle = ttft()
    # No accounting (None): a waiting request with no queued tokens known is a typical prompt.
    assert ttft(waiting=1.0) == pytest.approx(idle + 1000 / rate)
    # Accounted for: the gateway's own request already started (a stale "waiting 1").
    assert ttft(waiting=1.0, unaccounted_waiting=0.0) == pytest.approx(idle)
    # Another client's request waits beside ours of 300 queued tokens.
    both = ttft(waiting=2.0, queued_prompt_tokens=300.0, unaccounted_waiting=1.0)
    assert both == pytest.approx(idle + (300 + 1000) / rate)


def test_a_full_engine_is_saturated_and_predicts_seconds() -> None:
    prediction = TtftPredictor().predict(request(), endpoint(load=FULL))
    assert prediction.saturated
    assert prediction.ttft_s > 2.0
    assert prediction.occupancy >= 0.99


def test_measured_rates_replace_the_profile_priors() -> None:
    predictor = TtftPredictor()
    slow = EndpointLoad(prefill_tokens_per_s=1000.0, decode_step_s=0.1)
    ttft = predictor.predict(request(prompt_tokens=1000), endpoint(load=slow)).ttft_s
    assert ttft == pytest.approx(1000 / 1000.0 + 1.5 * 0.1)


def test_an_unknown_accelerator_falls_back_to_conservative_defaults() -> None:
    assert prior_rates("some-new-npu") == DEFAULT_RATES
    assert prior_rates("h100").prefill_tokens_per_s > DEFAULT_RATES.prefill_tokens_per_s


def test_a_pool_deployed_with_a_smaller_prefill_chunk_is_predicted_with_it() -> None:
    """vLLM's --max-num-batched-tokens, given on the pool: a smaller chunk prefills slower and
    leaves less of each step to prefill beside the running requests."""
    default, small = prior_rates("l40s"), prior_rates("l40s", 512)
    assert small.step_token_budget == 512 < default.step_token_budget
    assert small.prefill_tokens_per_s < default.prefill_tokens_per_s
    assert prior_rates("l40s", default.step_token_budget) == default
    assert prior_rates("some-new-npu", 512).step_token_budget == 512

    predictor = TtftPredictor()
    busy = EndpointLoad(running=200.0)
    as_deployed = dataclasses.replace(endpoint(load=busy), max_num_batched_tokens=512)
    by_default = predictor.predict(request(prompt_tokens=2000), endpoint(load=busy)).ttft_s
    assert predictor.predict(request(prompt_tokens=2000), as_deployed).ttft_s > by_default


class HalfCached:
    def cached_tokens(self, prompt: PromptView, endpoint: EndpointView) -> int:
        return prompt.num_tokens // 2


def test_cached_prompt_tokens_are_not_counted_when_a_prefix_index_is_given() -> None:
    prompt = Prompt(segment(stable_key("predictor"), 4000))
    with_prompt = dataclasses.replace(request(prompt_tokens=4000), prompt=prompt)
    plain = TtftPredictor().predict(with_prompt, endpoint())
    cached = TtftPredictor(prefix_index=HalfCached()).predict(with_prompt, endpoint())
    assert (plain.uncached_tokens, cached.uncached_tokens) == (4000, 2000)
    assert cached.ttft_s < plain.ttft_s


def test_without_a_prompt_view_the_whole_prompt_is_assumed_uncached() -> None:
    prediction = TtftPredictor(prefix_index=HalfCached()).predict(request(), endpoint())
    assert prediction.uncached_tokens == 1000
