"""Filters, table-driven: which endpoints each one keeps for which request."""

from __future__ import annotations

import pytest
from tests.unit.routing.helpers import endpoint, request

from trunkline.gateway.routing import FILTERS, EndpointView, PromptRange, RequestView

LONG = PromptRange(2048)
SHORT = PromptRange(0, 2048)


@pytest.mark.parametrize(
    ("name", "req", "target", "kept"),
    [
        ("healthy", request(), endpoint("e"), True),
        ("healthy", request(), endpoint("e", healthy=False), False),
        ("residency", request(), endpoint("e", region="us"), True),  # no residency: anywhere
        ("residency", request(regions=("eu",)), endpoint("e", region="eu"), True),
        ("residency", request(regions=("eu",)), endpoint("e", region="us"), False),
        ("residency", request(regions=("eu", "ch")), endpoint("e", region="ch"), True),
        ("tier-pools", request(may_use_burst=True), endpoint("e", burst=True), True),
        ("tier-pools", request(may_use_burst=False), endpoint("e", burst=True), False),
        ("tier-pools", request(may_use_burst=False), endpoint("e", burst=False), True),
        ("tier-pools", request(tier="gold"), endpoint("e", tiers=("gold",)), True),
        ("tier-pools", request(tier="silver"), endpoint("e", tiers=("gold",)), False),
        ("tier-pools", request(tier="bronze"), endpoint("e", tiers=("silver", "bronze")), True),
        ("tier-pools", request(tier="gold"), endpoint("e", tiers=None), True),  # every tier
        # Placed for the tier, but burst and the tier may not use burst pools: both rules hold.
        (
            "tier-pools",
            request(tier="gold", may_use_burst=False),
            endpoint("e", burst=True, tiers=("gold",)),
            False,
        ),
        ("model", request(model="llama"), endpoint("e", model="llama"), True),
        ("model", request(model="llama"), endpoint("e", model="qwen"), False),
        ("model", request(model=None), endpoint("e", model="qwen"), True),  # not checked
        ("model", request(model="llama"), endpoint("e", model=None), True),  # unknown
        ("prompt-length", request(prompt_tokens=5000), endpoint("e"), True),  # any length
        ("prompt-length", request(prompt_tokens=2048), endpoint("e", prompt_tokens=LONG), True),
        ("prompt-length", request(prompt_tokens=2047), endpoint("e", prompt_tokens=LONG), False),
        ("prompt-length", request(prompt_tokens=2047), endpoint("e", prompt_tokens=SHORT), True),
        ("prompt-length", request(prompt_tokens=2048), endpoint("e", prompt_tokens=SHORT), False),
        ("prompt-length", request(prompt_tokens=0), endpoint("e", prompt_tokens=SHORT), True),
    ],
)
def test_filter_keeps_only_allowed_endpoints(
    name: str, req: RequestView, target: EndpointView, kept: bool
) -> None:
    assert FILTERS[name]().keep(req, target) is kept


def test_only_the_prompt_length_filter_is_a_preference() -> None:
    """A strict filter's verdict is final (residency, health); placement by prompt length only
    ranks the other pools after the placed ones."""
    assert {name for name, make in FILTERS.items() if not make().strict} == {"prompt-length"}
