"""What ``trunkline bench fidelity`` measured on real vLLM, kept in ``DIR/measurements.json``.

A recording holds everything the simulated sides are fitted to and compared with: the lone
prompts' engine TTFTs, the decode batches' inter-token latencies, the API server's delay of each
lone prompt, the engine's CPU accounting, and every load's client-side measurements and engine
histograms (requests themselves are rebuilt from each load's spec and the seed). With
``--measurements FILE`` the bench fits and compares again from a recording, without vLLM: the
simulator can be changed and judged against the same real run in seconds, and anyone can check
a published figure.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trunkline.bench._engine_side import CpuTimes, EngineTotals
from trunkline.bench._fidelity_replay import RealRun
from trunkline.workloads.driver import Measured

__all__ = ["FORMAT", "Recording"]

FORMAT = "trunkline-fidelity-measurements/1"


@dataclass(frozen=True, slots=True)
class Recording:
    seed: int
    engine: str
    """Which vLLM, model and CPU layout produced it."""
    prefill: Sequence[tuple[int, float]]
    """``(prompt tokens, median engine TTFT)`` of lone prompts."""
    decode: Sequence[tuple[int, float]]
    """``(requests decoding together, median inter-token latency)``."""
    api_server_s: Sequence[float]
    """Client TTFT less engine TTFT of every lone prompt."""
    isolated_cpu: CpuTimes
    """The model worker's CPU accounting over the lone prompts and decode batches."""
    runs: Mapping[str, RealRun]
    """Every load by name; the ranking load's runs as ``ranking.<policy>``."""
    load_average: Mapping[str, Sequence[float]]
    specs: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)
    """Each load's spec (:class:`trunkline.fleet.replay.Load` fields) by name, as measured."""

    def check_spec(self, name: str, spec: Sequence[Any]) -> None:
        """Fail if the load ``name`` was measured with another spec than ``spec``."""
        recorded = self.specs.get(name)
        if recorded is not None and list(recorded) != list(spec):
            raise ValueError(
                f"load {name!r} was recorded as {list(recorded)}, not {list(spec)}: the requests "
                "rebuilt from the seed would not be the ones measured"
            )

    def save(self, path: Path) -> None:
        document = {
            "format": FORMAT,
            "seed": self.seed,
            "engine": self.engine,
            "prefill": [list(p) for p in self.prefill],
            "decode": [list(d) for d in self.decode],
            "api_server_s": list(self.api_server_s),
            "isolated_cpu": _cpu(self.isolated_cpu),
            "runs": {name: _run(run) for name, run in self.runs.items()},
            "load_average": {k: list(v) for k, v in self.load_average.items()},
            "specs": {name: list(spec) for name, spec in self.specs.items()},
        }
        path.write_text(json.dumps(document, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Recording:
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable measurements file: {exc}") from exc
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise ValueError(f"{path}: not a measurements file (format {FORMAT!r} expected)")
        try:
            return cls(
                seed=int(document["seed"]),
                engine=str(document["engine"]),
                prefill=[(int(n), float(s)) for n, s in document["prefill"]],
                decode=[(int(n), float(s)) for n, s in document["decode"]],
                api_server_s=[float(s) for s in document["api_server_s"]],
                isolated_cpu=CpuTimes(*document["isolated_cpu"]),
                runs={name: _real_run(run) for name, run in document["runs"].items()},
                load_average={k: tuple(v) for k, v in document["load_average"].items()},
                specs={name: list(spec) for name, spec in document.get("specs", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: malformed measurements: {exc!r}") from exc


def _cpu(times: CpuTimes) -> list[float]:
    return [times.run_s, times.wait_s]


def _run(run: RealRun) -> dict[str, Any]:
    return {
        "measured": [dataclasses.asdict(m) for m in run.measured],
        "engine": {name: list(pair) for name, pair in run.engine.totals.items()},
        "cpu": _cpu(run.cpu),
    }


def _real_run(document: Mapping[str, Any]) -> RealRun:
    return RealRun(
        [Measured(**m) for m in document["measured"]],
        EngineTotals({name: (float(s), float(c)) for name, (s, c) in document["engine"].items()}),
        CpuTimes(*document["cpu"]),
    )
