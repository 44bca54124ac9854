"""A Redis that stops answering (SIGSTOP'd: a frozen host, or a partition leaving the worker's
connection half-open) must not hold the usage worker's reads for ever: its client had no
timeout, and a worker that looked alive (its process up, its metrics served) ingested nothing
until restarted. A read now gives up, the consumer waits the outage out like any other, and
reads again once Redis answers."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from integration.stores.test_snapshot_store_frozen import _frozen, production_like_on
from support.servers import RedisServer
from trunkline.apps.production import run_worker
from trunkline.apps.runtime import Runtime
from trunkline.metering.redis_stream import READ_TIMEOUT_S
from trunkline.worker.app import _ProcessContext
from trunkline.worker.jobs import JobSettings

pytestmark = pytest.mark.integration

DEADLINE_S = READ_TIMEOUT_S * 6
"""Far past one read's timeout: what a read that never gives up fails on."""


@pytest.fixture
def production_like(tmp_path: Path) -> Iterator[tuple[RedisServer, Runtime]]:
    with production_like_on(f"sqlite:///{tmp_path / 'cp.db'}", tmp_path) as built:
        yield built


def test_the_worker_gives_up_a_read_on_a_frozen_redis_and_goes_on(
    production_like: tuple[RedisServer, Runtime],
) -> None:
    """``run_worker`` takes SIGTERM, so it runs on the main thread: a watchdog thaws Redis
    past the deadline, saying so, should the worker still wait on it."""
    server, runtime = production_like
    run_worker(runtime.settings, max_batches=1)  # creates the group while Redis answers
    thawed_by_watchdog = threading.Event()

    def watchdog() -> None:
        thawed_by_watchdog.set()
        assert server.pid is not None
        os.kill(server.pid, signal.SIGCONT)

    with _frozen(server):
        timer = threading.Timer(DEADLINE_S, watchdog)
        timer.start()
        try:
            run_worker(runtime.settings, idle_sleep_s=0, max_batches=1)
        finally:
            timer.cancel()
    assert not thawed_by_watchdog.is_set(), "the worker waited on the frozen Redis"
    run_worker(runtime.settings, max_batches=1)  # and reads again once it answers


def test_a_celery_job_s_usage_reads_give_up_on_a_frozen_redis(
    production_like: tuple[RedisServer, Runtime],
) -> None:
    server, runtime = production_like
    reader = _ProcessContext(runtime.settings, JobSettings()).get().reader()
    assert reader.read(10) == []
    with concurrent.futures.ThreadPoolExecutor(1) as pool, _frozen(server):
        read = pool.submit(reader.read, 10)
        with pytest.raises(redis.TimeoutError):
            read.result(timeout=DEADLINE_S)
    assert reader.read(10) == []
