"""``trunkline bench overhead``: the latency the gateway adds to a direct engine call.

One simulated vLLM engine (``trunkline sim --time-scale 0``, so it answers as fast as it can)
and one gateway in front of it (:mod:`trunkline.bench._gateway_server`) each run in a process of
their own. A single keep-alive client sends the same non-streamed chat completion N times
straight to the engine (``direct``, the baseline) and N times through the gateway (``gateway``),
interleaved in blocks after an uncounted warm-up. The difference between the two is what the
gateway's request path (authenticate, entitle, route, proxy, meter) costs one request.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx
import msgspec

from trunkline.bench.plot import plot_latency_cdf
from trunkline.bench.processes import (
    LOOPBACK,
    ServerProcess,
    free_loopback_ports,
    python_module,
)
from trunkline.bench.report import BenchResult, GoalSpec, Runs, write_result
from trunkline.bench.stats import latency_summary_ms
from trunkline.bench.timing import time_interleaved
from trunkline.errors import TrunklineError

__all__ = ["GOALS", "VARIANTS", "OverheadConfig", "run_overhead"]

VARIANTS = ("direct", "gateway")
ALIAS = "bench-chat"
DEFAULT_PROMPT = "In one sentence: why does my router drop packets when the uplink is saturated?"


def _added(metric: str) -> Callable[[Runs], float]:
    def measure(runs: Runs) -> float:
        return runs["gateway"][metric] - runs["direct"][metric]

    return measure


GOALS = (
    GoalSpec("added p50 latency (ms)", "<= 2", _added("p50_ms")),
    GoalSpec("added p99 latency (ms)", "<= 10", _added("p99_ms")),
)


@dataclass(frozen=True, slots=True)
class OverheadConfig:
    requests: int = 1000
    """Measured requests per variant."""
    warmup: int = 50
    """Uncounted requests per variant sent first."""
    block: int = 50
    """Consecutive requests of one variant before switching to the other."""
    model: str = "bench-llama-8b"
    profile: str = "h100"
    prompt: str = DEFAULT_PROMPT
    max_tokens: int = 16
    startup_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.requests < 2 or self.warmup < 0 or self.block < 1 or self.max_tokens < 1:
            raise ValueError("need requests >= 2, warmup >= 0, block >= 1 and max_tokens >= 1")


@dataclass(frozen=True, slots=True)
class _Target:
    url: str
    headers: dict[str, str]
    body: bytes


def run_overhead(
    config: OverheadConfig, out_dir: Path, *, progress: TextIO | None = None
) -> BenchResult:
    """Run the benchmark and write ``result.json`` and ``latency.png`` into ``out_dir``."""
    say = _printer(progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Exiting the stack stops both servers, whatever happened (Ctrl-C included).
    with (
        tempfile.TemporaryDirectory(prefix="trunkline-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        say("starting the engine and the gateway (one process each)")
        targets = _start_servers(config, out_dir / "logs", Path(tmp) / "api-key", stack)
        client = stack.enter_context(httpx.Client(timeout=30.0, trust_env=False))
        calls = {name: _caller(client, target) for name, target in targets.items()}
        usage = _probe(client, targets)
        say(f"warm-up: {config.warmup} requests per variant")
        time_interleaved(calls, config.warmup, config.block)
        say(f"measuring: {config.requests} requests per variant, blocks of {config.block}")
        samples = time_interleaved(calls, config.requests, config.block)
    runs = {name: latency_summary_ms(samples[name]) for name in VARIANTS}
    result = BenchResult.build(
        "overhead", simulated=True, inputs=_inputs(config, usage), runs=runs, goals=GOALS
    )
    write_result(out_dir, result)
    plot_latency_cdf(
        {name: [s * 1000.0 for s in samples[name]] for name in VARIANTS},
        out_dir / "latency.png",
        title=f"gateway overhead, simulated {config.profile} engine, n={config.requests}",
        labels={
            name: f"{name}: p50 {m['p50_ms']:.2f} ms, p99 {m['p99_ms']:.2f} ms"
            for name, m in runs.items()
        },
    )
    return result


def _start_servers(
    config: OverheadConfig, log_dir: Path, key_file: Path, stack: contextlib.ExitStack
) -> dict[str, _Target]:
    engine_port, gateway_port = free_loopback_ports(2)
    engine_url = f"http://{LOOPBACK}:{engine_port}"
    gateway_url = f"http://{LOOPBACK}:{gateway_port}"
    engine = stack.enter_context(
        ServerProcess(
            "engine",
            python_module(
                "trunkline.cli.main", "sim", "--model", config.model, "--profile", config.profile,
                "--host", LOOPBACK, "--port", str(engine_port), "--time-scale", "0",
            ),
            log_dir / "engine.log",
        )
    )  # fmt: skip
    gateway = stack.enter_context(
        ServerProcess(
            "gateway",
            python_module(
                "trunkline.bench._gateway_server", "--engine-url", engine_url,
                "--model", config.model, "--alias", ALIAS, "--profile", config.profile,
                "--host", LOOPBACK, "--port", str(gateway_port), "--key-file", str(key_file),
            ),
            log_dir / "gateway.log",
        )
    )  # fmt: skip
    # Both start at once; the gateway needs no engine to become ready.
    engine.wait_ready(f"{engine_url}/health", config.startup_timeout_s)
    gateway.wait_ready(f"{gateway_url}/health", config.startup_timeout_s)
    return _targets(config, engine_url, gateway_url, key_file.read_text().strip())


def _targets(
    config: OverheadConfig, engine_url: str, gateway_url: str, api_key: str
) -> dict[str, _Target]:
    """The same request for both variants; only the model name and the key differ."""
    messages = [{"role": "user", "content": config.prompt}]

    def body(model: str) -> bytes:
        payload = {"model": model, "messages": messages, "max_tokens": config.max_tokens}
        return msgspec.json.encode(payload)

    json_type = {"content-type": "application/json"}
    return {
        "direct": _Target(f"{engine_url}/v1/chat/completions", json_type, body(config.model)),
        "gateway": _Target(
            f"{gateway_url}/v1/chat/completions",
            {**json_type, "authorization": f"Bearer {api_key}"},
            body(ALIAS),
        ),
    }


def _caller(client: httpx.Client, target: _Target) -> Callable[[], None]:
    def call() -> None:
        response = client.post(target.url, content=target.body, headers=target.headers)
        if response.status_code != 200:
            raise _bad_answer(target, response)

    return call


def _probe(client: httpx.Client, targets: dict[str, _Target]) -> dict[str, int]:
    """Check both variants answer the same completion; return the usage of one request."""
    usages = {}
    for name, target in targets.items():
        response = client.post(target.url, content=target.body, headers=target.headers)
        if response.status_code != 200:
            raise _bad_answer(target, response)
        usage = response.json().get("usage") or {}
        usages[name] = {k: int(usage.get(k, 0)) for k in ("prompt_tokens", "completion_tokens")}
    if usages["direct"]["prompt_tokens"] != usages["gateway"]["prompt_tokens"]:
        raise TrunklineError(
            f"the two variants sent different prompts: {usages}", reason="benchmark_mismatch"
        )
    return usages["direct"]


def _bad_answer(target: _Target, response: httpx.Response) -> TrunklineError:
    return TrunklineError(
        f"{target.url} answered HTTP {response.status_code}: {response.text[:500]}",
        reason="benchmark_request_failed",
    )


def _inputs(config: OverheadConfig, usage: dict[str, int]) -> dict[str, Any]:
    return {
        "n": config.requests,
        "warmup": config.warmup,
        "block": config.block,
        "prompt": config.prompt,
        "max_tokens": config.max_tokens,
        "stream": False,
        "model": config.model,
        "engine_profile": config.profile,
        "engine_time_scale": 0,
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "machine_cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "http_server": _server_stack(),
    }


def _server_stack() -> str:
    """The uvicorn loop and HTTP parsers the servers get: uvicorn picks the fastest installed,
    but for the gateway's parser (h11, for its header timeout, as in production)."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return f"uvicorn ({loop}, gateway h11, engine {http})"


def _printer(stream: TextIO | None) -> Callable[[str], None]:
    def say(line: str) -> None:
        if stream is not None:
            print(line, file=stream, flush=True)

    return say
