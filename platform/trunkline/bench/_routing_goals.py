"""The goals of ``trunkline bench routing`` (issue 4), each measured from a section's runs.

Pure: every builder takes the name of the policy judged ("ours") and returns
:class:`~trunkline.bench.report.GoalSpec` objects whose ``measure`` reads the runs, so the
figures in ``result.json`` are computed, never typed in. A variant that did not run gives NaN,
which never meets its target.
"""

from __future__ import annotations

import math

from trunkline.bench._routing_common import goal, ratio_of, value_of
from trunkline.bench.report import GoalSpec, Runs

__all__ = [
    "DEFAULT_CHUNK_RUN",
    "LOAD_BALANCE_MAX",
    "azure_goals",
    "care_goals",
    "hetero_goals",
    "mooncake_goals",
    "real_vllm_goals",
    "scaling_goals",
]

LOAD_BALANCE_MAX = 1.15
"""Max over mean requests per replica a prefix-aware policy may reach on Mooncake."""


def mooncake_goals(ours: str) -> list[GoalSpec]:
    return [
        goal(
            f"{ours}: prefix-hit rate / unbounded-cache oracle",
            ">= 0.85",
            lambda r: value_of(r, ours, "hit_rate_vs_oracle"),
        ),
        goal(
            f"{ours}: prefix-hit rate / round-robin's",
            ">= 3",
            lambda r: ratio_of(r, ours, "round-robin", "prefix_hit_rate"),
        ),
        goal(
            f"{ours}: max / mean requests per replica",
            f"<= {LOAD_BALANCE_MAX}",
            lambda r: value_of(r, ours, "requests_max_over_mean"),
        ),
        goal(
            "prefix-only hot-spots: its max / mean requests per replica",
            f"> {LOAD_BALANCE_MAX}",
            lambda r: value_of(r, "prefix-only", "requests_max_over_mean"),
        ),
    ]


def care_goals(ours: str) -> list[GoalSpec]:
    return [
        goal(
            f"{ours}: output tokens per GPU-second / round-robin's, each at its highest rate "
            "meeting p90 TTFT <= 1 s",
            ">= 2",
            lambda r: ratio_of(r, ours, "round-robin", "output_tokens_per_gpu_s"),
        )
    ]


def azure_goals(ours: str) -> list[GoalSpec]:
    return [
        goal(
            f"{ours}: goodput at the SLO / round-robin's (no regression worse than 5 %)",
            ">= 0.95",
            lambda r: ratio_of(r, ours, "round-robin", "goodput_rps"),
        )
    ]


def scaling_goals(ours: str) -> list[GoalSpec]:
    return [
        goal(
            f"{ours}: Azure conversation goodput at the SLO, 2 replicas / 1",
            ">= 1.9",
            lambda r: value_of(r, ours, "azure_scaling"),
        ),
        goal(
            f"{ours}: care goodput at the SLO, 2 replicas / 1",
            ">= 2.0",
            lambda r: value_of(r, ours, "care_scaling"),
        ),
    ]


def _cost_ratio(runs: Runs) -> float:
    return value_of(runs, "cheapest mix", "cost_per_hour_usd") / value_of(
        runs, "best single flavor", "cost_per_hour_usd"
    )


def hetero_goals() -> list[GoalSpec]:
    return [
        goal(
            "cheapest mix meeting the SLO: cost per hour / the best single flavor's",
            "<= 0.9",
            _cost_ratio,
        )
    ]


DEFAULT_CHUNK_RUN = "one pool, vLLM's chunk"
"""The placement section's run of one pool whose engines keep vLLM's default prefill chunk."""
PD_RUN = "prefill/decode, mixed flavors"
"""The placement section's run of prefill pools handing their KV to decode pools."""


def placement_goals() -> list[GoalSpec]:
    return [
        goal(
            "mixed flavors (placed by prompt length, or prefill/decode): cost per hour / the "
            "cheapest single flavor's (placed or not)",
            "<= 0.9",
            _placement_ratio,
        )
    ]


def _placement_ratio(runs: Runs) -> float:
    singles = [
        value_of(runs, name, "cost_per_hour_usd")
        for name in (DEFAULT_CHUNK_RUN, "one pool", "placed, one flavor")
    ]
    best = min((c for c in singles if not math.isnan(c)), default=math.nan)
    mixes = [
        value_of(runs, name, "cost_per_hour_usd") for name in ("placed, mixed flavors", PD_RUN)
    ]
    return min((c for c in mixes if not math.isnan(c)), default=math.nan) / best


def real_vllm_goals(ours: str) -> list[GoalSpec]:
    return [
        goal(
            f"{ours}: cached-token share / round-robin's (real vLLM)",
            "> 1",
            lambda r: ratio_of(r, ours, "round-robin", "cached_token_share"),
        ),
        goal(
            f"{ours}: measured 2-replica scaling ratio (real vLLM)",
            ">= 1.8",
            lambda r: value_of(r, ours, "scaling_2_over_1"),
        ),
    ]
