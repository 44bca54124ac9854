"""The rollup tests of ``unit/metering/test_rollups.py`` on PostgreSQL: the job runs in SQL
(a temporary table, an upsert, an anti-join delete) whose dialects differ, and production
rolls up on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from unit.metering.test_rollups import (
    test_a_changed_tier_slo_does_not_rewrite_past_attainment_when_an_hour_is_rolled_again,
    test_a_corrected_ttft_rewrites_the_slo_counts_alone,
    test_a_late_event_rewrites_only_the_row_it_changes,
    test_a_late_event_updates_only_its_own_hour,
    test_a_rerun_changes_nothing_and_redelivery_counts_once,
    test_a_run_ends_while_ingest_keeps_changing_the_hours_it_rolls_up,
    test_a_run_in_small_chunks_writes_what_one_chunk_writes,
    test_a_run_rolls_up_every_hour_pending_when_it_began_while_ingest_goes_on,
    test_a_run_that_failed_half_way_is_done_whole_by_the_next,
    test_events_of_one_hour_add_up_and_hours_stay_apart,
    test_every_emitted_token_is_in_the_rollups,
    test_outcome_and_slo_counts,
    test_rows_of_an_hour_whose_events_were_corrected_away_are_deleted,
)
from unit.metering.usage_support import Account, accounts, migrated

__all__ = [
    "test_a_changed_tier_slo_does_not_rewrite_past_attainment_when_an_hour_is_rolled_again",
    "test_a_corrected_ttft_rewrites_the_slo_counts_alone",
    "test_a_late_event_rewrites_only_the_row_it_changes",
    "test_a_late_event_updates_only_its_own_hour",
    "test_a_rerun_changes_nothing_and_redelivery_counts_once",
    "test_a_run_ends_while_ingest_keeps_changing_the_hours_it_rolls_up",
    "test_a_run_in_small_chunks_writes_what_one_chunk_writes",
    "test_a_run_rolls_up_every_hour_pending_when_it_began_while_ingest_goes_on",
    "test_a_run_that_failed_half_way_is_done_whole_by_the_next",
    "test_events_of_one_hour_add_up_and_hours_stay_apart",
    "test_every_emitted_token_is_in_the_rollups",
    "test_outcome_and_slo_counts",
    "test_rows_of_an_hour_whose_events_were_corrected_away_are_deleted",
]


@pytest.fixture
def factory(postgres_url: str) -> Iterator[sessionmaker[Session]]:
    made = migrated(postgres_url)
    yield made
    made.kw["bind"].dispose()


@pytest.fixture
def tenants(factory: sessionmaker[Session]) -> dict[str, Account]:
    return accounts(factory)
