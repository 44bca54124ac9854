"""``trunkline billing set-aside-misdated`` when the Redis that should keep the events does not
answer: one line saying so, and the ledger as it was."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from trunkline.models import UsageEvent
from unit.controlplane.cp_support import run_cli
from unit.metering.usage_support import Account, event, ingest_unchecked

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port bound but not listening: a connection to it is refused."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


def test_a_redis_that_does_not_answer_is_one_line_and_sets_nothing_aside(
    factory: sessionmaker[Session],
    tenants: dict[str, Account],
    refusing_port: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It printed redis-py's ConnectionError traceback."""
    url = str(factory.kw["bind"].url)
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", url)
    monkeypatch.setenv("TRUNKLINE_STATE_DIR", str(Path(url.removeprefix("sqlite:///")).parent))
    monkeypatch.setenv("TRUNKLINE_REDIS__URL", f"redis://:s3cret@127.0.0.1:{refusing_port}/0")
    ingest_unchecked(factory, [event(tenants["acme"], "reset-clock", when=EPOCH)])

    code, out, err = run_cli(capsys, "billing", "set-aside-misdated")

    assert code == 2 and out == ""
    [line] = err.splitlines()
    assert line.startswith("error: ") and "Redis" in line and "s3cret" not in line
    with factory() as session:
        assert list(session.scalars(select(UsageEvent.request_id))) == ["reset-clock"]


def test_a_second_run_into_the_same_file_keeps_the_events_of_the_first(
    factory: sessionmaker[Session],
    tenants: dict[str, Account],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Embedded mode has no Redis: the file is the only copy of the events taken out of the
    ledger. A second run replaced it, and the events of the first were gone from both."""
    url = str(factory.kw["bind"].url)
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", url)
    monkeypatch.setenv("TRUNKLINE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("TRUNKLINE_REDIS__URL", raising=False)
    kept = tmp_path / "set-aside.jsonl"
    acme = tenants["acme"]

    ingest_unchecked(factory, [event(acme, "first", when=EPOCH)])
    assert run_cli(capsys, "billing", "set-aside-misdated", "--out", str(kept))[0] == 0
    ingest_unchecked(factory, [event(acme, "second", when=EPOCH)])
    code, out, _err = run_cli(capsys, "billing", "set-aside-misdated", "--out", str(kept))

    assert code == 0 and out.startswith("second\t")
    lines = [msgspec.json.decode(line) for line in kept.read_bytes().splitlines()]
    assert [line["e"]["request_id"] for line in lines] == ["first", "second"]
