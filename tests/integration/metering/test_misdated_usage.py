"""A gateway whose clock is wrong: its usage events are stamped at the epoch (a clock reset) or
far ahead. Such an event stopped every billing close ("usage from 1970-01-01 ... comes before
the first version") or waited, unseen, to be billed in a month to come; it is set aside in the
dead-letter stream with its reason instead, and usage arriving late by days is billed as
before, on SQLite and PostgreSQL. Such usage already in the ledger (ingested before the check)
is taken out by ``trunkline billing set-aside-misdated``."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
import redis
from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from integration.metering.pipeline_support import STREAM, assert_reconciled, emit, reader
from trunkline.auth.principal import Principal
from trunkline.billing.closing import close, closing_view
from trunkline.billing.periods import parse_period
from trunkline.billing.pricebook_store import apply_price_book, load_price_book
from trunkline.errors import InvalidRequest
from trunkline.keys.schemas import ApiKeyCreate
from trunkline.keys.service import create_key
from trunkline.kit.db import transaction
from trunkline.metering.consumer import UsageConsumer
from trunkline.metering.consumer_metrics import ConsumerCollector
from trunkline.metering.schemas import UsageRecord, decode_usage
from trunkline.metering.set_aside import misdated_in_ledger, remove_from_ledger
from trunkline.metering.stream import InMemoryUsageStream, UsageReader
from trunkline.models import ApiKey, UsageEvent
from trunkline.worker.jobs import JobContext, JobSettings, close_periods, ingest_usage, rollup
from unit.controlplane.cp_support import run_cli
from unit.metering.usage_support import accounts, at, event, ingest_unchecked, migrated, old_sqlite

NOW = at(10, month=12)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FAR_AHEAD = datetime(2999, 1, 1, tzinfo=UTC)


@pytest.fixture
def factory(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[sessionmaker[Session]]:
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", database_url)  # for the CLI
    monkeypatch.setenv("TRUNKLINE_STATE_DIR", str(tmp_path / "state"))
    made = migrated(database_url)
    yield made
    made.kw["bind"].dispose()


def ledger(factory: sessionmaker[Session]) -> list[str]:
    with factory() as session:
        return sorted(session.scalars(select(UsageEvent.request_id)))


def test_usage_stamped_by_a_wrong_clock_is_set_aside_and_closes_go_on(
    factory: sessionmaker[Session],
) -> None:
    acme = accounts(factory)["acme"]
    stream = InMemoryUsageStream(clock=NOW.timestamp)  # each event enters the stream at NOW
    for item in [
        event(acme, "reset-clock", when=EPOCH),
        event(acme, "ahead", when=NOW + timedelta(days=400)),
        event(acme, "an-hour-ahead", when=NOW + timedelta(hours=1)),
        event(acme, "a-little-ahead", when=NOW + timedelta(minutes=2)),  # NTP-sized skew
        event(acme, "november", when=at(20)),
        event(acme, "buffered-for-days", when=at(30, 23)),  # a Redis outage, then late
    ]:
        stream.emit(item)
    ctx = JobContext(factory, lambda: stream, JobSettings(close_grace_hours=48), clock=lambda: NOW)
    assert ingest_usage(ctx) == 6 and not len(stream)
    rollup(ctx)
    assert close_periods(ctx) == ["2026-11"]
    assert ledger(factory) == ["a-little-ahead", "buffered-for-days", "november"]
    assert stream.dead_lettered == 3
    reasons = {record.request_id: reason for record, reason in stream.dead}
    assert reasons.keys() == {"reset-clock", "ahead", "an-hour-ahead"}
    assert "before the first price book version" in reasons["reset-clock"]
    assert "ahead of the time it entered the usage stream" in reasons["ahead"]


def test_the_dead_letter_stream_keeps_a_misdated_event_whole_with_its_reason(
    postgres_url: str, redis_url: str
) -> None:
    """Through the gateway's emitter and the worker's Redis reader: the event is in
    ``trunkline:usage:dead`` as it was sent (to replay once understood), counted on the
    dead-letter metric, and the events around it are billed."""
    factory = migrated(postgres_url)
    acme = accounts(factory)["acme"]
    good = [event(acme, f"good-{n}", when=at(3)) for n in range(10)]
    emit(redis_url, [*good[:5], event(acme, "reset-clock", when=EPOCH), *good[5:]])
    set_aside = reader(redis_url, "c")
    consumer = UsageConsumer(set_aside, factory)
    metrics = CollectorRegistry()
    metrics.register(ConsumerCollector(consumer, set_aside))
    assert consumer.drain() == 11
    assert_reconciled(factory, good)
    with redis.Redis.from_url(redis_url) as client:
        [(_id, fields)] = client.xrange(f"{STREAM}:dead")
        assert client.xlen(STREAM) == 0
    assert decode_usage(fields[b"e"]) == event(acme, "reset-clock", when=EPOCH)
    assert b"before the first price book version" in fields[b"error"]
    assert metrics.get_sample_value("trunkline_usage_dead_lettered_events_total") == 1
    assert metrics.get_sample_value("trunkline_usage_ingested_events_total") == 10


@pytest.mark.parametrize(
    "worker_off", [timedelta(hours=-2), timedelta(hours=2)], ids=["behind", "ahead"]
)
def test_a_workers_wrong_clock_changes_nothing_set_aside(
    postgres_url: str, redis_url: str, worker_off: timedelta
) -> None:
    """A worker whose clock was 2 h behind set aside every event of the present as stamped
    ahead (on the dead-letter metric, not billed until replayed by hand), and one 2 h ahead
    billed an event stamped an hour ahead. An event is judged against the time it entered
    the Redis stream, by Redis's clock: the worker's clock changes nothing."""
    factory = migrated(postgres_url)
    acme = accounts(factory)["acme"]
    present = datetime.now(UTC)  # the gateway's clock is right
    emit(
        redis_url,
        [event(acme, "now", when=present), event(acme, "ahead", when=present + timedelta(hours=1))],
    )
    wrong = (present + worker_off).timestamp()
    consumer = UsageConsumer(reader(redis_url, "c"), factory, clock=lambda: wrong)
    assert consumer.drain() == 2
    assert ledger(factory) == ["now"]
    with redis.Redis.from_url(redis_url) as client:
        [(_id, fields)] = client.xrange(f"{STREAM}:dead")
    assert decode_usage(fields[b"e"]).request_id == "ahead"
    assert b"ahead of the time it entered the usage stream" in fields[b"error"]


def test_misdated_usage_already_in_the_ledger_is_set_aside_and_closes_go_on(
    factory: sessionmaker[Session], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A ledger written before ingest checked: the CLI takes the events out, into a file where
    there is no Redis (embedded), and the next close closes what was blocked."""
    acme = accounts(factory)["acme"]
    ingest_unchecked(
        factory,
        [
            event(acme, "reset-clock", when=EPOCH),
            event(acme, "ahead", when=FAR_AHEAD),
            event(acme, "november", when=at(20)),
        ],
    )
    ctx = JobContext(
        factory, InMemoryUsageStream, JobSettings(close_grace_hours=48), clock=lambda: NOW
    )
    with pytest.raises(InvalidRequest, match="comes before the first version"):
        close_periods(ctx)

    code, out, err = run_cli(capsys, "billing", "set-aside-misdated", "--dry-run")
    assert code == 0 and "2 usage events would be set aside" in err
    assert ledger(factory) == ["ahead", "november", "reset-clock"]

    kept = tmp_path / "set-aside.jsonl"
    code, out, err = run_cli(capsys, "billing", "set-aside-misdated", "--out", str(kept))
    assert code == 0, err
    assert [line.split("\t")[0] for line in out.splitlines()] == ["reset-clock", "ahead"]
    assert ledger(factory) == ["november"]
    assert close_periods(ctx) == ["2026-11"]
    code, out, err = run_cli(
        capsys, "billing", "set-aside-misdated", "--out", str(tmp_path / "again")
    )
    assert (code, out) == (0, "") and "0 usage events set aside" in err
    lines = [msgspec.json.decode(line) for line in kept.read_bytes().splitlines()]
    assert [decode_usage(msgspec.json.encode(line["e"])) for line in lines] == [
        event(acme, "reset-clock", when=EPOCH),
        event(acme, "ahead", when=FAR_AHEAD),
    ]
    assert "before the first price book version" in lines[0]["error"]


