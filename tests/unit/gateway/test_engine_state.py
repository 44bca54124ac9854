"""Engine state without I/O: outlier ejection and readmission, this gateway's own requests in
flight, scrapes merged into ``EndpointLoad``, and ``wait_changed``."""

from __future__ import annotations

import asyncio

import pytest

from trunkline.gateway.endpoints import (
    CacheConfig,
    EjectionPolicy,
    EngineState,
    Health,
    MetricsScan,
)
from trunkline.gateway.endpoints.monitor import EngineMonitor
from trunkline.gateway.endpoints.scan import scan_metrics
from trunkline.settings import EngineStateSettings
from trunkline.snapshot import EndpointEntry, PoolEntry, Snapshot

POLICY = EjectionPolicy(eject_after=3, base_s=1.0, max_s=8.0)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _run(health: Health, script: str, start: float = 0.0) -> list[str]:
    """Play ``script`` (``f`` failure, ``s`` success, ``+N`` seconds pass) and note what
    each step did: ``E`` ejected, ``R`` readmitted, ``.`` nothing new."""
    now, out = start, []
    for step in script.split():
        if step.startswith("+"):
            now += float(step[1:])
            continue
        changed = health.failed(now) if step == "f" else health.succeeded(now)
        out.append(("E" if step == "f" else "R") if changed else ".")
    return out


@pytest.mark.parametrize(
    ("script", "expected", "in_service_after"),
    [
        ("f f", [".", "."], True),
        ("f f f", [".", ".", "E"], False),
        ("f f s f f", [".", ".", ".", ".", "."], True),  # a success resets the count
        ("f f f f s", [".", ".", "E", ".", "."], False),  # late answers change nothing
        ("f f f +1 s", [".", ".", "E", "R"], True),  # half-open probe succeeds
        ("f f f +1 f +1 s", [".", ".", "E", "E", "."], False),  # probe failed: ejected for 2 s
        ("f f f +1 f +2 s", [".", ".", "E", "E", "R"], True),
        ("f f f +1 f +2 f +4 f +8 f +8 s", [".", ".", "E", "E", "E", "E", "E", "R"], True),
    ],
)
def test_ejection_state_machine(script: str, expected: list[str], in_service_after: bool) -> None:
    health = Health(POLICY)
    assert _run(health, script) == expected
    now = sum(float(s[1:]) for s in script.split() if s.startswith("+"))
    assert health.in_service(now) is in_service_after


def test_backoff_is_capped_and_starts_over_after_a_long_healthy_spell() -> None:
    health = Health(POLICY)
    _run(health, "f f f +1 f +2 f +4 f +8 f")  # ejected for 1, 2, 4, 8, 8 s
    assert health.ejected_until == pytest.approx(15 + 8)
    health.succeeded(23.0)  # readmitted
    _run(health, "f f f", start=23.0 + 8.0)  # in service for max_s: back to the first backoff
    assert health.ejected_until == pytest.approx(31.0 + 1.0)
    assert health.ejections == 6


def test_in_flight_prompt_tokens_count_until_the_first_byte() -> None:
    clock = Clock()
    state = EngineState(POLICY, clock)
    state.sync(["a", "b"])

    first = state.sent("a", 1000)
    second = state.sent("a", 500)
    assert state.loads()["a"].queued_prompt_tokens == 1500
    assert state.loads()["b"].queued_prompt_tokens == 0

    state.first_byte(first)
    state.first_byte(first)  # idempotent
    assert state.loads()["a"].queued_prompt_tokens == 500
    state.ended(first)
    state.ended(second)  # ended before its first byte (an error): no longer queued
    state.ended(second)
    assert state.loads()["a"].queued_prompt_tokens == 0


def test_scrape_merges_with_requests_sent_after_it() -> None:
    clock = Clock()
    state = EngineState(POLICY, clock)
    state.sync(["a"])
    before = state.sent("a", 10)  # the engine already counts this one at the scrape
    state.scraped("a", MetricsScan(running=2, waiting=1, kv_usage=0.5), sent_at=clock.now)
    clock.now += 0.05
    state.sent("a", 10)  # sent after the scrape: the engine had not seen it yet

    load = state.loads()["a"]

    assert (load.running, load.waiting, load.kv_usage) == (2, 1 + 1, 0.5)
    assert load.queued_prompt_tokens == 20
    assert load.age_s == pytest.approx(0.05)
    state.ended(before)


