"""Build workloads by name: ``care``, ``netops``, ``b2b``, ``b2b-tiers`` and the four trace
replays.

A spec reads ``NAME`` or ``NAME:knob=value,knob=value`` (``care:rate=8,turns=4``); the knobs are
the workload's dataclass fields, converted to the type of their default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trunkline.errors import ConfigurationError
from trunkline.workloads.b2b import B2bWorkload
from trunkline.workloads.b2b_tiers import TieredB2bWorkload
from trunkline.workloads.care import CareWorkload
from trunkline.workloads.netops import NetopsWorkload
from trunkline.workloads.schemas import Workload
from trunkline.workloads.traces import AzureTrace, MooncakeTrace, default_data_dir, trace_path

__all__ = ["WORKLOAD_NAMES", "make_workload", "parse_spec"]

_GENERATORS: dict[str, Callable[..., Workload]] = {
    "care": CareWorkload,
    "netops": NetopsWorkload,
    "b2b": B2bWorkload,
    "b2b-tiers": TieredB2bWorkload,
}
_TRACES: dict[str, Callable[..., Workload]] = {
    "azure-conv": AzureTrace,
    "azure-code": AzureTrace,
    "mooncake-conv": MooncakeTrace,
    "mooncake-synthetic": MooncakeTrace,
}
WORKLOAD_NAMES = (*_GENERATORS, *_TRACES)
_NOT_KNOBS = frozenset({"name", "path"})


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    name, _, rest = spec.partition(":")
    knobs: dict[str, str] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(
                f"workload knob {item!r} must read key=value", param="workload"
            )
        knobs[key.strip().replace("-", "_")] = value.strip()
    return name.strip(), knobs


def make_workload(
    spec: str,
    *,
    seed: int | None = None,
    duration_s: float | None = None,
    data_dir: Path | None = None,
) -> Workload:
    """The workload ``spec`` names; ``seed`` and ``duration_s`` override the knobs' defaults."""
    name, raw = parse_spec(spec)
    if name in _GENERATORS:
        factory, fixed = _GENERATORS[name], {}
    elif name in _TRACES:
        path = trace_path(data_dir or default_data_dir(), name)
        factory, fixed = _TRACES[name], {"path": path, "name": name}
    else:
        raise ConfigurationError(
            f"unknown workload {name!r}; known workloads: {', '.join(WORKLOAD_NAMES)}",
            param="workload",
        )
    fields = {f.name: f for f in dataclasses.fields(factory) if f.name not in _NOT_KNOBS}  # type: ignore[arg-type]
    knobs: dict[str, Any] = {key: _convert(name, fields, key, value) for key, value in raw.items()}
    if seed is not None and "seed" in fields:
        knobs.setdefault("seed", seed)
    if duration_s is not None:
        knobs.setdefault("duration_s", duration_s)
    return factory(**fixed, **knobs)


def _convert(
    workload: str, fields: dict[str, dataclasses.Field[Any]], key: str, value: str
) -> object:
    field = fields.get(key)
    if field is None:
        known = ", ".join(sorted(fields))
        raise ConfigurationError(
            f"workload {workload!r} has no knob {key!r}; its knobs: {known}", param="workload"
        )
    default = field.default
    if default is None and str(field.type).startswith("str"):
        return value  # an optional name, such as b2b-tiers' noisy_tenant
    try:
        if isinstance(default, bool):
            return value.lower() in ("1", "true", "yes", "on")
        if default is None or isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise ConfigurationError(
            f"workload knob {key}={value!r} is not a number", param="workload"
        ) from None
    return value
