"""The Celery application: the jobs as tasks, Redis as broker, beat for the schedule.

Each worker process builds its database engine and Redis client on its first task (after any
fork), never at import. Tasks expire after one interval, so a stalled worker does not return
to a pile of stale runs.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from celery import Celery

from trunkline.errors import ConfigurationError
from trunkline.kit.db import make_engine, make_sessionmaker
from trunkline.metering.redis_stream import RedisUsageReader, reader_client, stream_name
from trunkline.settings import Settings
from trunkline.worker.jobs import JOBS, Job, JobContext, JobSettings

CONSUMER_GROUP = "ingest"


def broker_key_prefix(key_prefix: str) -> str:
    """What kombu puts before every Redis key and pub/sub channel of Celery's broker (queues,
    bindings, unacked messages, remote control): under Trunkline's own prefix, so installations
    sharing one Redis with different ``TRUNKLINE_REDIS__KEY_PREFIX`` never share a queue (one
    installation's worker ran the other's tasks, on its own database)."""
    return f"{key_prefix}:celery:"


class _ProcessContext:
    """The job context of this process, made on first use."""

    def __init__(self, settings: Settings, jobs: JobSettings) -> None:
        self._settings = settings
        self._jobs = jobs
        self._context: JobContext | None = None
        self._pid = 0

    def get(self) -> JobContext:
        if self._context is None or self._pid != os.getpid():
            self._pid = os.getpid()
            engine = make_engine(self._settings.database.url)
            client = reader_client(self._settings.redis.url or "")
            consumer = f"celery-{socket.gethostname()}-{self._pid}"
            stream = stream_name(self._settings.redis.key_prefix)
            claim = self._jobs.claim_idle_ms

            readers: list[RedisUsageReader] = []

            def reader() -> RedisUsageReader:
                # One for the process, as the usage worker has: made at every run (each
                # second), a reader created the group again each time, removed dead consumers
                # each time instead of every ten minutes, and said Redis was not answering at
                # every run of an outage.
                if not readers:
                    readers.append(
                        RedisUsageReader(client, stream, consumer=consumer, claim_idle_ms=claim)
                    )
                return readers[0]

            self._context = JobContext(make_sessionmaker(engine), reader, self._jobs)
        return self._context


def create_celery_app(settings: Settings, jobs: JobSettings | None = None) -> Celery:
    jobs = jobs or JobSettings()
    if not settings.redis.url:
        raise ConfigurationError(
            "TRUNKLINE_REDIS__URL is required for this process (Celery's broker)"
        )
    app = Celery("trunkline", broker=settings.redis.url, set_as_current=False)
    state_dir = Path(settings.state_dir)
    app.conf.update(
        task_ignore_result=True,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options={"global_keyprefix": broker_key_prefix(settings.redis.key_prefix)},
        beat_schedule_filename=str(state_dir / "celerybeat-schedule"),
        beat_schedule={
            job.name: {
                "task": job.name,
                "schedule": job.interval(jobs),
                "options": {"expires": max(job.interval(jobs), 1.0)},
            }
            for job in JOBS
        },
    )
    context = _ProcessContext(settings, jobs)
    for job in JOBS:
        _register(app, job, context)
    return app


def _register(app: Celery, job: Job, context: _ProcessContext) -> None:
    def run() -> Any:
        return job.run(context.get())

    run.__name__ = job.name.replace(".", "_")
    # Not shared: Celery gives a shared task to every app made later in the process, and keeps
    # the first callable of a name, so a second app's jobs ran on the first one's database.
    app.task(name=job.name, shared=False)(run)


def run_celery(app: Celery, argv: list[str]) -> None:
    """``argv`` as for the ``celery`` command after the app, e.g. ``["worker", "-B"]``."""
    Path(app.conf.beat_schedule_filename).parent.mkdir(parents=True, exist_ok=True)
    app.start(argv)