def test_scrapes_give_rates_and_failures_eject() -> None:
    clock = Clock()
    state = EngineState(POLICY, clock)
    state.sync(["a"])
    state.scraped("a", MetricsScan(prompt_tokens=0, prefill_seconds=0.0), clock.now)
    state.scraped("a", MetricsScan(prompt_tokens=800, prefill_seconds=0.2), clock.now)
    assert state.loads()["a"].prefill_tokens_per_s == pytest.approx(4000)

    for _ in range(3):
        state.scrape_failed("a", "ConnectError")
    assert not state.in_service("a") and not state.should_scrape("a")
    clock.now += POLICY.base_s
    assert state.should_scrape("a")  # the ejection is over: the next scrape is the probe
    state.scraped("a", MetricsScan(), clock.now)
    assert state.in_service("a") and state.ejections("a") == 1


def test_scrapes_answering_do_not_take_back_the_failures_of_requests() -> None:
    # An engine whose /metrics answers while its requests fail (5xx, streams dying): scrapes
    # come ten times a second, so if they reset the count no third failure in a row would come.
    clock = Clock()
    state = EngineState(POLICY, clock)
    state.sync(["a"])
    for _ in range(3):
        state.failed("a", "HTTP 500")
        state.scraped("a", MetricsScan(), clock.now)
    assert not state.in_service("a") and state.ejections("a") == 1


def test_a_scrape_takes_back_only_the_failures_of_scrapes_a_request_all_of_them() -> None:
    clock = Clock()
    state = EngineState(POLICY, clock)
    state.sync(["a"])
    state.scrape_failed("a", "ReadTimeout")
    state.failed("a", "HTTP 500")
    state.scraped("a", MetricsScan(), clock.now)  # the scrape's failure is taken back
    state.failed("a", "HTTP 500")
    assert state.in_service("a")  # two request failures in a row
    state.succeeded("a")  # a request answered: the count starts over
    state.failed("a", "HTTP 500")
    state.scrape_failed("a", "ReadTimeout")
    assert state.in_service("a")
    state.failed("a", "HTTP 500")
    assert not state.in_service("a")


@pytest.mark.parametrize("scraped", [True, False])
def test_an_endpoint_whose_ejection_ended_waits_for_the_scrape_probe_when_one_runs(
    scraped: bool,
) -> None:
    clock = Clock()
    state = EngineState(POLICY, clock)
    state.probed_by_scrapes = scraped
    state.sync(["a"])
    for _ in range(3):
        state.scrape_failed("a", "ReadTimeout")  # frozen
    assert not state.routable("a")
    clock.now += POLICY.base_s  # half-open
    assert state.should_scrape("a")
    # With a scraper, no request goes there until its probe answers; without, a request probes.
    assert state.routable("a") is not scraped
    # and /health and /metrics say what routing does (a hung engine flapped back in service)
    assert state.health_report()[0].in_service is not scraped
    state.scraped("a", MetricsScan(), clock.now)
    assert state.routable("a") and state.health_report()[0].in_service


def test_a_page_of_figures_no_engine_means_leaves_the_loads_readable() -> None:
    # NaN waiting with a plain request in flight raised in ``load()``: every request routed
    # over the endpoint's pool was a 500, not even failed over.
    clock = Clock()
    state = EngineState(POLICY, clock)
    state.sync(["a"])
    state.sent("a", 100, streamed=False)
    for value in (b"NaN", b"+Inf", b"-3"):
        page = b'vllm:num_requests_waiting{model_name="m"} ' + value + b"\n"
        state.scraped("a", scan_metrics(page), clock.now)
        load = state.loads()["a"]
        assert (load.running, load.waiting, load.queued_prompt_tokens) == (0, 0, 0)


def test_kv_capacity_and_block_size_are_read_once_and_again_after_a_restart() -> None:
    clock = Clock()
    state = EngineState(POLICY, clock)
    state.sync(["a"])
    reads: list[CacheConfig] = []
    told: list[str] = []
    state.on_cache_config = told.append
    config = CacheConfig(16000, 16)

    def read() -> CacheConfig:
        reads.append(config)
        return config

    assert state.loads()["a"].kv_capacity_tokens is None  # not scraped yet
    assert state.health_report()[0].block_size is None and state.block_sizes() == {}
    state.scraped("a", MetricsScan(prompt_tokens=100), clock.now, read)
    config = CacheConfig(32000, 32)  # the page would say so only after a restart
    state.scraped("a", MetricsScan(prompt_tokens=200), clock.now, read)
    assert state.loads()["a"].kv_capacity_tokens == 16000 and reads == [(16000, 16)]
    assert state.health_report()[0].block_size == 16 and told == ["a"]

    state.scraped("a", MetricsScan(prompt_tokens=5), clock.now, read)  # counters went back

    assert state.loads()["a"].kv_capacity_tokens == 32000 and reads == [(16000, 16), config]
    assert state.block_sizes() == {"a": 32} and told == ["a", "a"]


