"""Hourly rollups from the ledger: outcomes, SLO attainment counts, idempotent reruns, late
events that update exactly the rows they change, runs in chunks, and rows whose events were
corrected away. ``integration/metering/test_rollups_postgres.py`` runs these on PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from trunkline.kit.db import transaction
from trunkline.metering.rollups import RollupRun, recompute_in_sql, rollup_usage
from trunkline.models import Tier, UsageEvent, UsageRollup, UsageRollupWatermark
from unit.metering.usage_support import Account, at, event, ingest, mark_changed


def rollups(factory: sessionmaker[Session]) -> list[dict[str, Any]]:
    with transaction(factory) as session:
        rows = session.scalars(select(UsageRollup).order_by(UsageRollup.hour, UsageRollup.outcome))
        return [
            {k: getattr(r, k) for k in ("hour", "outcome", "requests", "prompt_tokens",
                                        "cached_tokens", "completion_tokens", "slo_eligible",
                                        "slo_met", "revision", "tier")}
            for r in rows
        ]  # fmt: skip


# acme is gold: TTFT SLO 500 ms
@pytest.mark.parametrize(
    ("status", "ttft_ms", "outcome", "eligible", "met", "stream"),
    [
        (200, 120.0, "completed", 1, 1, True),
        (200, 500.0, "completed", 1, 1, True),  # on the SLO is within it
        (200, 501.0, "completed", 1, 0, True),
        (200, None, "completed", 0, 0, False),  # plain answers have no first token
        (499, 80.0, "cancelled", 1, 1, True),  # the client left after its first token
        (499, None, "cancelled", 0, 0, True),  # ... or before it: not the platform's miss
        (400, None, "rejected", 0, 0, True),
        (502, 90.0, "failed", 1, 0, True),  # a server-side failure is a miss
        (503, None, "failed", 1, 0, True),
        # ... of a stream: a plain request's failure has no first token to miss either (its
        # successes do not count, so its failures alone made the attainment 0 %)
        (503, None, "failed", 0, 0, False),
        (504, None, "failed", 0, 0, False),
    ],
)
def test_outcome_and_slo_counts(
    factory: sessionmaker[Session],
    tenants: dict[str, Account],
    status: int,
    ttft_ms: float | None,
    outcome: str,
    eligible: int,
    met: int,
    stream: bool,
) -> None:
    record = event(tenants["acme"], when=at(3), status=status, ttft_ms=ttft_ms, stream=stream)
    ingest(factory, [record])
    [row] = rollups(factory)
    assert (row["outcome"], row["slo_eligible"], row["slo_met"]) == (outcome, eligible, met)


def test_a_changed_tier_slo_does_not_rewrite_past_attainment_when_an_hour_is_rolled_again(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """Gold's SLO cut from 500 ms to 50 ms, then a late event in an hour already rolled up:
    the events served under 500 ms keep their verdict (the SLA credit of the period with
    them). An event recorded before SLOs were kept is judged by the tier's SLO as before."""
    acme = tenants["acme"]
    served = [event(acme, when=at(3), ttft_ms=100.0, stream=True, ttft_slo_ms=500)] * 3
    ingest(factory, [msgspec.structs.replace(e, request_id=f"r{n}") for n, e in enumerate(served)])
    assert [(r["slo_eligible"], r["slo_met"]) for r in rollups(factory)] == [(3, 3)]
    with transaction(factory) as session:
        session.execute(update(Tier).where(Tier.name == "gold").values(ttft_slo_ms=50))
    late = event(acme, when=at(3, minute=30), ttft_ms=100.0, stream=True, ttft_slo_ms=50)
    old = event(acme, when=at(3, minute=31), ttft_ms=40.0, stream=True)  # no SLO recorded
    ingest(factory, [late, old])
    assert [(r["slo_eligible"], r["slo_met"]) for r in rollups(factory)] == [(5, 4)]


