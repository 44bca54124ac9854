"""``trunkline bench quota-accuracy``: do concurrent streams stay within a tokens-per-minute limit?

A real Redis, a simulated vLLM engine and N gateway processes (production wiring: snapshot and
quota counters in Redis) each run in a process of their own. Two tenants, each limited to
``limit`` tokens per minute, send streamed chat completions from many concurrent clients spread
over the gateways; a client that gets a 429 waits as long as ``retry-after-ms`` says, as the
OpenAI SDKs do. The tenants differ only in how the gateways account for them:

- ``settle-after-response`` (the baseline, what many gateways do): admitted while the tenant's
  counter is below the limit, charged when the answer is complete;
- ``reserve-then-settle`` (Trunkline): the prompt estimate plus ``max_tokens`` is reserved
  before the request is sent, and settled to the real usage afterwards.

For every whole UTC minute of the run, the tokens admitted in it are read from the Redis counter
of that window once every request admitted in it has settled. The goal: no window exceeds the
limit by more than one request's reservation.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import random
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import redis

from trunkline.bench._gateway_server import write_secret_file
from trunkline.bench._quota_gateway import publish_world, wait_redis
from trunkline.bench._quota_load import Load, Record, drive, one_reservation
from trunkline.bench.processes import LOOPBACK, ServerProcess, free_loopback_ports, python_module
from trunkline.bench.report import BenchResult, GoalSpec, Metrics, Runs, write_result
from trunkline.errors import TrunklineError

__all__ = ["GOALS", "VARIANTS", "QuotaAccuracyConfig", "run_quota_accuracy"]

BASELINE, RESERVE = "settle-after-response", "reserve-then-settle"
VARIANTS = (BASELINE, RESERVE)
READ_AFTER_S = 30.0
"""A window's counter is read this long after it ends: every request admitted in it is done."""


def _of_reserve(metric: str) -> Callable[[Runs], float]:
    return lambda runs: runs[RESERVE][metric]


GOALS = (
    GoalSpec(
        "reserve-then-settle: tokens over the limit in a window, in reservations of one request",
        "<= 1",
        _of_reserve("max_over_limit_reservations"),
    ),
    GoalSpec(
        "reserve-then-settle: mean share of the limit used",
        ">= 0.8",
        _of_reserve("mean_limit_used"),
    ),
)


@dataclass(frozen=True, slots=True)
class QuotaAccuracyConfig:
    limit: int = 10_000
    """Tokens per minute of each tenant."""
    windows: int = 2
    """Whole UTC minutes measured."""
    clients: int = 16
    """Concurrent streaming clients per variant."""
    gateways: int = 4
    min_tokens: int = 100
    max_tokens: int = 250
    """Each request asks ``max_tokens`` drawn uniformly from this range."""
    model: str = "bench-llama-8b"
    profile: str = "h100"
    time_scale: float = 1.0
    seed: int = 1
    startup_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.windows < 1 or self.clients < 1 or self.gateways < 1 or self.limit < 1:
            raise ValueError("need windows, clients, gateways and limit of at least 1")
        if not 1 <= self.min_tokens <= self.max_tokens:
            raise ValueError("need 1 <= min_tokens <= max_tokens")


@dataclass
class _Platform:
    redis_url: str
    gateway_urls: list[str]
    keys: dict[str, str] = field(default_factory=dict)
    tenants: dict[str, str] = field(default_factory=dict)