def test_snapshot_changes_add_and_forget_endpoints() -> None:
    state = EngineState(POLICY, Clock())
    state.sync(["a", "b"])
    state.sync(["b", "c"])
    assert set(state.loads()) == {"b", "c"}
    assert state.in_service("unknown")


def test_a_request_sent_to_an_ejected_endpoint_moves_on_when_its_probe_fails() -> None:
    """Every endpoint ejected, routing tries them all (fail open); a frozen engine held such a
    request until its ejection ended and the probe failed: 31 s, 62 s for two endpoints."""
    clock = Clock()
    state = EngineState(POLICY, clock)
    state.sync(["a"])
    for _ in range(3):
        state.scrape_failed("a", "ReadTimeout")
    assert not state.should_scrape("a")  # ejected, and nobody waits on it: left alone
    abandoned: list[str] = []
    waiting = state.sent("a", 100)
    waiting.on_ejected = lambda: abandoned.append("waiting")
    relaying = state.sent("a", 100)
    relaying.on_ejected = lambda: abandoned.append("relaying")
    state.first_byte(relaying)

    assert state.should_scrape("a")  # a request waits on it: probed at once
    state.scrape_failed("a", "ReadTimeout")
    assert abandoned == ["waiting"] and not state.in_service("a")
    clock.now += 0.5  # still within the ejection: a probe that answers changes nothing
    state.scraped("a", MetricsScan(), clock.now)
    assert not state.in_service("a") and state.ejections("a") == 1


def test_an_endpoint_that_left_the_snapshot_is_not_tracked_again_by_late_outcomes() -> None:
    """A stream's failure on a removed endpoint tracked it again: /health and /metrics then
    showed an endpoint in no pool until the next change of endpoints."""
    state = EngineState(POLICY, Clock())
    state.sync(["a", "b"])
    flight = state.sent("b", 10)
    state.sync(["a"])  # b removed while the request is in flight
    state.failed("b", "RemoteProtocolError")
    state.ended(flight)
    assert set(state.loads()) == {"a"}
    assert [h.endpoint for h in state.health_report()] == ["a"]
    # One new in a snapshot the scraper has not synced yet is tracked, failures included.
    raced = state.sent("c", 10)
    state.ended(raced)
    state.failed("c", "ConnectError")
    assert [(h.endpoint, h.request_failures) for h in state.health_report()] == [
        ("a", 0),
        ("c", 1),
    ]


async def test_wait_changed_wakes_on_any_change_and_times_out_otherwise() -> None:
    state = EngineState(POLICY, Clock())
    state.sync(["a"])
    loop = asyncio.get_running_loop()

    waiter = asyncio.create_task(state.wait_changed(timeout=30))
    await asyncio.sleep(0)
    assert not waiter.done()
    flight = state.sent("a", 5)
    await asyncio.wait_for(waiter, 5)  # woken by the request, long before its timeout

    waiter = asyncio.create_task(state.wait_changed(timeout=30))
    await asyncio.sleep(0)
    state.first_byte(flight)
    await asyncio.wait_for(waiter, 5)

    started = loop.time()
    await state.wait_changed(timeout=0.01)  # nothing changes: returns after the timeout
    assert loop.time() - started >= 0.01


def test_plain_requests_count_as_queued_only_as_far_as_the_engine_reports_waiting() -> None:
    # A plain (non-streamed) answer comes back whole: its first byte comes after its last token,
    # so "no first byte yet" would count every request decoding as a prefill still ahead.
    clock = Clock()
    state = EngineState(POLICY, clock)
    state.sync(["a"])
    older = [state.sent("a", 600, streamed=False) for _ in range(3)]
    clock.now += 0.01
    latest = state.sent("a", 400, streamed=False)
    streamed = state.sent("a", 50)
    state.scraped("a", MetricsScan(running=2, waiting=3, kv_usage=0.3), sent_at=clock.now)

    # Three waiting, one of them our stream (counted exactly): the latest two plain requests
    # (400 + 600) are the other two.
    assert state.loads()["a"].queued_prompt_tokens == 400 + 600 + 50
    clock.now += 0.01
    state.sent("a", 300, streamed=False)  # sent after the scrape: not counted by the engine
    assert state.loads()["a"].queued_prompt_tokens == 300 + 400 + 600 + 50
    state.scraped("a", MetricsScan(running=5, waiting=0, kv_usage=0.5), sent_at=clock.now)
    assert state.loads()["a"].queued_prompt_tokens == 50  # all plain ones started
    for flight in (*older, latest, streamed):
        state.ended(flight)


