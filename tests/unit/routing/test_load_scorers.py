"""Load and cost scorers, table-driven: values in [0, 1], the best endpoint scoring 1."""

from __future__ import annotations

import pytest
from tests.unit.routing.helpers import endpoint, request

from trunkline.gateway.routing import SCORERS, EndpointView, Scorer


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
