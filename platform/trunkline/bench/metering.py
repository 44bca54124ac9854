"""``trunkline bench metering``: usage ingest, batched through the stream versus one row per
request, and the FOCUS export of a month of rollups, on real Redis and PostgreSQL.

It starts its own PostgreSQL (production durability: fsync and synchronous commit on) and Redis
(append-only file), and in one run:

- ``one-row-per-request`` (baseline): N events, each inserted and committed on its own from
  concurrent connections, as a gateway that writes usage to its database does;
- ``batched-stream``: N events through the gateway's emitter (its own process) into the Redis
  stream, drained by ``trunkline worker`` (its own process) in batches into the ledger;
  measured from the first emit until every event was committed (and acked);
- both ledgers reconciled against what was emitted: events lost, events doubled;
- a month of 1M ledger events rolled up, then exported to FOCUS CSV and Parquet, timed; the
  rollup also by the baseline job (rows compared in Python), and both again with every
  tenant-hour marked changed: the ``one-row-per-request`` column's rollup figures are that
  baseline's.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import psycopg
import redis

from trunkline.bench._metering_export import measure_export
from trunkline.bench._metering_load import (
    make_universe,
    prepare_database,
    records,
    write_one_row_per_request,
)
from trunkline.bench._metering_plot import plot_ingest
from trunkline.bench.processes import python_module
from trunkline.bench.report import BenchResult, GoalSpec, Runs, write_result
from trunkline.bench.servers import PostgresCluster, RedisInstance, start_postgres, start_redis
from trunkline.errors import TrunklineError

BASELINE, PIPELINE = "one-row-per-request", "batched-stream"
GOALS = (
    GoalSpec(
        "batched ingest, end to end (events/s)", ">= 20000", lambda r: r[PIPELINE]["events_per_s"]
    ),
    GoalSpec(
        "FOCUS CSV export of 1M events' rollups (s)",
        "<= 15",
        lambda r: r[PIPELINE]["export_focus_csv_s"],
    ),
    GoalSpec("events lost", "<= 0", lambda r: r[PIPELINE]["lost_events"]),
    GoalSpec("events doubled", "<= 0", lambda r: r[PIPELINE]["doubled_events"]),
)
STREAM = "trunkline:usage"


@dataclass(frozen=True, slots=True)
class MeteringConfig:
    events: int = 200_000
    baseline_events: int = 20_000
    writers: int = 8
    """Concurrent connections of the baseline (gateway workers writing their own rows)."""
    export_events: int = 1_000_000
    durable: bool = True
    seed: int = 1
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if min(self.events, self.baseline_events, self.writers, self.export_events) < 1:
            raise ValueError("event counts and writers must be at least 1")


def run_metering(
    config: MeteringConfig, out_dir: Path, *, progress: TextIO | None = None
) -> BenchResult:
    def say(line: str) -> None:
        if progress is not None:
            print(line, file=progress, flush=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="trunkline-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        say("starting PostgreSQL and Redis")
        pg = start_postgres(durable=config.durable)  # its own dir: postgres cannot enter tmp
        stack.callback(pg.destroy)
        redis_server = start_redis(Path(tmp), appendonly=True)
        stack.callback(redis_server.destroy)
        universe = make_universe(seed=config.seed)
        universe_file = Path(tmp) / "universe.json"
        universe.dump(universe_file)
        say(f"{BASELINE}: {config.baseline_events} events, {config.writers} connections")
        baseline, base_curve = _baseline(pg, universe, config)
        say(f"{PIPELINE}: {config.events} events through the stream")
        pipeline, pipe_curve = _pipeline(
            pg, redis_server, universe_file, universe, config, out_dir, Path(tmp)
        )
        say(f"export: {config.export_events} events rolled up (both jobs) and exported to FOCUS")
        old_rollups, export = measure_export(pg, universe, config.export_events, Path(tmp))
        baseline.update(old_rollups)  # the rollup job before it ran in SQL
        pipeline.update(export)
    runs: Runs = {BASELINE: baseline, PIPELINE: pipeline}
    inputs = {
        **asdict(config),
        "machine_cores": os.cpu_count(),
        "python": platform.python_version(),
        "postgres": "fsync on, synchronous_commit on" if config.durable else "fsync off",
        "redis": "appendonly yes (everysec)",
        "tenants": len(universe.tenants),
        "keys": len(universe.keys),
    }
    result = BenchResult.build("metering", simulated=False, inputs=inputs, runs=runs, goals=GOALS)
    write_result(out_dir, result)
    plot_ingest(out_dir / "metering.png", runs, {BASELINE: base_curve, PIPELINE: pipe_curve})
    return result


def _ledger(dsn: str, prefix: str) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn:
        count, tokens = conn.execute(
            "SELECT count(*), coalesce(sum(prompt_tokens + completion_tokens), 0)"
            " FROM usage_events WHERE request_id LIKE %s",
            (prefix + "-%",),
        ).fetchone() or (0, 0)
    return int(count), int(tokens)


def _commits(dsn: str, name: str) -> int:
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (name,)
        ).fetchone()
    return int(row[0]) if row else 0


def _reconcile(emitted: int, tokens: int, count: int, ledger_tokens: int) -> dict[str, float]:
    return {
        "lost_events": float(max(emitted - count, 0)),
        "doubled_events": float(max(count - emitted, 0)),
        "token_difference": float(ledger_tokens - tokens),
    }


def _baseline(
    pg: PostgresCluster, universe: Any, config: MeteringConfig
) -> tuple[dict[str, float], list[tuple[float, int]]]:
    prepare_database(pg, "baseline", universe)
    dsn = pg.dsn("baseline")
    events = records(universe, config.baseline_events, "base", config.seed)
    before = _commits(dsn, "baseline")
    seconds = write_one_row_per_request(dsn, events, config.writers)
    commits = _commits(dsn, "baseline") - before
    count, tokens = _ledger(dsn, "base")
    emitted_tokens = sum(e.prompt_tokens + e.completion_tokens for e in events)
    metrics = {
        "events_per_s": len(events) / seconds,
        "db_transactions_per_1k_events": 1000 * commits / len(events),
        **_reconcile(len(events), emitted_tokens, count, tokens),
    }
    return metrics, [(0.0, 0), (seconds, count)]


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as handle:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            args, env=env, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _pipeline(
    pg: PostgresCluster,
    redis_server: RedisInstance,
    universe_file: Path,
    universe: Any,
    config: MeteringConfig,
    out_dir: Path,
    tmp: Path,
) -> tuple[dict[str, float], list[tuple[float, int]]]:
    url = prepare_database(pg, "pipeline", universe)
    dsn = pg.dsn("pipeline")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRUNKLINE_")}
    env |= {
        "TRUNKLINE_DATABASE__URL": url,
        "TRUNKLINE_REDIS__URL": redis_server.url,
        "TRUNKLINE_STATE_DIR": str(tmp / "state"),
        "TRUNKLINE_LOG_LEVEL": "WARNING",
    }
    before = _commits(dsn, "pipeline")
    consumer = _start(
        python_module("trunkline.cli.main", "worker"), env, out_dir / "logs" / "consumer.log"
    )
    curve: list[tuple[float, int]] = []
    try:
        _wait_for_consumer(redis_server.url, consumer, config.timeout_s)
        emitter = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            python_module(
                "trunkline.bench._metering_emitter",
                "--redis",
                redis_server.url,
                "--stream",
                STREAM,
                "--universe",
                str(universe_file),
                "--events",
                str(config.events),
                "--prefix",
                "pipe",
                "--seed",
                str(config.seed),
            ),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert emitter.stdout is not None
        started_at = json.loads(emitter.stdout.readline())["started_at"]
        finished = _wait_for_acks(redis_server.url, config, started_at, curve.append)
        emitted = json.loads(emitter.stdout.read().strip().splitlines()[-1])
        if emitter.wait(config.timeout_s) != 0:
            raise TrunklineError("the emitter failed")
    finally:
        _stop(consumer)
    commits = _commits(dsn, "pipeline") - before
    count, tokens = _ledger(dsn, "pipe")
    return {
        "events_per_s": config.events / finished,
        "emit_events_per_s": config.events / emitted["seconds"],
        "db_transactions_per_1k_events": 1000 * commits / config.events,
        **_reconcile(config.events, emitted["tokens"], count, tokens),
    }, curve


def _wait_for_consumer(url: str, consumer: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Until the consumer process has joined its group on the stream (it is ready)."""
    deadline = time.monotonic() + timeout_s
    with redis.Redis.from_url(url) as client:
        while time.monotonic() < deadline:
            if consumer.poll() is not None:
                raise TrunklineError("the consumer process exited before it was ready")
            with contextlib.suppress(redis.ResponseError):
                if client.xinfo_groups(STREAM):
                    return
            time.sleep(0.05)
    raise TrunklineError("the consumer never joined the usage stream")


def _wait_for_acks(
    url: str,
    config: MeteringConfig,
    started_at: float,
    record: Callable[[tuple[float, int]], None],
) -> float:
    """Seconds from the first emit until every event was acked, which the consumer does only
    after the ledger committed it (the ledger's count is checked afterwards). Watching the
    group in Redis costs the database nothing, unlike counting its rows."""
    deadline = time.monotonic() + config.timeout_s
    with redis.Redis.from_url(url) as client:
        while time.monotonic() < deadline:
            [group] = client.xinfo_groups(STREAM)
            elapsed = time.time() - started_at
            acked = int(group["entries-read"] or 0) - int(group["pending"])
            record((elapsed, acked))
            if acked >= config.events:
                return elapsed
            time.sleep(0.05)
    raise TrunklineError(f"not every event was acked within {config.timeout_s} s")
