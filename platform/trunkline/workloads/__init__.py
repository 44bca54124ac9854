"""Workloads for the fleet simulator: generators for the shapes Trunkline serves and replays of
public traces, all seeded and repeatable, all streamed request by request.

- :mod:`~trunkline.workloads.care`, :mod:`~trunkline.workloads.netops`,
  :mod:`~trunkline.workloads.b2b` — the customer-care, network-operations and B2B shapes of
  DESIGN.md, with their knobs;
- :mod:`~trunkline.workloads.traces` — Azure 2023 conversation / code and Mooncake conversation /
  synthetic replays from ``../shared/data``;
- :mod:`~trunkline.workloads.mixed` — several workloads merged in arrival order;
- :mod:`~trunkline.workloads.oracle` — the hit rate of an unbounded shared prefix cache;
- :mod:`~trunkline.workloads.registry` — workloads by name, with ``name:knob=value`` specs.
"""

from trunkline.workloads.b2b import B2bWorkload
from trunkline.workloads.care import CareWorkload
from trunkline.workloads.mixed import MixedWorkload, TierSlice
from trunkline.workloads.netops import NetopsWorkload
from trunkline.workloads.oracle import OracleHitRate, mooncake_oracle, token_oracle
from trunkline.workloads.prompts import Prompt, build_prompt, segment, stable_key
from trunkline.workloads.registry import WORKLOAD_NAMES, make_workload, parse_spec
from trunkline.workloads.schemas import Workload, WorkloadRequest
from trunkline.workloads.traces import AzureTrace, MooncakeTrace, default_data_dir

__all__ = [
    "WORKLOAD_NAMES",
    "AzureTrace",
    "B2bWorkload",
    "CareWorkload",
    "MixedWorkload",
    "MooncakeTrace",
    "NetopsWorkload",
    "OracleHitRate",
    "Prompt",
    "TierSlice",
    "Workload",
    "WorkloadRequest",
    "build_prompt",
    "default_data_dir",
    "make_workload",
    "mooncake_oracle",
    "parse_spec",
    "segment",
    "stable_key",
    "token_oracle",
]
