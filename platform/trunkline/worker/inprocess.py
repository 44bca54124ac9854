"""The embedded mode's scheduler: the Celery jobs, run in-process on the same schedule."""

from __future__ import annotations

import asyncio
import logging
import time

from trunkline.worker.jobs import JOBS, Job, JobContext

log = logging.getLogger(__name__)


async def run_jobs(ctx: JobContext, jobs: tuple[Job, ...] = JOBS) -> None:
    """Run each job every interval (in a worker thread) until cancelled; a failing run is
    logged and retried at its next turn, as a Celery task would be."""
    due = {job.name: 0.0 for job in jobs}
    while True:
        now = time.monotonic()
        for job in jobs:
            if now < due[job.name]:
                continue
            try:
                await asyncio.to_thread(job.run, ctx)
            except Exception:
                log.exception("job %s failed", job.name)
            due[job.name] = time.monotonic() + job.interval(ctx.settings)
        await asyncio.sleep(max(0.05, min(due.values()) - time.monotonic()))


def drain(ctx: JobContext) -> None:
    """Ingest and roll up whatever is left (at shutdown)."""
    while JOBS[0].run(ctx):
        pass
    JOBS[1].run(ctx)
