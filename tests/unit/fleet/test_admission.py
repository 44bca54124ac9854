"""SLO admission in the fleet simulator: the gateway's policy in virtual time."""

from __future__ import annotations

import pytest
from tests.unit.engines.helpers import tiny_profile

from trunkline.engines import EngineCore
from trunkline.engines.virtual import VirtualEngine
from trunkline.fleet import FleetResult, FleetSpec, PoolSpec, simulate
from trunkline.fleet.admission import cached_prompt_tokens, engine_load
from trunkline.fleet.results import RequestOutcome
from trunkline.gateway.admission import AdmissionPolicy
from trunkline.gateway.routing import EndpointLoad, make_policy
from trunkline.workloads.b2b_tiers import TieredB2bWorkload
from trunkline.workloads.prompts import build_prompt

# One L40S serves ~13 b2b requests/s; this offers about twice that.
OVERLOAD = TieredB2bWorkload(duration_s=30.0, rate=26.0, seed=3)
ONE_ENGINE = FleetSpec(pools=(PoolSpec("shared", "l40s", 1),))


def run(spec: FleetSpec, admission: AdmissionPolicy | None) -> FleetResult:
    return simulate(spec, make_policy("least-loaded"), OVERLOAD, admission=admission)


@pytest.fixture(scope="module")
def fifo() -> FleetResult:
    return run(ONE_ENGINE, None)


@pytest.fixture(scope="module")
def admitted() -> FleetResult:
    return run(ONE_ENGINE, AdmissionPolicy())


def test_admission_keeps_gold_within_its_ttft_slo_where_fifo_does_not(
    fifo: FleetResult, admitted: FleetResult
) -> None:
    baseline = fifo.attainment_by("tier", ttft_only=True)
    ours = admitted
    attained = ours.attainment_by("tier", ttft_only=True)
    assert baseline["gold"] < 0.8
    assert attained["gold"] >= 0.98
    assert attained["silver"] > baseline["silver"]
    # Bronze pays: it is shed (with a reason), never served late.
    statuses = {o.status for o in ours.outcomes if o.tier == "bronze"}
    assert "rejected:overloaded" in statuses


def test_decisions_and_holds_are_recorded_in_the_results(admitted: FleetResult) -> None:
    result = admitted
    metrics = result.metrics()
    counted = sum(metrics.get(f"decisions_{d}", 0.0) for d in ("admitted", "queued", "rejected"))
    assert counted == metrics["requests"]
    assert metrics["decisions_queued"] > 0
    held = [o for o in result.outcomes if o.decision == "queued" and o.status == "ok"]
    assert held
    # A held request's TTFT counts from its arrival, the hold included.
    assert all(o.ttft >= o.held_s > 0 for o in held)
    rejected = sum(v for k, v in metrics.items() if k.startswith("rejected_"))
    assert rejected == metrics["rejected"]
    assert metrics["reject_decision_p99_ms"] >= 0


def test_gold_overflows_to_the_burst_pool_and_nobody_else_does() -> None:
    spec = FleetSpec(
        pools=(PoolSpec("shared", "l40s", 1), PoolSpec("burst", "l40s", 1, burst=True))
    )
    result = run(spec, AdmissionPolicy())
    on_burst = {o.tier for o in result.outcomes if o.endpoint and o.endpoint.startswith("burst")}
    assert on_burst == {"gold"}
    assert any(o.reason == "burst" for o in result.outcomes)


def test_without_admission_every_request_is_sent_at_once(fifo: FleetResult) -> None:
    result = fifo
    assert {o.decision for o in result.outcomes} == {"admitted"}
    assert all(o.held_s == 0 for o in result.outcomes)


def test_a_tenant_at_10x_its_share_is_held_and_shed_before_its_tier_mates() -> None:
    # About 0.9x of one L40S, of which the noisy silver tenant sends the largest part.
    workload = TieredB2bWorkload(duration_s=30.0, rate=8.0, seed=3, noisy_tenant="silver-00")
    result = simulate(
        ONE_ENGINE, make_policy("least-loaded"), workload, admission=AdmissionPolicy()
    )
    silver = [o for o in result.outcomes if o.tier == "silver"]
    noisy = [o for o in silver if o.tenant == "silver-00"]
    peers = [o for o in silver if o.tenant != "silver-00"]

    def refused(outcomes: list[RequestOutcome]) -> float:
        return sum(o.status.startswith("rejected") for o in outcomes) / len(outcomes)

    def held(outcomes: list[RequestOutcome]) -> float:
        return sum(o.decision != "admitted" for o in outcomes) / len(outcomes)

    assert held(noisy) > 0.3 and refused(noisy) > 0.1
    assert held(peers) < held(noisy) / 3 and refused(peers) < 0.02


def test_a_request_not_scheduled_yet_queues_only_the_prompt_the_cache_lacks() -> None:
    # As in the gateway: the replica holding a hot preamble must not look a whole prompt behind
    # for each request waiting there, or admission moves the top tier off it.
    engine = VirtualEngine(EngineCore(tiny_profile()))
    preamble = list(range(100, 132))  # 8 blocks of 4
    first = build_prompt([preamble, [1, 2]])
    engine.submit("first", first.token_ids, 2, 0.0, block_hashes=first.block_hashes(4))
    engine.drain()
    second = build_prompt([preamble, [3, 4, 5]])
    cached = cached_prompt_tokens(engine, second)
    engine.submit("second", second.token_ids, 2, engine.clock, block_hashes=second.block_hashes(4))
    engine.advance_to(engine.clock)  # taken in, not scheduled yet
    assert [r.req_id for r in engine.core.waiting] == ["second"]

    assert cached == 32
    estimated = engine_load(engine, EndpointLoad(), {"second": second.num_tokens - cached})
    assert estimated.queued_prompt_tokens == 3
    assert engine_load(engine, EndpointLoad()).queued_prompt_tokens == 35  # no estimate given


def test_a_remote_prefill_counts_one_token_queued_until_a_preemption_loses_its_kv() -> None:
    # Two requests that cannot both grow in a 12-block cache: the newer, whose KV came from a
    # prefill engine, is preempted and must prefill its whole prompt here.
    engine = VirtualEngine(EngineCore(tiny_profile(kv_cache_blocks=12, max_model_len=48)))
    engine.submit("old", list(range(20)), 20, 0.0)
    engine.submit("new", list(range(500, 520)), 20, 0.0, remote_prefill=True)
    estimates = {"old": 20, "new": 1}  # what the simulator records when it hands "new" over
    engine.advance_to(0.0)
    assert engine_load(engine, EndpointLoad(), estimates).queued_prompt_tokens == 21

    now = 0.0
    while not engine.core.counters.preemptions:
        now += engine.core.step(now).duration
    assert [r.req_id for r in engine.core.waiting] == ["new"]
    assert engine_load(engine, EndpointLoad(), estimates).queued_prompt_tokens == 20
