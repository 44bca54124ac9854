"""Load and cost scorers, table-driven: values in [0, 1], the best endpoint scoring 1."""

from __future__ import annotations

import dataclasses

import pytest
from tests.unit.routing.helpers import endpoint, request

from trunkline.gateway.routing import SCORERS, EndpointLoad, EndpointView, Scorer


def build(name: str) -> Scorer:
    plugin = SCORERS[name]
    return plugin.build(plugin.params())


@pytest.mark.parametrize(
    ("name", "endpoints", "expected"),
    [
        (
            "queue-depth",
            [endpoint("a", running=2), endpoint("b", running=6, waiting=2), endpoint("c")],
            [0.75, 0.0, 1.0],
        ),
        ("queue-depth", [endpoint("a", running=3), endpoint("b", running=3)], [1.0, 1.0]),
        ("kv-usage", [endpoint("a", kv=0.25), endpoint("b", kv=1.0)], [0.75, 0.0]),
        (
            "cost",  # $/token: a 3/3600/1000, b 1/3600/1000 (cheapest), c unknown
            [
                endpoint("a", cost_per_hour=3.0, tokens_per_s=1000),
                endpoint("b", cost_per_hour=1.0, tokens_per_s=1000),
                endpoint("c"),
            ],
            [1 / 3, 1.0, 0.0],
        ),
        (
            "cost",  # cost per token, not per hour: twice the price for four times the speed
            [
                endpoint("a", cost_per_hour=2.0, tokens_per_s=4000),
                endpoint("b", cost_per_hour=1.0, tokens_per_s=1000),
            ],
            [1.0, 0.5],
        ),
        ("cost", [endpoint("a"), endpoint("b")], [1.0, 1.0]),  # nothing known: no preference
    ],
)
def test_scorer_values(name: str, endpoints: list[EndpointView], expected: list[float]) -> None:
    scorer = build(name)
    values = scorer.score(request(), endpoints)
    assert values == pytest.approx(expected)
    assert all(0.0 <= v <= 1.0 for v in values)


def _flavor(key: str, accelerator: str, cost_per_hour: float) -> EndpointView:
    from trunkline.engines.profiles import get_profile
    from trunkline.fleet.spec import nominal_tokens_per_s

    tokens_per_s = nominal_tokens_per_s(get_profile(accelerator))
    return dataclasses.replace(
        endpoint(key, cost_per_hour=cost_per_hour, tokens_per_s=tokens_per_s),
        accelerator=accelerator,
    )


@pytest.mark.parametrize(
    ("prompt_tokens", "max_tokens", "cheaper"),
    [
        (8000, 16, "l40s"),  # a long document, a short answer: prefill work, compute per dollar
        (200, 1000, "h100"),  # a chat turn with a long answer: decode work, bandwidth per dollar
        (0, None, "h100"),  # nothing known of the request: priced per output token, as before
    ],
)
def test_cost_prices_the_request_on_each_flavor(
    prompt_tokens: int, max_tokens: int | None, cheaper: str
) -> None:
    fleet = [_flavor("h", "h100", 3.0), _flavor("l", "l40s", 1.0)]
    view = dataclasses.replace(request(), prompt_tokens=prompt_tokens, max_tokens=max_tokens)
    values = build("cost").score(view, fleet)
    best = fleet[values.index(1.0)].accelerator
    assert best == cheaper
    assert min(values) < 0.95  # a real difference, not a tie


def test_cost_ignores_prompts_when_an_accelerator_has_no_profile() -> None:
    fleet = [
        _flavor("h", "h100", 3.0),
        dataclasses.replace(_flavor("x", "l40s", 1.0), accelerator="tpu-x"),
    ]
    long_prompt = dataclasses.replace(request(), prompt_tokens=8000, max_tokens=16)
    assert build("cost").score(long_prompt, fleet) == build("cost").score(request(), fleet)


def test_prefill_queue_counts_prompt_tokens_not_requests() -> None:
    # Both hold one request; one of them is an 8k-token prompt not yet prefilled.
    busy = dataclasses.replace(
        _flavor("busy", "l40s", 1.0), load=EndpointLoad(1.0, 1.0, 0.1, queued_prompt_tokens=8000)
    )
    free = dataclasses.replace(
        _flavor("free", "l40s", 1.0), load=EndpointLoad(1.0, 1.0, 0.1, queued_prompt_tokens=100)
    )
    view = dataclasses.replace(request(), prompt_tokens=1000)
    assert build("queue-depth").score(view, [busy, free]) == [1.0, 1.0]
    assert build("prefill-queue").score(view, [busy, free]) == pytest.approx([1100 / 9000, 1.0])


def test_prefill_queue_prefers_the_faster_prefill_when_queues_are_equal() -> None:
    fleet = [_flavor("h", "h100", 3.0), _flavor("l", "l40s", 1.0)]
    values = build("prefill-queue").score(dataclasses.replace(request(), prompt_tokens=4000), fleet)
    assert values[0] == 1.0 and values[1] < 0.5  # an H100 prefills about 2.6 x an L40S's rate