def test_events_of_one_hour_add_up_and_hours_stay_apart(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    acme = tenants["acme"]
    ingest(
        factory,
        [
            event(acme, when=at(3, 10, 0), prompt=100, cached=40, completion=10),
            event(acme, when=at(3, 10, 59), prompt=200, cached=0, completion=20),
            event(acme, when=at(3, 11, 0), prompt=1, cached=1, completion=1),
        ],
    )
    ten, eleven = rollups(factory)
    assert (ten["hour"], ten["requests"], ten["prompt_tokens"], ten["cached_tokens"]) == (
        at(3, 10), 2, 300, 40,
    )  # fmt: skip
    assert (eleven["hour"], eleven["requests"], eleven["completion_tokens"]) == (at(3, 11), 1, 1)


def test_a_rerun_changes_nothing_and_redelivery_counts_once(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    first = event(tenants["acme"], "req-1", when=at(3))
    ingest(factory, [first, first])
    before = rollups(factory)
    ingest(factory, [first])  # delivered a third time
    run = rollup_usage(factory)
    assert run.tenant_hours == 0
    assert rollups(factory) == before
    assert before[0]["requests"] == 1


def test_a_late_event_updates_only_its_own_hour(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    acme, globex = tenants["acme"], tenants["globex"]
    ingest(factory, [event(acme, when=at(3, 10)), event(acme, when=at(4, 10)),
                     event(globex, when=at(3, 10))])  # fmt: skip
    ingest(factory, [event(acme, when=at(3, 10, 30))], rollup=False)
    with transaction(factory) as session:
        pending = session.scalars(
            select(UsageRollupWatermark.hour).where(
                UsageRollupWatermark.changed_seq > UsageRollupWatermark.rolled_seq
            )
        ).all()
    assert pending == [at(3, 10)]
    run = rollup_usage(factory)
    assert (run.tenant_hours, run.inserted, run.updated) == (1, 0, 1)
    by_revision = {(r["hour"], r["tier"]): (r["requests"], r["revision"]) for r in rollups(factory)}
    assert by_revision == {
        (at(3, 10), "gold"): (2, 2),
        (at(4, 10), "gold"): (1, 1),
        (at(3, 10), "silver"): (1, 1),
    }


def test_every_emitted_token_is_in_the_rollups(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    events = [
        event(tenants[slug], when=at(day, hour), prompt=10 * day + hour, completion=hour,
              status=status)
        for slug in ("acme", "globex", "initech")
        for day in (1, 15, 30)
        for hour, status in ((0, 200), (13, 499), (23, 502))
    ]  # fmt: skip
    ingest(factory, events)
    with transaction(factory) as session:
        sums = session.execute(
            select(func.sum(UsageRollup.requests), func.sum(UsageRollup.prompt_tokens),
                   func.sum(UsageRollup.completion_tokens))
        ).one()  # fmt: skip
    assert tuple(sums) == (
        len(events),
        sum(e.prompt_tokens for e in events),
        sum(e.completion_tokens for e in events),
    )


def test_a_run_in_small_chunks_writes_what_one_chunk_writes(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """Seven tenant-hours in chunks of two (the last chunk short) and then again in chunks of
    one after late events: every chunk's hours rolled up, none twice, none left over."""
    events = [event(tenants[slug], when=at(3, hour)) for slug in ("acme", "globex")
              for hour in (1, 2, 3)] + [event(tenants["initech"], when=at(4))]  # fmt: skip
    ingest(factory, events, rollup=False)
    run = rollup_usage(factory, chunk=2)
    assert (run.tenant_hours, run.inserted, run.updated, run.deleted) == (7, 7, 0, 0)
    assert sum(r["requests"] for r in rollups(factory)) == 7
    late = [event(tenants["acme"], when=at(3, hour, 30)) for hour in (1, 2)]
    ingest(factory, late, rollup=False)
    run = rollup_usage(factory, chunk=1)
    assert (run.tenant_hours, run.inserted, run.updated, run.deleted) == (2, 0, 2, 0)
    assert sorted((r["requests"], r["revision"]) for r in rollups(factory)) == [
        (1, 1)] * 5 + [(2, 2)] * 2  # fmt: skip


def test_a_run_ends_while_ingest_keeps_changing_the_hours_it_rolls_up(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """Under steady ingest an active tenant-hour changes again while its chunk is rolled up:
    a run went on while its chunks came back full, and never ended with more such hours than
    a chunk (a Celery worker's processes all rolling up, none left to ingest). A run rolls up
    what was pending when it began; what changed since is left to the next."""
    ingest(factory, [event(tenants["acme"], when=at(3))], rollup=False)
    chunks = 0

    def ingest_meanwhile(session: Session, ranges: Any, now: datetime) -> tuple[int, int, int]:
        nonlocal chunks
        chunks += 1
        if chunks > 5:
            raise AssertionError("the run never ends")
        done = recompute_in_sql(session, ranges, now)
        mark = UsageRollupWatermark
        session.execute(update(mark).values(changed_seq=mark.changed_seq + 1))
        return done

    run = rollup_usage(factory, chunk=1, recompute=ingest_meanwhile)
    assert (run.tenant_hours, chunks) == (1, 1)
    assert [r["requests"] for r in rollups(factory)] == [1]
    rollup_usage(factory)  # the next run
    with factory() as session:
        mark = UsageRollupWatermark
        assert session.scalar(select(func.count()).where(mark.changed_seq > mark.rolled_seq)) == 0


def test_a_run_rolls_up_every_hour_pending_when_it_began_while_ingest_goes_on(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """A run counted the tenant-hours it rolled up against those pending when it began, and
    each chunk took the first pending ones again, changed meanwhile: with more active tenants
    than a chunk, those past the first chunk (in id order) were rolled up by no run until
    their hour went quiet, and their usage stayed an hour behind. Each is rolled up once."""
    ingest(factory, [event(account, when=at(3)) for account in tenants.values()], rollup=False)

    def ingest_meanwhile(session: Session, ranges: Any, now: datetime) -> tuple[int, int, int]:
        done = recompute_in_sql(session, ranges, now)
        mark = UsageRollupWatermark
        session.execute(update(mark).values(changed_seq=mark.changed_seq + 1))
        return done

    run = rollup_usage(factory, chunk=1, recompute=ingest_meanwhile)
    assert run.tenant_hours == len(tenants) > 1
    assert sum(r["requests"] for r in rollups(factory)) == len(tenants)


def test_a_late_event_rewrites_only_the_row_it_changes(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    acme = tenants["acme"]
    ingest(factory, [event(acme, when=at(3)), event(acme, when=at(3), status=502)])
    ingest(factory, [event(acme, when=at(3), status=502, prompt=7)])
    assert [(r["outcome"], r["requests"], r["revision"]) for r in rollups(factory)] == [
        ("completed", 1, 1),
        ("failed", 2, 2),
    ]


def test_rows_of_an_hour_whose_events_were_corrected_away_are_deleted(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """The 3 pm events, recorded as failed, were answered after all; the 4 pm ones are
    removed: the failed row of 3 pm and all of 4 pm go, the next hour stays as it was."""
    acme = tenants["acme"]
    ingest(factory, [event(acme, when=at(3, 15), status=502), event(acme, when=at(3, 15)),
                     event(acme, when=at(3, 16)), event(acme, when=at(3, 17))])  # fmt: skip
    with transaction(factory) as session:
        session.execute(update(UsageEvent).where(UsageEvent.status == 502).values(status=200))
        session.execute(delete(UsageEvent).where(UsageEvent.started_at >= at(3, 16, 0),
                                                 UsageEvent.started_at < at(3, 17, 0)))  # fmt: skip
    mark_changed(factory, at(3, 15))
    mark_changed(factory, at(3, 16))
    run = rollup_usage(factory)
    assert (run.tenant_hours, run.inserted, run.updated, run.deleted) == (2, 0, 1, 2)
    assert [(r["hour"], r["outcome"], r["requests"], r["revision"]) for r in rollups(factory)] == [
        (at(3, 15), "completed", 2, 2),
        (at(3, 17), "completed", 1, 1),
    ]
    assert rollup_usage(factory) == RollupRun()


def test_a_corrected_ttft_rewrites_the_slo_counts_alone(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """Requests and tokens unchanged, the row is still written: every measure is compared."""
    ingest(factory, [event(tenants["acme"], "slow", when=at(3), ttft_ms=900.0, stream=True)])
    with transaction(factory) as session:
        session.execute(update(UsageEvent).values(ttft_ms=90.0))
    mark_changed(factory, at(3))
    run = rollup_usage(factory)
    assert (run.updated, run.inserted, run.deleted) == (1, 0, 0)
    [row] = rollups(factory)
    assert (row["requests"], row["slo_eligible"], row["slo_met"], row["revision"]) == (1, 1, 1, 2)


FAILING_INSERT = {
    "sqlite": [
        "CREATE TRIGGER refuse BEFORE INSERT ON usage_rollups"
        " BEGIN SELECT RAISE(ABORT, 'disk full'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$",
        "CREATE TRIGGER refuse BEFORE INSERT ON usage_rollups"
        " FOR EACH ROW EXECUTE FUNCTION refuse()",
    ],
}
DROP_TRIGGER = {
    "sqlite": "DROP TRIGGER refuse",
    "postgresql": "DROP TRIGGER refuse ON usage_rollups",
}


def test_a_run_that_failed_half_way_is_done_whole_by_the_next(
    factory: sessionmaker[Session], tenants: dict[str, Account]
) -> None:
    """The database refused the rollup rows after the hour's aggregate was computed: nothing
    of that run stays, and the next run (on the same pooled connection) does all of it."""
    ingest(factory, [event(tenants["acme"], when=at(3)), event(tenants["globex"], when=at(3))],
           rollup=False)  # fmt: skip
    with transaction(factory) as session:
        dialect = session.get_bind().dialect.name
        for statement in FAILING_INSERT[dialect]:
            session.execute(text(statement))
    with pytest.raises(DBAPIError, match="disk full"):
        rollup_usage(factory)
    with transaction(factory) as session:
        session.execute(text(DROP_TRIGGER[dialect]))
    assert rollups(factory) == []
    run = rollup_usage(factory)
    assert (run.tenant_hours, run.inserted) == (2, 2)
    assert [r["requests"] for r in rollups(factory)] == [1, 1]