def run_quota_accuracy(
    config: QuotaAccuracyConfig, out_dir: Path, *, progress: TextIO | None = None
) -> BenchResult:
    """Run the benchmark and write ``result.json`` and ``windows.png`` into ``out_dir``."""
    say = _printer(progress)
    out_dir.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="trunkline-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        say(f"starting Redis, a simulated engine and {config.gateways} gateways")
        world = _start(config, Path(tmp), out_dir / "logs", stack)
        load = Load(world.gateway_urls, world.keys, config.clients, config.min_tokens,
                    config.max_tokens, random.Random(config.seed))  # fmt: skip
        first = int(time.time() // 60) + 1
        minutes = list(range(first, first + config.windows))
        say(f"load from {2 * config.clients} clients; measuring {config.windows} whole minutes")
        admitted: dict[str, dict[int, int]] = {v: {} for v in VARIANTS}

        def read(minute: int) -> None:
            for variant, tokens in _admitted(world, minute).items():
                admitted[variant][minute] = tokens
            counts = ", ".join(f"{v} {admitted[v][minute]}" for v in VARIANTS)
            say(f"{time.strftime('%H:%M', time.gmtime(minute * 60))} UTC, admitted: {counts}")

        records = asyncio.run(drive(load, minutes, READ_AFTER_S, read))
    reservation = one_reservation(config.max_tokens)
    runs = {v: _metrics(config, v, admitted[v], records, minutes, reservation) for v in VARIANTS}
    result = BenchResult.build(
        "quota-accuracy",
        simulated=True,
        inputs=_inputs(config, reservation),
        runs=runs,
        goals=GOALS,
    )
    write_result(out_dir, result)
    title = f"tokens admitted per UTC minute, {config.gateways} gateways sharing one Redis"
    _plot(admitted, minutes, config.limit, reservation, out_dir / "windows.png", title)
    return result


def _start(
    config: QuotaAccuracyConfig, tmp: Path, log_dir: Path, stack: contextlib.ExitStack
) -> _Platform:
    binary = shutil.which("redis-server")
    if binary is None:
        raise TrunklineError("redis-server not found: apt-get install redis-server")
    redis_port, engine_port, *ports = free_loopback_ports(2 + config.gateways)
    redis_url = f"redis://{LOOPBACK}:{redis_port}/0"
    stack.enter_context(
        ServerProcess(
            "redis",
            [binary, "--port", str(redis_port), "--bind", LOOPBACK, "--save", "",
             "--appendonly", "no", "--dir", str(tmp)],
            log_dir / "redis.log",
        )
    )  # fmt: skip
    engine_url = f"http://{LOOPBACK}:{engine_port}"
    engine = stack.enter_context(
        ServerProcess(
            "engine",
            python_module(
                "trunkline.cli.main", "sim", "--model", config.model, "--profile", config.profile,
                "--host", LOOPBACK, "--port", str(engine_port),
                "--time-scale", str(config.time_scale),
            ),
            log_dir / "engine.log",
        )
    )  # fmt: skip
    wait_redis(redis_url, config.startup_timeout_s)
    world = _Platform(redis_url, [f"http://{LOOPBACK}:{port}" for port in ports])
    secret = secrets.token_hex(32)
    write_secret_file(tmp / "secret", secret)
    published = publish_world(
        redis_url, engine_url, config.model, config.profile, config.limit, secret.encode(),
        VARIANTS,
    )  # fmt: skip
    world.tenants = {variant: tenant for variant, (tenant, _key) in published.items()}
    world.keys = {variant: key for variant, (_tenant, key) in published.items()}
    gateways = [
        stack.enter_context(
            ServerProcess(
                f"gateway-{index}",
                python_module(
                    "trunkline.bench._quota_gateway", "--redis-url", redis_url,
                    "--port", str(port), "--secret-file", str(tmp / "secret"),
                    "--baseline-tenant", world.tenants[BASELINE],
                ),
                log_dir / f"gateway-{index}.log",
            )
        )
        for index, port in enumerate(ports)
    ]  # fmt: skip
    engine.wait_ready(f"{engine_url}/health", config.startup_timeout_s)
    for gateway, url in zip(gateways, world.gateway_urls, strict=True):
        gateway.wait_ready(f"{url}/health", config.startup_timeout_s)
    return world


def _admitted(world: _Platform, minute: int) -> dict[str, int]:
    """Tokens each tenant's counter holds for ``minute`` (read once its requests settled)."""
    from trunkline.quota.store import KeySpace
    from trunkline.quota.windows import MINUTE_MS, windows_at

    windows = windows_at(minute * MINUTE_MS)
    keys = {v: KeySpace().scope_keys(t, "tenant", t, windows)[1] for v, t in world.tenants.items()}
    with redis.Redis.from_url(world.redis_url) as client:
        return {variant: int(client.get(key) or 0) for variant, key in keys.items()}


def _metrics(
    config: QuotaAccuracyConfig,
    variant: str,
    admitted: dict[int, int],
    records: list[Record],
    minutes: list[int],
    reservation: int,
) -> Metrics:
    counts = [admitted[m] for m in minutes]
    over = max(0, max(counts) - config.limit)
    mine = [r for r in records if r.variant == variant and int(r.started // 60) in minutes]
    served = [sum(r.tokens for r in mine if int(r.started // 60) == m) for m in minutes]
    return {
        "max_admitted_tokens": float(max(counts)),
        "mean_admitted_tokens": statistics.fmean(counts),
        "max_over_limit_tokens": float(over),
        "max_over_limit_reservations": over / reservation,
        "mean_limit_used": statistics.fmean(counts) / config.limit,
        "max_client_tokens_per_window": float(max(served)),
        "requests_admitted": float(sum(r.status == 200 for r in mine)),
        "requests_refused": float(sum(r.status == 429 for r in mine)),
    }


def _inputs(config: QuotaAccuracyConfig, reservation: int) -> dict[str, Any]:
    return {
        "limit_tokens_per_minute": config.limit,
        "windows": config.windows,
        "clients_per_variant": config.clients,
        "gateway_processes": config.gateways,
        "max_tokens_range": [config.min_tokens, config.max_tokens],
        "one_reservation_tokens": reservation,
        "stream": True,
        "model": config.model,
        "engine_profile": config.profile,
        "engine_time_scale": config.time_scale,
        "seed": config.seed,
        "machine_cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _plot(
    admitted: dict[str, dict[int, int]],
    minutes: list[int],
    limit: int,
    reservation: int,
    path: Path,
    title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    try:
        width = 0.4
        for offset, variant in enumerate(VARIANTS):
            xs = [i + (offset - 0.5) * width for i in range(len(minutes))]
            ax.bar(xs, [admitted[variant][m] for m in minutes], width, label=variant)
        ax.axhline(limit, color="black", linewidth=1, label=f"limit ({limit} tokens/min)")
        ax.axhline(limit + reservation, color="grey", linestyle="--", linewidth=1,
                   label=f"limit + one reservation ({reservation})")  # fmt: skip
        ax.set_xticks(
            range(len(minutes)), [time.strftime("%H:%M", time.gmtime(m * 60)) for m in minutes]
        )
        ax.set_xlabel("UTC minute")
        ax.set_ylabel("tokens admitted in the minute (settled)")
        ax.set_title(title)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def _printer(stream: TextIO | None) -> Callable[[str], None]:
    def say(line: str) -> None:
        if stream is not None:
            print(line, file=stream, flush=True)

    return say
