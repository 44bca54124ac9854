"""``trunkline billing capacity-end``: dedicated GPUs released stop being billed at the hour
they were released (an allocation recorded open-ended was billed for ever: nothing ended it)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing.closing import close
from trunkline.kit.db import transaction
from unit.billing.billing_support import NOV, focus
from unit.controlplane.cp_support import run_cli
from unit.metering.usage_support import at, migrated


@pytest.fixture
def factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", url)
    monkeypatch.setenv("TRUNKLINE_STATE_DIR", str(tmp_path / "state"))
    return migrated(url)


def gpu_hours(factory: sessionmaker[Session], period: str) -> Decimal:
    rows = focus(factory, period, now=at(1, 12, month=12))
    return sum((Decimal(r["ConsumedQuantity"]) for r in rows if r["ConsumedUnit"] == "GPU-Hours"),
               Decimal(0))  # fmt: skip


def record(capsys: pytest.CaptureFixture[str], gpus: int, start: str) -> str:
    """``trunkline billing capacity`` for acme, open-ended; the id it printed."""
    code, out, err = run_cli(
        capsys, "billing", "capacity", "--tenant", "acme", "--flavor", "h100",
        "--gpus", str(gpus), "--start", start,
    )  # fmt: skip
    assert code == 0, err
    return out.split()[1].rstrip(":")


def test_released_gpus_are_billed_until_they_are_released(
    factory: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    capacity_id = record(capsys, 2, "2026-11-01T00:00:00Z")
    assert gpu_hours(factory, "2026-11") == 2 * 24 * 30  # open-ended: every hour of the month

    code, out, err = run_cli(
        capsys, "billing", "capacity-end", capacity_id, "--end", "2026-11-01T10:30:00Z"
    )
    assert (code, out) == (0, f"capacity {capacity_id}: ends 2026-11-01T10:30:00Z\n"), err
    assert gpu_hours(factory, "2026-11") == 2 * 11  # hours 00 to 10, the last one begun
    assert gpu_hours(factory, "2026-12") == 0

    with transaction(factory) as session:
        close(session, NOV, at(10, month=12))
    code, _out, err = run_cli(
        capsys, "billing", "capacity-end", capacity_id, "--end", "2026-12-05T00:00:00Z"
    )
    assert code != 0 and "that period is closed" in err  # what November billed is final
    assert gpu_hours(factory, "2026-11") == 2 * 11


def test_an_end_before_the_start_or_of_no_allocation_is_refused(
    factory: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    capacity_id = record(capsys, 1, "2026-11-02T00:00:00Z")
    early = run_cli(capsys, "billing", "capacity-end", capacity_id, "--end", "2026-11-01T00:00Z")
    assert early[0] != 0 and "must end after it starts" in early[2]
    unknown = "00000000-0000-0000-0000-000000000000"
    missing = run_cli(capsys, "billing", "capacity-end", unknown, "--end", "2026-11-03T00:00Z")
    assert missing[0] != 0 and "capacity not found" in missing[2]
    assert gpu_hours(factory, "2026-11") == 29 * 24  # still held: from the 2nd on