def test_the_cli_keeps_misdated_ledger_usage_in_the_dead_letter_stream(
    postgres_url: str,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", postgres_url)
    monkeypatch.setenv("TRUNKLINE_REDIS__URL", redis_url)
    monkeypatch.setenv("TRUNKLINE_STATE_DIR", str(tmp_path / "state"))
    factory = migrated(postgres_url)
    acme = accounts(factory)["acme"]
    ingest_unchecked(
        factory, [event(acme, "reset-clock", when=EPOCH), event(acme, "ok", when=at(3))]
    )
    code, _out, err = run_cli(capsys, "billing", "set-aside-misdated")
    assert code == 0 and "1 usage events set aside" in err
    assert ledger(factory) == ["ok"]
    with redis.Redis.from_url(redis_url) as client:
        [(_id, fields)] = client.xrange(f"{STREAM}:dead")
    assert decode_usage(fields[b"e"]) == event(acme, "reset-clock", when=EPOCH)
    assert b"before the first price book version" in fields[b"error"]


def test_misdated_usage_of_a_closed_period_is_left_where_it_was_billed(
    factory: sessionmaker[Session], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """With a price book applied before the event came, the worker closed January 1970 (and
    every month since): taken out of that closed month, the event made every later close fail
    re-rating it, since no price rates 1970."""
    acme = accounts(factory)["acme"]
    with transaction(factory) as session:
        apply_price_book(session, load_price_book(session))
    ingest_unchecked(
        factory,
        [event(acme, "reset-clock", when=EPOCH), event(acme, "ahead", when=FAR_AHEAD)],
    )
    with transaction(factory) as session:
        closing_view(session)
        assert close(session, parse_period("1970-01"), NOW)
    kept = tmp_path / "set-aside.jsonl"
    code, out, err = run_cli(capsys, "billing", "set-aside-misdated", "--out", str(kept))
    assert code == 0, err
    assert [line.split("\t")[0] for line in out.splitlines()] == ["ahead"]
    assert "1 misdated usage events left in closed periods, billed there (1970-01)" in err
    assert ledger(factory) == ["reset-clock"]
    ingest_unchecked(factory, [event(acme, "november", when=at(20))])
    with transaction(factory) as session:
        closing_view(session)
        assert close(session, parse_period("2026-11"), NOW)


class _DiesBeforeAck:
    """A worker's reader that dies once its batch committed, before acking it."""

    def __init__(self, reader: UsageReader, stop: threading.Event) -> None:
        self._reader, self._stop = reader, stop
        self.dead_lettered = 0

    def read(self, max_count: int) -> list[tuple[str, UsageRecord]]:
        return self._reader.read(max_count)

    def ack(self, ids: list[str]) -> None:
        self._stop.set()
        raise ConnectionError("killed between the commit and the ack")

    def set_aside(self, entries: list[tuple[str, UsageRecord, str]]) -> None:
        self._reader.set_aside(entries)

    def backlog(self) -> int:
        return self._reader.backlog()


def test_an_event_billed_already_is_not_set_aside_when_another_worker_claims_it(
    factory: sessionmaker[Session],
) -> None:
    """A worker wrote a batch and died before acking it; another worker, allowed a smaller
    skew (``TRUNKLINE_JOBS__USAGE_CLOCK_SKEW_S`` changed, the first not restarted yet),
    claimed it. An event stamped within the first's skew of the time it entered the stream
    and past the second's was billed and set aside too: counted on the dead-letter metric and
    logged as not billed, though it was."""
    acme = accounts(factory)["acme"]
    soon = event(acme, "soon", when=NOW + timedelta(minutes=10))
    stream = InMemoryUsageStream(claim_idle_s=0, clock=NOW.timestamp)
    stream.emit(soon)
    stop = threading.Event()
    first = UsageConsumer(
        _DiesBeforeAck(stream.reader(3600), stop), factory, stop=stop, max_ahead_s=900
    )
    first.step()
    assert ledger(factory) == ["soon"] and len(stream) == 1  # billed, not acked
    second = UsageConsumer(stream.reader(0), factory, max_ahead_s=60)
    assert second.drain() == 1
    assert ledger(factory) == ["soon"] and not len(stream)
    assert stream.dead == [] and stream.dead_lettered == 0
    assert second.stats.events == 1 and second.stats.inserted == 0


def _key_last_used(factory: sessionmaker[Session], key_id: str) -> datetime | None:
    with factory() as session:
        return session.scalars(select(ApiKey.last_used_at).where(ApiKey.key_id == key_id)).one()


def test_a_keys_last_use_set_by_a_misdated_event_is_its_last_event_left(
    factory: sessionmaker[Session], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An event stamped in 2999 made its key's "last used" 2999; taken out of the ledger, it
    left it there, for good (a later use never moves it back). Now a key's last use is that of
    its latest event left, or none; a key a misdated event did not set keeps its own."""
    acme = accounts(factory)["acme"]
    with transaction(factory) as session:
        project_id = uuid.UUID(acme.project_id)
        issued = [
            create_key(
                session, Principal.system(), b"s" * 32, uuid.UUID(acme.tenant_id),
                ApiKeyCreate(project_id=project_id, name=name),
            ).key.key_id
            for name in ("used", "only-ahead", "reset")
        ]  # fmt: skip
    used, only_ahead, reset = (replace(acme, key_id=key_id) for key_id in issued)
    ingest_unchecked(
        factory,
        [
            event(used, "november", when=at(20)),
            event(used, "ahead", when=FAR_AHEAD),
            event(only_ahead, "only-ahead", when=FAR_AHEAD + timedelta(hours=1)),
            event(reset, "october", when=at(20, month=10)),
            event(reset, "reset-clock", when=EPOCH),
        ],
    )
    assert _key_last_used(factory, used.key_id) == FAR_AHEAD
    code, _out, err = run_cli(
        capsys, "billing", "set-aside-misdated", "--out", str(tmp_path / "aside")
    )
    assert code == 0, err
    assert _key_last_used(factory, used.key_id) == at(20)
    assert _key_last_used(factory, only_ahead.key_id) is None
    assert _key_last_used(factory, reset.key_id) == at(20, month=10)


def test_misdated_usage_is_taken_out_on_an_older_sqlite(tmp_path: Path) -> None:
    """Its statements held 1,000 request ids each: over a cap of 999 bind parameters, taking
    1,000 misdated events out failed ("too many SQL variables")."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    acme = accounts(migrated(url))["acme"]
    ingest_unchecked(migrated(url), [event(acme, f"reset-{n}", when=EPOCH) for n in range(1000)])
    with old_sqlite(url) as factory:
        with transaction(factory) as session:
            found = misdated_in_ledger(session, NOW, 900).open
            remove_from_ledger(session, [record for record, _why in found])
        assert len(found) == 1000 and ledger(factory) == []