def test_our_streams_waiting_in_the_engine_are_not_also_counted_as_plain_ones() -> None:
    clock = Clock()
    state = EngineState(POLICY, clock)
    state.sync(["a"])
    plain = state.sent("a", 600, streamed=False)  # decoding already
    stream = state.sent("a", 50)  # waiting: the engine counts it among its waiting
    state.scraped("a", MetricsScan(running=1, waiting=1, kv_usage=0.3), sent_at=clock.now)
    assert state.loads()["a"].queued_prompt_tokens == 50
    state.ended(plain)
    state.ended(stream)


def test_a_stale_scrape_of_our_own_waiting_stream_is_no_unknown_prompt_ahead() -> None:
    # The scrape was sent while our stream waited; its first token has come back since. The
    # engine's "waiting 1" is that stream, not some other client's prompt of unknown size.
    clock = Clock()
    state = EngineState(POLICY, clock)
    state.sync(["a"])
    stream = state.sent("a", 800)
    clock.now += 0.01
    scrape_sent = clock.now
    clock.now += 0.05
    state.first_byte(stream)  # after the scrape was sent, before its answer came back
    state.scraped("a", MetricsScan(running=0, waiting=1, kv_usage=0.1), sent_at=scrape_sent)
    load = state.loads()["a"]
    assert (load.waiting, load.queued_prompt_tokens, load.unaccounted_waiting) == (1, 0, 0)

    # Another client's request waits in the next scrape: that one is unknown.
    clock.now += 0.1
    state.scraped("a", MetricsScan(running=1, waiting=1, kv_usage=0.2), sent_at=clock.now)
    assert state.loads()["a"].unaccounted_waiting == 1
    state.ended(stream)


def test_waiting_requests_are_unaccounted_only_beyond_ours() -> None:
    clock = Clock()
    state = EngineState(POLICY, clock)
    state.sync(["a"])
    waiting = state.sent("a", 300)  # still waiting at the scrape and after
    failed = state.sent("a", 200)  # waiting at the scrape, fails before its first byte
    plain = state.sent("a", 500, streamed=False)  # waiting or running: the scrape cannot say
    clock.now += 0.01
    state.scraped("a", MetricsScan(running=1, waiting=5, kv_usage=0.1), sent_at=clock.now)
    clock.now += 0.01
    state.ended(failed)
    late = state.sent("a", 100)  # sent after the scrape: not in its figures
    load = state.loads()["a"]
    assert load.waiting == 5 + 1
    assert load.unaccounted_waiting == 5 - 3  # two requests of someone else's
    assert load.queued_prompt_tokens == 300 + 100 + 500
    for flight in (waiting, plain, late):
        state.ended(flight)
    # Ours all left before the next scrape was sent: its two waiting are someone else's.
    clock.now += 0.01
    state.scraped("a", MetricsScan(running=0, waiting=2, kv_usage=0.0), sent_at=clock.now)
    assert state.loads()["a"].unaccounted_waiting == 2


def test_a_request_sent_while_a_scrape_was_out_may_be_in_it() -> None:
    # The engine took the request in before answering a scrape sent just before it.
    clock = Clock()
    state = EngineState(POLICY, clock)
    state.sync(["a"])
    scrape_sent = clock.now
    clock.now += 0.01
    stream = state.sent("a", 400)
    clock.now += 0.01
    state.scraped("a", MetricsScan(running=0, waiting=1, kv_usage=0.1), sent_at=scrape_sent)
    load = state.loads()["a"]
    assert (load.waiting, load.queued_prompt_tokens, load.unaccounted_waiting) == (2, 400, 0)
    state.ended(stream)


