"""The export half of ``trunkline bench metering``: a month of 1M ledger events rolled up, then
exported to FOCUS CSV and Parquet, each step timed; then rolled up again by the baseline job
(rows compared in Python), and both jobs timed once more on a run where every tenant-hour is
marked changed but nothing differs (what each tick costs for the hours it recomputes)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psycopg

from trunkline.bench._metering_load import Universe, fill_month, prepare_database
from trunkline.bench.servers import PostgresCluster
from trunkline.errors import TrunklineError

Figures = dict[str, float]


def measure_export(
    pg: PostgresCluster, universe: Universe, events: int, tmp: Path
) -> tuple[Figures, Figures]:
    """(the baseline job's rollup figures, the job's rollup and export figures)."""
    from trunkline.bench._metering_rollup_baseline import recompute_in_python
    from trunkline.billing.exports import export_period
    from trunkline.billing.periods import parse_period
    from trunkline.kit.db import make_engine, make_sessionmaker, transaction

    url = prepare_database(pg, "month", universe)
    period = parse_period("2026-11")
    fill_month(pg.dsn("month"), universe, events, period.start.timestamp())
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    dsn = pg.dsn("month")
    try:
        figures, rows = _rollups(dsn, factory, events, None)
        rolled = time.perf_counter()
        with transaction(factory) as session:  # read as it is written
            csv = export_period(session, period, "focus-csv")
            (tmp / csv.filename).write_bytes(csv.body)
        written = time.perf_counter()
        with transaction(factory) as session:
            parquet = export_period(session, period, "focus-parquet")
        parquet_s = time.perf_counter() - written
        baseline, baseline_rows = _rollups(dsn, factory, events, recompute_in_python)
    finally:
        engine.dispose()
    if baseline_rows != rows:
        raise TrunklineError(
            f"the two rollup jobs differ: {baseline_rows} != {rows}", reason="benchmark_mismatch"
        )
    return baseline, {
        **figures,
        "export_focus_csv_s": written - rolled,
        "export_focus_csv_rows": float(csv.lines),
        "export_focus_csv_mb": len(csv.body) / 1e6,
        "export_focus_parquet_s": parquet_s,
        "export_focus_parquet_mb": len(parquet.body) / 1e6,
    }


_CHECKSUM = (
    "SELECT count(*), sum(requests), sum(prompt_tokens), sum(cached_tokens),"
    " sum(completion_tokens), sum(slo_eligible), sum(slo_met), sum(revision) FROM usage_rollups"
)


def _rollups(dsn: str, factory: Any, events: int, recompute: Any) -> tuple[Figures, tuple[Any]]:
    """The month rolled up from nothing, then again with every tenant-hour marked changed."""
    from trunkline.metering.rollups import rollup_usage

    with psycopg.connect(dsn) as conn:
        conn.execute("DELETE FROM usage_rollups")
        conn.execute("UPDATE usage_rollup_watermarks SET rolled_seq = 0")
    started = time.perf_counter()
    run = rollup_usage(factory, recompute=recompute)
    first_s = time.perf_counter() - started
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE usage_rollup_watermarks SET changed_seq = changed_seq + 1")
    started = time.perf_counter()
    again = rollup_usage(factory, recompute=recompute)
    again_s = time.perf_counter() - started
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(_CHECKSUM).fetchone()
    if again.inserted or again.updated or again.deleted or rows is None:
        raise TrunklineError(f"a rollup rerun wrote rows: {again}", reason="benchmark_mismatch")
    return {
        "rollup_1m_events_s": first_s,
        "rollup_events_per_s": events / first_s,
        "rollup_again_events_per_s": events / again_s,
        "rollup_rows": float(run.inserted),
    }, tuple(rows)
