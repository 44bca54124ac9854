"""``trunkline billing export`` on PostgreSQL: exporting an ended month with --close closes it
(without, it never does); an event that arrives for it afterwards is billed as a Correction row
of the open month."""

from __future__ import annotations

import csv
import io
import subprocess
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq

from support.processes import TRUNKLINE, trunkline_env
from trunkline.billing.periods import month_of
from trunkline.kit.ids import utcnow
from unit.metering.usage_support import accounts, event, ingest, migrated


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run([*TRUNKLINE, "billing", *args], env=env, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done


def test_export_closes_the_month_and_late_events_become_corrections(
    postgres_url: str, tmp_path: Path
) -> None:
    factory = migrated(postgres_url)
    acme = accounts(factory)["acme"]
    current = month_of(utcnow())
    last = current.previous()
    day_two = last.start + timedelta(days=1, hours=10)
    ingest(
        factory,
        [event(acme, "on-time", when=day_two, prompt=1_000_000, completion=0)],
        rollup=False,
    )  # the CLI rolls up first
    env = trunkline_env(TRUNKLINE_DATABASE__URL=postgres_url, TRUNKLINE_STATE_DIR=str(tmp_path))

    looked = cli(env, "export", "--period", last.label, "--format", "focus-csv")
    assert b"(preliminary)" in looked.stderr  # looking at a month never closes it
    first = cli(env, "export", "--period", last.label, "--format", "focus-csv", "--close")
    assert b"(final)" in first.stderr
    rows = list(csv.DictReader(io.StringIO(first.stdout.decode())))
    assert [r["ConsumedQuantity"] for r in rows if r["x_TokenClass"] == "input"] == ["1000000"]

    ingest(
        factory, [event(acme, "late", when=day_two, prompt=3_000_000, completion=0)], rollup=False
    )
    assert (
        cli(env, "export", "--period", last.label, "--format", "focus-csv").stdout == first.stdout
    )

    out = tmp_path / "open.parquet"
    cli(env, "export", "--period", current.label, "--format", "focus-parquet", "--out", str(out))
    [correction] = pq.read_table(out).to_pylist()
    assert correction["ChargeClass"] == "Correction"
    assert correction["ConsumedQuantity"] == Decimal(3_000_000)
    assert correction["ChargePeriodStart"].month == last.start.month
    assert correction["BilledCost"] == Decimal("0.9")  # gold input: 3M x 0.30 per million

    invoice = cli(env, "export", "--period", current.label, "--format", "invoice").stdout.decode()
    assert "Corrections to earlier periods" in invoice and "PRELIMINARY" in invoice
    out = tmp_path / "final.txt"  # written in the export's transaction, not after its commit
    final = cli(env, "export", "--period", last.label, "--format", "invoice", "--out", str(out))
    assert b"1 charge lines (final)" in final.stderr  # counted as they are read
    written = out.read_text()
    assert written.startswith("=" * 100) and "INVOICE TL-" in written and "acme" in written
    assert (
        written == cli(env, "export", "--period", last.label, "--format", "invoice").stdout.decode()
    )


def test_an_export_that_cannot_be_written_leaves_the_month_open(
    postgres_url: str, tmp_path: Path
) -> None:
    migrated(postgres_url)
    env = trunkline_env(TRUNKLINE_DATABASE__URL=postgres_url, TRUNKLINE_STATE_DIR=str(tmp_path))
    ended = month_of(utcnow()).previous().previous()
    args = ["billing", "export", "--period", ended.label, "--format", "focus-csv", "--close"]
    failed = subprocess.run(
        [*TRUNKLINE, *args, "--out", str(tmp_path)],  # a directory
        env=env,
        capture_output=True,
        check=False,
    )
    assert failed.returncode != 0
    assert b"cannot write" in failed.stderr and b"Traceback" not in failed.stderr
    assert cli(env, "close", "--period", ended.label).stdout.decode().strip().endswith(": closed")


def test_capacity_out_of_range_is_one_line_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    """More GPUs than the column holds, or a start UTC cannot hold, failed in the database (or
    converting to UTC) with a traceback."""
    migrated(postgres_url)
    env = trunkline_env(TRUNKLINE_DATABASE__URL=postgres_url, TRUNKLINE_STATE_DIR=str(tmp_path))
    future = f"{month_of(utcnow()).next().label}-02T00:00:00Z"
    base = ["billing", "capacity", "--tenant", "acme", "--flavor", "h100"]
    for extra, message in [
        (["--gpus", "99999999999", "--start", future], b"error: gpus must be 1 to 1000000\n"),
        (["--gpus", "1", "--start", "9999-12-31T23:59:59-12:00"],
         b"error: start: out of range: '9999-12-31T23:59:59-12:00'\n"),
    ]:  # fmt: skip
        done = subprocess.run(
            [*TRUNKLINE, *base, *extra], env=env, capture_output=True, check=False
        )
        assert (done.returncode, done.stderr) == (2, message)
