"""Celery runs the periodic work for real: a worker and beat (Redis as broker) drain the usage
stream into the ledger and roll it up, and a worker killed with SIGKILL mid-batch loses
nothing: the next worker claims its batch."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psycopg
import redis
from sqlalchemy import func, select

from integration.metering.pipeline_support import (
    STREAM,
    assert_reconciled,
    emit,
    ledger_count,
    wait_for,
)
from support.processes import TRUNKLINE, Proc, trunkline_env
from support.servers import Database
from trunkline.kit.migrate import upgrade
from trunkline.models import UsageRollup
from trunkline.settings import DatabaseSettings, RedisSettings, Settings
from trunkline.worker.app import _ProcessContext, create_celery_app
from trunkline.worker.jobs import JobSettings, ingest_usage
from unit.metering.usage_support import accounts, at, event, migrated


def env_for(database: Database, redis_url: str, tmp: Path) -> dict[str, str]:
    return trunkline_env(
        TRUNKLINE_DATABASE__URL=database.url,
        TRUNKLINE_REDIS__URL=redis_url,
        TRUNKLINE_STATE_DIR=str(tmp),
        TRUNKLINE_JOBS__INGEST_INTERVAL_S="0.5",
        TRUNKLINE_JOBS__ROLLUP_INTERVAL_S="1",
        TRUNKLINE_JOBS__INGEST_BATCH="300",
        TRUNKLINE_JOBS__CLAIM_IDLE_MS="500",
    )


def rolled_up(database: Database) -> int:
    with psycopg.connect(database.dsn) as conn:
        row = conn.execute("SELECT coalesce(sum(requests), 0) FROM usage_rollups").fetchone()
    return int(row[0]) if row else 0


def test_celery_worker_and_beat_ingest_and_roll_up(
    postgres_database: Database, redis_url: str, tmp_path: Path
) -> None:
    factory = migrated(postgres_database.url)
    acme = accounts(factory)["acme"]
    events = [event(acme, f"celery-{n}", when=at(3, n % 24)) for n in range(600)]
    env = env_for(postgres_database, redis_url, tmp_path)
    worker = Proc([*TRUNKLINE, "jobs", "--pool", "solo"], env, tmp_path, tmp_path / "w.log")
    beat = Proc([*TRUNKLINE, "beat"], env, tmp_path, tmp_path / "beat.log")
    try:
        emit(redis_url, events)
        worker.wait_until(lambda: ledger_count(factory) == len(events), "the ledger", 90)
        worker.wait_until(lambda: rolled_up(postgres_database) == len(events), "rollups", 90)
        assert beat.popen.poll() is None
    finally:
        beat.stop(signal.SIGTERM)
        worker.stop(signal.SIGTERM)
    assert "metering.ingest_usage" in worker.output()
    assert_reconciled(factory, events)
    with factory() as session:
        hours = session.scalar(select(func.count(func.distinct(UsageRollup.hour))))
    assert hours == 24


def test_a_celery_worker_killed_mid_batch_loses_nothing(
    postgres_database: Database, redis_url: str, tmp_path: Path
) -> None:
    factory = migrated(postgres_database.url)
    acme = accounts(factory)["acme"]
    events = [event(acme, f"killed-{n}", when=at(3)) for n in range(900)]
    env = env_for(postgres_database, redis_url, tmp_path)
    emit(redis_url, events)
    beat = Proc([*TRUNKLINE, "beat"], env, tmp_path, tmp_path / "beat.log")
    try:
        with psycopg.connect(postgres_database.dsn) as blocker:
            blocker.execute("LOCK TABLE usage_events IN EXCLUSIVE MODE")
            first = Proc([*TRUNKLINE, "jobs", "--pool", "solo"], env, tmp_path, tmp_path / "1.log")

            def holding_a_batch() -> bool:
                with redis.Redis.from_url(redis_url) as client:
                    try:
                        info = client.xpending(STREAM, "ingest")
                    except redis.ResponseError:
                        return False
                return int(info["pending"]) > 0

            first.wait_until(holding_a_batch, "the worker to hold a batch", 90)
            os.kill(first.popen.pid, signal.SIGKILL)
            first.popen.wait(10)
            blocker.rollback()
        second = Proc([*TRUNKLINE, "jobs", "--pool", "solo"], env, tmp_path, tmp_path / "2.log")
        try:
            second.wait_until(lambda: ledger_count(factory) == len(events), "the ledger", 90)
        finally:
            second.stop(signal.SIGTERM)
    finally:
        beat.stop(signal.SIGTERM)
    wait_for(lambda: ledger_count(factory) == len(events), "the ledger", 1)
    assert_reconciled(factory, events)


def test_installations_sharing_a_redis_keep_their_celery_queues_apart(
    postgres_database: Database, redis_url: str, tmp_path: Path
) -> None:
    """Two installations on one Redis, told apart by ``TRUNKLINE_REDIS__KEY_PREFIX``: a task
    the other one queued first is not run by this one's worker, and stays in the other's
    queue; every key either wrote is under its prefix."""
    upgrade(postgres_database.url)
    other = create_celery_app(
        Settings(redis=RedisSettings(url=redis_url, key_prefix="other"), state_dir=tmp_path)
    )
    ours = create_celery_app(
        Settings(redis=RedisSettings(url=redis_url, key_prefix="ours"), state_dir=tmp_path)
    )
    theirs = other.send_task("metering.rollup_usage")
    mine = ours.send_task("metering.rollup_usage")
    env = env_for(postgres_database, redis_url, tmp_path) | {"TRUNKLINE_REDIS__KEY_PREFIX": "ours"}
    worker = Proc([*TRUNKLINE, "jobs", "--pool", "solo"], env, tmp_path, tmp_path / "w.log")
    try:
        worker.wait_until(lambda: f"[{mine.id}] succeeded" in worker.output(), "our task", 90)
    finally:
        worker.stop(signal.SIGTERM)
    assert theirs.id not in worker.output()
    with redis.Redis.from_url(redis_url) as client:
        keys = {key.decode() for key in client.keys("*")}
        queued = [
            json.loads(message)["headers"]["id"]
            for key in keys
            if key.startswith("other:") and client.type(key) == b"list"
            for message in client.lrange(key, 0, -1)
        ]
    assert queued == [theirs.id]
    assert keys and all(key.startswith(("ours:", "other:")) for key in keys), sorted(keys)


def test_a_celery_process_reads_usage_through_one_reader_across_its_runs(
    redis_url: str, tmp_path: Path
) -> None:
    """Beat runs the ingest job every second. Each run made a reader of its own, which
    created the consumer group again (a write to Redis each second), removed dead consumers
    at every run instead of every ten minutes, and logged an outage at every run of one. The
    process now keeps one, as the usage worker does."""
    database = f"sqlite:///{tmp_path / 'jobs.db'}"
    upgrade(database)
    settings = Settings(
        database=DatabaseSettings(url=database),
        redis=RedisSettings(url=redis_url),
        state_dir=tmp_path,
    )
    context = _ProcessContext(settings, JobSettings())
    with redis.Redis.from_url(redis_url) as client:
        client.config_resetstat()
        for _ in range(3):
            assert ingest_usage(context.get()) == 0
        calls = client.info("commandstats").get("cmdstat_xgroup|create", {}).get("calls", 0)
    assert calls == 1
