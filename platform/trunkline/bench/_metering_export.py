"""The export half of ``trunkline bench metering``: a month of 1M ledger events rolled up, then
exported to FOCUS CSV and Parquet, each step timed."""

from __future__ import annotations

import time
from pathlib import Path

from trunkline.bench._metering_load import Universe, fill_month, prepare_database
from trunkline.bench.servers import PostgresCluster


def measure_export(
    pg: PostgresCluster, universe: Universe, events: int, tmp: Path
) -> dict[str, float]:
    from trunkline.billing.periods import parse_period
    from trunkline.billing.service import export_period
    from trunkline.kit.db import make_engine, make_sessionmaker, transaction
    from trunkline.metering.rollups import rollup_usage

    url = prepare_database(pg, "month", universe)
    period = parse_period("2026-11")
    fill_month(pg.dsn("month"), universe, events, period.start.timestamp())
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    try:
        started = time.perf_counter()
        run = rollup_usage(factory)
        rolled = time.perf_counter()
        with transaction(factory) as session:  # read as it is written
            csv = export_period(session, period, "focus-csv")
            (tmp / csv.filename).write_bytes(csv.body)
        written = time.perf_counter()
        with transaction(factory) as session:
            parquet = export_period(session, period, "focus-parquet")
        parquet_s = time.perf_counter() - written
    finally:
        engine.dispose()
    return {
        "rollup_1m_events_s": rolled - started,
        "rollup_rows": float(run.inserted),
        "export_focus_csv_s": written - rolled,
        "export_focus_csv_rows": float(csv.lines),
        "export_focus_csv_mb": len(csv.body) / 1e6,
        "export_focus_parquet_s": parquet_s,
        "export_focus_parquet_mb": len(parquet.body) / 1e6,
    }
