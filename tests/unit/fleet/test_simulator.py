"""The fleet simulator: deterministic, routed by the gateway's policies, and its accounting."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import pytest

from trunkline.engines import get_profile
from trunkline.fleet import FleetSpec, PoolSpec, simulate
from trunkline.gateway.admission import AdmissionPolicy, Decision
from trunkline.gateway.routing import EndpointView, RequestView, make_policy
from trunkline.snapshot import TierEntry
from trunkline.workloads import CareWorkload, Prompt, WorkloadRequest, segment, stable_key

CARE = CareWorkload(duration_s=40, rate=3)


def test_a_run_is_deterministic_for_a_seed() -> None:
    spec = FleetSpec.uniform("h100", 3, seed=4)
    first = simulate(spec, make_policy("round-robin"), CARE).metrics()
    again = simulate(spec, make_policy("round-robin"), CARE).metrics()
    assert first == again
    other = simulate(spec, make_policy("round-robin"), replace(CARE, seed=2)).metrics()
    assert other != first


def test_batched_decoding_changes_no_metric() -> None:
    spec = FleetSpec.uniform("a100", 2)
    batched = simulate(spec, make_policy("least-loaded"), CARE).metrics()
    stepped = simulate(spec, make_policy("least-loaded"), CARE, batch_decodes=False).metrics()
    assert batched.keys() == stepped.keys()
    for name, value in batched.items():
        assert value == pytest.approx(stepped[name], rel=1e-9), name


@dataclass(frozen=True)
class Scripted:
    """A hand-written workload: (arrival, tenant, prompt tokens, max tokens)."""

    rows: tuple[tuple[float, str, int, int], ...]
    tenant_tiers: Mapping[str, str] = field(default_factory=lambda: {"a": "gold", "b": "bronze"})
    name: str = "scripted"
    duration_s: float = 10.0

    @property
    def tenants(self) -> Mapping[str, str]:
        return self.tenant_tiers

    def requests(self) -> Iterator[WorkloadRequest]:
        for index, (at, tenant, tokens, max_tokens) in enumerate(self.rows):
            prompt = Prompt(segment(stable_key("scripted", index), tokens))
            yield WorkloadRequest(f"s{index}", at, tenant, prompt, max_tokens)


def test_round_robin_and_least_loaded_place_requests_differently() -> None:
    # A long request first, then short ones that each end before the next: least-loaded keeps
    # them off the engine still busy with the long one, round-robin alternates.
    rows = ((0.0, "a", 6000, 400), *((0.4 * i, "a", 50, 20) for i in range(1, 7)))
    workload = Scripted(rows)
    spec = FleetSpec.uniform("h100", 2)
    rr = simulate(spec, make_policy("round-robin"), workload)
    ll = simulate(spec, make_policy("least-loaded"), workload)
    on_busy = {r.outcomes[0].endpoint for r in (rr, ll)}
    assert len(on_busy) == 1
    busy = on_busy.pop()
    assert sum(o.endpoint == busy for o in rr.outcomes) == 4
    assert sum(o.endpoint == busy for o in ll.outcomes) == 1


def test_long_prompts_run_on_the_pool_placed_for_them_and_short_ones_elsewhere() -> None:
    spec = FleetSpec(
        pools=(
            PoolSpec("long", "l40s", 2, min_prompt_tokens=2048),
            PoolSpec("short", "h100", 1, max_prompt_tokens=2048),
        )
    )
    rows = tuple((0.05 * i, "a", 6000 if i % 3 == 0 else 300, 20) for i in range(30))
    for name in ("prefix-aware", "cost-aware"):
        result = simulate(spec, make_policy(name), Scripted(rows))
        pools = {(o.prompt_tokens >= 2048, o.endpoint.split("/")[0]) for o in result.outcomes}
        assert pools == {(True, "long"), (False, "short")}, name


def test_each_tier_runs_only_on_the_pools_open_to_it() -> None:
    spec = FleetSpec(
        pools=(
            PoolSpec("gold", "h100", 1, tiers=("gold",)),
            PoolSpec("rest", "l40s", 2, tiers=("silver", "bronze")),
        )
    )
    # Bronze arrives first and in bulk: without placement some would land on the idle H100.
    rows = tuple((0.02 * i, "b" if i % 4 else "a", 500, 20) for i in range(40))
    for name in ("least-loaded", "cost-aware"):
        result = simulate(spec, make_policy(name), Scripted(rows))
        pools = {(o.tenant, o.endpoint.split("/")[0]) for o in result.outcomes}
        assert pools == {("a", "gold"), ("b", "rest")}, name


def test_a_pool_placed_for_a_tier_the_fleet_lacks_is_refused() -> None:
    spec = FleetSpec(pools=(PoolSpec("p", "h100", 1, tiers=("platinum",)),))
    with pytest.raises(ValueError, match="platinum"):
        simulate(spec, make_policy("round-robin"), Scripted(((0.0, "a", 10, 1),)))
    with pytest.raises(ValueError, match="tiers must name one at least"):
        PoolSpec("p", "h100", 1, tiers=())


def test_a_pool_placed_for_no_prompt_length_is_refused() -> None:
    with pytest.raises(ValueError, match="max_prompt_tokens must exceed"):
        PoolSpec("p", "h100", 1, min_prompt_tokens=4096, max_prompt_tokens=4096)


def test_a_pools_smaller_prefill_chunk_speeds_its_decoding_and_slows_long_prefills() -> None:
    # One request decodes while a 6,000-token prompt is prefilled beside it, chunk by chunk.
    workload = Scripted(((0.0, "a", 50, 100), (0.1, "a", 6000, 5)))

    def run(chunk: int | None) -> tuple[float, float]:
        spec = FleetSpec(pools=(PoolSpec("p", "l40s", 1, max_num_batched_tokens=chunk),))
        decoding, prefilled = simulate(spec, make_policy("round-robin"), workload).outcomes
        return decoding.tpot, prefilled.ttft

    vllm_default = get_profile("l40s").max_num_batched_tokens
    assert run(None) == run(vllm_default)
    default_tpot, default_ttft = run(None)
    small_tpot, small_ttft = run(vllm_default // 4)
    assert small_tpot < default_tpot
    assert small_ttft > default_ttft
    with pytest.raises(ValueError, match="max_num_batched_tokens must be at least 1"):
        PoolSpec("p", "l40s", 1, max_num_batched_tokens=0)


def test_a_tenant_with_no_pool_in_its_regions_is_rejected_and_misses_its_slo() -> None:
    spec = FleetSpec(
        pools=(PoolSpec("eu-pool", "h100", 1, region="eu"),), tenant_regions={"b": ("us",)}
    )
    result = simulate(
        spec, make_policy("round-robin"), Scripted(((0.0, "a", 50, 5), (0.1, "b", 50, 5)))
    )
    statuses = {o.tenant: o.status for o in result.outcomes}
    assert statuses == {"a": "ok", "b": "rejected:no_endpoint"}
    assert result.attainment_by("tenant") == {"a": 1.0, "b": 0.0}
    assert result.metrics()["rejected"] == 1


def test_a_request_over_the_context_length_is_invalid_like_a_vllm_400() -> None:
    too_long = get_profile("h100").max_model_len
    result = simulate(
        FleetSpec.uniform("h100", 1),
        make_policy("round-robin"),
        Scripted(((0.0, "a", too_long, 10), (0.0, "a", 100, 10))),
    )
    assert [o.status for o in result.outcomes] == ["invalid", "ok"]


class RejectBronze(AdmissionPolicy):
    def decide(
        self, request: RequestView, tier: TierEntry, ranked: Sequence[EndpointView], now: float
    ) -> Decision:
        if tier.name == "bronze":
            return Decision.reject("slo_unattainable", 1.0)
        return Decision.admit(0, 0.0)


def test_the_admission_hook_sees_each_request_and_its_rejections_are_counted() -> None:
    workload = Scripted(((0.0, "a", 50, 5), (0.1, "b", 50, 5), (0.2, "b", 50, 5)))
    result = simulate(
        FleetSpec.uniform("h100", 1), make_policy("round-robin"), workload, admission=RejectBronze()
    )
    rejected = "rejected:slo_unattainable"
    assert [o.status for o in result.outcomes] == ["ok", rejected, rejected]
    metrics = result.metrics()
    assert (metrics["slo_attainment_gold"], metrics["slo_attainment_bronze"]) == (1.0, 0.0)


def test_slo_attainment_follows_the_tier_objectives() -> None:
    # Gold wants TTFT <= 500 ms: a 60k-token prompt on an L40S takes seconds to prefill.
    workload = Scripted(((0.0, "a", 60_000, 5), (0.0, "b", 60_000, 5)))
    result = simulate(FleetSpec.uniform("l40s", 2), make_policy("round-robin"), workload)
    outcome = {o.tenant: o for o in result.outcomes}
    assert outcome["a"].ttft > 0.5 and not outcome["a"].slo_met
    assert outcome["b"].ttft < 10 and outcome["b"].slo_met  # bronze: 10 s, no ITL objective


def test_cost_is_the_hourly_price_of_every_replica_over_the_run() -> None:
    spec = FleetSpec(pools=(PoolSpec("p", "h100", 2, cost_per_hour=3.6),))
    result = simulate(spec, make_policy("round-robin"), CARE)
    metrics = result.metrics()
    assert metrics["cost_usd"] == pytest.approx(2 * 3.6 * metrics["horizon_s"] / 3600)
    assert metrics["gpu_seconds"] == pytest.approx(2 * metrics["horizon_s"])
    tokens = metrics["total_tokens_per_s"] * metrics["horizon_s"]
    assert metrics["cost_per_1m_tokens_usd"] == pytest.approx(metrics["cost_usd"] / tokens * 1e6)
    assert 0 < metrics["utilisation"] <= 1


def test_prefix_hits_are_measured_and_bounded_by_the_oracle() -> None:
    from trunkline.workloads import token_oracle

    workload = CareWorkload(duration_s=60, rate=2, turns=4, think_s=4)
    result = simulate(FleetSpec.uniform("h100", 4), make_policy("round-robin"), workload)
    hit_rate = result.metrics()["prefix_hit_rate"]
    assert 0.3 < hit_rate <= token_oracle(workload.requests(), 16).token_hit_rate


def _disaggregated(link_bytes_per_s: float = 12.5e9) -> FleetSpec:
    return FleetSpec(
        pools=(
            PoolSpec("prefill", "l40s", 2, role="prefill", min_prompt_tokens=1024),
            PoolSpec("decode", "h200", 1, role="decode"),
        ),
        kv_transfer_bytes_per_s=link_bytes_per_s,
    )


def test_prefill_pools_prefill_long_prompts_and_hand_them_to_the_decode_pool() -> None:
    rows = tuple((0.1 * i, "b", 6000 if i % 2 else 300, 30) for i in range(20))
    for name in ("round-robin", "prefix-aware", "cost-aware"):
        result = simulate(_disaggregated(), make_policy(name), Scripted(rows))
        assert all(o.status == "ok" for o in result.outcomes), name
        # Every request is served (decoded) by the decode pool; only the long prompts went
        # through a prefill engine first, and their TTFT includes that detour.
        assert {o.endpoint for o in result.outcomes} == {"decode/0"}, name
        for outcome in result.outcomes:
            long = outcome.prompt_tokens >= 1024
            assert (outcome.prefill_endpoint is not None) == long, name
            assert (outcome.remote_prefill_s > 0) == long, name
            assert outcome.ttft > outcome.remote_prefill_s, name
            assert outcome.completion_tokens == 30, name
        prefill_engines = [e for e in result.engines if e.pool == "prefill"]
        assert sum(e.requests for e in prefill_engines) == 10, name


def test_a_remote_prefill_waits_for_its_kv_on_the_link() -> None:
    # A 6,000-token prompt's KV is 6,000 x 128 KiB (Llama-3-8B) = 786 MB: 63 ms at 12.5 GB/s,
    # 786 ms at 1 GB/s. The rest of its TTFT (prefill, one decode step) does not change.
    rows = ((0.0, "b", 6000, 10),)
    fast = simulate(_disaggregated(), make_policy("round-robin"), Scripted(rows)).outcomes[0]
    slow = simulate(_disaggregated(1e9), make_policy("round-robin"), Scripted(rows)).outcomes[0]
    transfer = 6000 * 131072
    assert slow.ttft - fast.ttft == pytest.approx(transfer / 1e9 - transfer / 12.5e9, rel=1e-6)


def test_kv_transfers_into_one_decode_engine_take_turns_on_its_link() -> None:
    # Two long prompts prefilled at the same time on two prefill engines: the second KV to
    # arrive waits for the first on the decode engine's link.
    rows = ((0.0, "b", 6000, 10), (0.0, "b", 6000, 10))
    result = simulate(_disaggregated(1e9), make_policy("round-robin"), Scripted(rows))
    first, second = sorted(o.remote_prefill_s for o in result.outcomes)
    assert {o.prefill_endpoint for o in result.outcomes} == {"prefill/0", "prefill/1"}
    assert second - first == pytest.approx(6000 * 131072 / 1e9, rel=1e-3)


def test_a_fleet_of_only_prefill_pools_serves_nothing() -> None:
    spec = FleetSpec(pools=(PoolSpec("prefill", "l40s", 1, role="prefill"),))
    result = simulate(spec, make_policy("round-robin"), Scripted(((0.0, "b", 3000, 10),)))
    assert [o.status for o in result.outcomes] == ["rejected:no_endpoint"]


def test_a_pool_role_must_be_known_and_prefill_pools_are_not_simulated_with_admission() -> None:
    with pytest.raises(ValueError, match="role must be one of both, prefill, decode"):
        PoolSpec("p", "l40s", 1, role="encode")
    with pytest.raises(ValueError, match="admission with prefill pools"):
        simulate(
            _disaggregated(),
            make_policy("round-robin"),
            Scripted(((0.0, "b", 3000, 10),)),
            admission=RejectBronze(),
        )


def test_a_request_over_the_context_is_invalid_before_any_prefill_is_spent_on_it() -> None:
    rows = ((0.0, "b", 6000, 200_000),)  # 6,000 + 200,000 tokens: over Llama-3-8B's 131,072
    result = simulate(_disaggregated(), make_policy("round-robin"), Scripted(rows))
    assert [o.status for o in result.outcomes] == ["invalid"]
    assert sum(e.requests for e in result.engines) == 0


def test_kv_transfers_take_the_links_in_the_order_their_prefills_finish() -> None:
    # A long prompt on prefill/0, then a short one on prefill/1 that finishes its prefill long
    # before; both finish before the next arrival. The short one's KV goes first on the decode
    # engine's link, as if the long one were not there, whichever engine steps first.
    rows = ((0.0, "b", 12000, 10), (0.001, "b", 1100, 10), (30.0, "b", 100, 1))
    both = simulate(_disaggregated(1e9), make_policy("round-robin"), Scripted(rows)).outcomes
    alone = simulate(_disaggregated(1e9), make_policy("round-robin"), Scripted(rows[1:]))
    assert [o.prefill_endpoint for o in both[:2]] == ["prefill/0", "prefill/1"]
    assert both[1].remote_prefill_s == pytest.approx(alone.outcomes[0].remote_prefill_s)
    assert both[1].remote_prefill_s < both[0].remote_prefill_s
