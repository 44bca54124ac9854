"""Filters, table-driven: which endpoints each one keeps for which request."""

from __future__ import annotations

import pytest
from tests.unit.routing.helpers import endpoint, request

from trunkline.gateway.routing import FILTERS, EndpointView, RequestView


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
        ("model", request(model="llama"), endpoint("e", model="llama"), True),
        ("model", request(model="llama"), endpoint("e", model="qwen"), False),
        ("model", request(model=None), endpoint("e", model="qwen"), True),  # not checked
        ("model", request(model="llama"), endpoint("e", model=None), True),  # unknown
    ],
)
def test_filter_keeps_only_allowed_endpoints(
    name: str, req: RequestView, target: EndpointView, kept: bool
) -> None:
    assert FILTERS[name]().keep(req, target) is kept
