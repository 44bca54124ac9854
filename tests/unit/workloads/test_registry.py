"""Workloads by name, with knobs."""

from __future__ import annotations

import pytest

from trunkline.errors import ConfigurationError
from trunkline.workloads import CareWorkload, make_workload, parse_spec


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("care", ("care", {})),
        ("care:rate=8,turns=4", ("care", {"rate": "8", "turns": "4"})),
        ("b2b: burst-factor = 3 ,", ("b2b", {"burst_factor": "3"})),
    ],
)
def test_specs_parse_into_a_name_and_knobs(spec: str, expected: tuple[str, dict[str, str]]) -> None:
    assert parse_spec(spec) == expected


def test_knobs_take_the_type_of_their_default_and_seed_and_duration_apply() -> None:
    workload = make_workload("care:rate=8,preamble_tokens=900", seed=5, duration_s=30)
    assert isinstance(workload, CareWorkload)
    assert (workload.rate, workload.preamble_tokens, workload.seed) == (8.0, 900, 5)
    assert workload.duration_s == 30
    assert make_workload("care:seed=9", seed=5).seed == 9  # an explicit knob wins


def test_the_tiered_b2b_workload_takes_a_noisy_tenant_by_name() -> None:
    workload = make_workload("b2b-tiers:rate=5,noisy_tenant=silver-00", seed=2, duration_s=10)
    assert set(workload.tenants.values()) == {"gold", "silver", "bronze"}
    sent = [request.tenant for request in workload.requests()]
    # At 10x its share the noisy tenant sends more than any other tenant.
    assert max(set(sent), key=sent.count) == "silver-00"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nope", "unknown workload 'nope'"),
        ("care:speed=3", "no knob 'speed'"),
        ("care:rate=fast", "not a number"),
        ("care:rate", "key=value"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_workload(spec)