def test_requests_remembered_as_started_stay_bounded_when_scrapes_stop() -> None:
    clock = Clock()
    state = EngineState(POLICY, clock)
    state.sync(["a"])
    state.scraped("a", MetricsScan(running=0, waiting=0, kv_usage=0.0), sent_at=clock.now)
    remembered = []
    for _ in range(3000):  # 300 s of traffic, no scrape after the first
        clock.now += 0.1
        flight = state.sent("a", 10)
        state.first_byte(flight)
        state.ended(flight)
        remembered.append(len(state._endpoints["a"].left_waiting))  # memory, not behaviour
    # Only the last 2 s are kept: a scrape older than that says nothing of them.
    assert max(remembered) <= 21 and remembered[-1] == 20


def test_a_stream_its_idle_engine_lost_moves_on_and_counts_against_it() -> None:
    """Its head came, then nothing: an engine whose page says it runs and queues nothing has
    not got the request (a hung API server), where waiting meant the read timeout (300 s)."""
    clock = Clock()
    state = EngineState(POLICY, clock, lost_stream_s=2.0)
    state.sync(["a"])
    moved: list[str] = []
    flights = {}
    for name, streamed, head in [
        ("lost", True, True),
        ("lost too", True, True),
        ("no-head", True, False),
        ("plain", False, False),
    ]:
        flight = flights[name] = state.sent("a", 100, streamed=streamed)
        flight.on_ejected = lambda name=name: moved.append(name)
        if head:
            state.head(flight)

    clock.now += 1.5
    state.scraped("a", MetricsScan(), clock.now)  # too soon after the head: it may be starting
    clock.now += 1.0
    state.scraped("a", MetricsScan(running=1), clock.now)  # busy: it may be queued there
    assert moved == []

    state.scraped("a", MetricsScan(), clock.now)
    assert sorted(moved) == ["lost", "lost too"]
    [health] = state.health_report()
    assert health.request_failures == 1 and health.in_service  # one page, one failure
    state.first_byte(flights["plain"])
    state.scraped("a", MetricsScan(), clock.now)  # neither a plain request nor a headless one
    assert len(moved) == 2  # and the lost ones once, though their requests have not ended them
    # A page without vLLM's gauges (``--disable-log-stats``) says nothing of what runs there.
    lost = state.sent("a", 100)
    lost.on_ejected = lambda: moved.append("unknown")
    state.head(lost)
    clock.now += 3.0
    state.scraped("a", scan_metrics(b"# TYPE process_cpu_seconds counter\n"), clock.now)
    assert len(moved) == 2


def test_an_engine_that_answers_nothing_is_probed_every_few_seconds_not_every_30() -> None:
    """Scrape probes of a dead engine doubled its ejection to 30 s: restarted after a minute,
    it waited up to 30 s more for traffic. Requests' failures still double to the maximum."""
    policy = EjectionPolicy(eject_after=3, base_s=1.0, max_s=30.0, probe_max_s=5.0)
    dead, failing = Health(policy), Health(policy)
    now = 0.0
    for health in (dead, failing):
        for _ in range(3):
            health.failed(now, scrape=health is dead)
    waits: dict[int, list[float]] = {id(dead): [], id(failing): []}
    for health in (dead, failing):
        at = now
        for _ in range(6):  # each probe fails as its ejection ends
            assert health.ejected_until is not None
            waits[id(health)].append(health.ejected_until - at)
            at = health.ejected_until
            health.failed(at, scrape=health is dead)
    assert waits[id(dead)] == [1, 2, 4, 5, 5, 5]
    assert waits[id(failing)] == [1, 2, 4, 8, 16, 30]


def _snapshot(version: int, *endpoints: str) -> Snapshot:
    entries = tuple(EndpointEntry(e, f"http://{e}") for e in endpoints)
    pool = PoolEntry("pool", "m", "h100", "us", False, 16, entries)
    return Snapshot(version, 0.0, {}, {}, {}, {}, {"pool": pool})


def test_an_endpoint_back_in_the_snapshot_is_served_before_the_next_sync() -> None:
    """Removed, then back in the configuration: admission may send held requests there at
    once, not from engine state's next sync on (until then they were refused)."""
    current = _snapshot(1, "pool/0", "pool/1")
    monitor = EngineMonitor(lambda: current, EngineStateSettings(), client=None)
    engines = monitor.state
    engines.sync(["pool/0", "pool/1"])
    current = _snapshot(2, "pool/0")
    engines.sync(["pool/0"])
    assert not engines.serves("pool/1")

    current = _snapshot(3, "pool/0", "pool/1")

    assert engines.serves("pool/1")
