"""Background work: usage ingest, rollups, closing billing periods.

Task bodies are the plain functions of :mod:`trunkline.worker.jobs`; production runs them
under Celery (Redis broker, beat for the schedule, :mod:`trunkline.worker.app`), the embedded
mode in-process on the same schedule (:mod:`trunkline.worker.inprocess`).
"""
