"""A replica that stops mid-run behind the gateway, on real vLLM.

Two replicas behind a gateway whose engine state scrapes them: the session's ``vllm_server``
(the survivor, last core) and a fresh replica of this module's (the victim, first core). Long
requests run on both, one streamed and one plain each, while two clients send a steady series
of short ones, streamed and plain in turn; then the victim is stopped one of three ways: SIGKILL
to its process group (a crash, an OOM kill), SIGTERM to its API server alone (Kubernetes
stopping a container whose first process is ``vllm serve``), SIGTERM to the whole group
(systemd's default ``KillMode``, ``kill -- -PGID``). docs/real-vllm.md says what vLLM does in
each. Whichever, the gateway ejects the victim, serves every request sent after the stop whole
on the survivor, moves the plain requests the victim had not answered to the survivor, and ends
the streams the victim had started with an error event.

The module starts one victim per way of stopping, all at once (≈50 s on a quiet machine), and
pins each victim's processes to one core (``support.vllm.pin``): its API server then relays
tokens as they come, so a stream that sent its first chunk is surely mid-way at the stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from support.gateway import serve_on_loopback, usage_records
from support.loop_watchdog import loop_watchdog
from support.traffic import Client, Outcome, UpstreamLog
from support.vllm import VllmEnv, VllmServer, gateway_app, pin, start_vllm_replicas
from trunkline.gateway.endpoints import EngineState
from trunkline.gateway.endpoints.state import EndpointHealth
from trunkline.metering.schemas import UsageRecord
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.settings import EngineStateSettings, GatewaySettings

VICTIM, SURVIVOR = "vllm-0", "vllm-1"  # publish_pool's endpoint ids, in the order given
LONG, SHORT = 2000, 16  # tokens; a long request runs for seconds, past the stop
STREAM_IDLE_S = 10.0  # the gateway's stream idle timeout here (30 s by default)
DEADLINE_S = 120.0  # for anything awaited; clients give up after it too (the gateway's is 300 s)


@dataclass(frozen=True)
class Stop:
    name: str
    signal: signal.Signals
    group: bool
    """The whole process group (API server, engine core, worker), or the API server alone."""

    def send(self, server: VllmServer) -> None:
        assert server.proc is not None
        pid = server.proc.popen.pid
        if self.group:
            os.killpg(pid, self.signal)
        else:
            os.kill(pid, self.signal)


STOPS = [
    Stop("sigkill-group", signal.SIGKILL, group=True),
    Stop("sigterm-server", signal.SIGTERM, group=False),
    Stop("sigterm-group", signal.SIGTERM, group=True),
]


@pytest.fixture(scope="module")
def spare_replicas(
    vllm_env: VllmEnv, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[VllmServer]]:
    """One fresh replica per way of stopping, all on the first core, started at once: the
    tests stop them (never ``vllm_server`` or ``vllm_pair``, which other tests share)."""
    first = min(os.sched_getaffinity(0))
    spares = start_vllm_replicas(
        tmp_path_factory.mktemp("vllm-spares"), [str(first)] * len(STOPS), env=vllm_env
    )
    for spare in spares:
        # Its API server relays each token as it comes: a victim's stream is surely mid-way
        # when its first chunk came (and its answers take long enough to be cut by the stop).
        pin(spare, {first})
    try:
        yield list(spares)
    finally:
        for server in spares:
            assert server.proc is not None
            with contextlib.suppress(ProcessLookupError):  # gone already
                os.killpg(server.proc.popen.pid, signal.SIGKILL)
            server.stop()


@pytest.fixture
def victim(spare_replicas: list[VllmServer]) -> VllmServer:
    assert spare_replicas, "more tests stop a replica than the module started spares"
    return spare_replicas.pop()


@dataclass
class Harness:
    """A served gateway over the victim and the survivor, and what watches it."""

    client: Client
    engines: EngineState
    upstream: UpstreamLog
    usage: InMemoryUsageStream

    async def until(self, what: str, done: Callable[[], bool]) -> float:
        """Wait, against a deadline, until ``done()``; the time it was seen (re-checked
        whenever the engine state changes: ten scrapes a second, each request sent or ended)."""
        deadline = time.monotonic() + DEADLINE_S
        while not done():
            if time.monotonic() > deadline:
                health = self.engines.health_report()
                raise AssertionError(f"{what}: not within {DEADLINE_S} s; {health}")
            await self.engines.wait_changed(timeout=0.1)
        return time.monotonic()


@contextlib.asynccontextmanager
async def _gateway(servers: list[VllmServer]) -> AsyncIterator[Harness]:
    settings = GatewaySettings(
        snapshot_poll_s=0.05,
        routing_policy="round-robin",  # alternates: each replica gets one of each long request
        admission="off",  # these tests pin failover, not what SLO admission makes of the load
        stream_idle_timeout_s=STREAM_IDLE_S,
        # A loaded machine answers late (docs/real-vllm.md): only the stop may fail a
        # connection or eject a replica.
        connect_timeout_s=10.0,
        engines=EngineStateSettings(scrape_timeout_s=5.0),
    )
    upstream = UpstreamLog(settings)
    app, api_key, usage = gateway_app(servers, settings, transport=upstream)
    # Idle connections are closed by the client, never by the gateway: a server closing one
    # just as a request is sent on it resets it (a ReadError). The gateway's keep-alive runs
    # on this event loop too: in one CI run the loop paused 6 s, the gateway's 5 s timer fired
    # as the loop came back, while the client, which had not yet seen its last answer end,
    # sent the next request on that connection.
    fresh = httpx.Limits(keepalive_expiry=2.0)
    async with (
        loop_watchdog(),  # a stalled loop (one CI run: 6 s) says where it was
        serve_on_loopback(app, keep_alive_timeout_s=DEADLINE_S) as url,
        httpx.AsyncClient(timeout=DEADLINE_S, limits=fresh) as http,
    ):
        yield Harness(Client(http, url, api_key), app.state.gateway.engines, upstream, usage)


@dataclass
class Long:
    """A long request, in flight on the engine at ``url``."""

    url: str
    streamed: bool
    task: asyncio.Task[Outcome]
    first_chunk: asyncio.Event


async def _send_long(harness: Harness, streamed: bool) -> Long:
    """Send a long request; once the gateway sent it on, where to."""
    prompt, first_chunk = f"long, sent at {time.monotonic()}", asyncio.Event()
    send = harness.client.send(streamed, LONG, prompt=prompt, first_chunk=first_chunk)
    task = asyncio.create_task(send)
    sent = harness.upstream.first_sent
    await harness.until("a long request sent on", lambda: prompt in sent or task.done())
    assert not task.done(), task.result()
    return Long(sent[prompt], streamed, task, first_chunk)


@dataclass
class Run:
    """What happened around one stop."""

    stopped_at: float
    ejected_at: float
    long: dict[tuple[str, bool], Outcome]
    """The long requests by (URL of the engine first sent to, streamed)."""
    steady: list[Outcome]
    records: dict[str, UsageRecord]
    """Usage records by request id."""
    health: list[EndpointHealth]

    def served_by(self, outcome: Outcome) -> str | None:
        return self.records[outcome.request_id].endpoint


@dataclass
class Series:
    """Two clients sending short requests, streamed and plain in turn, until halted."""

    client: Client
    halt: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._run(streamed)) for streamed in (True, False)]

    async def stop(self) -> None:
        self.halt.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), DEADLINE_S)

    async def _run(self, streamed: bool) -> None:
        while not self.halt.is_set():
            await self.client.send(streamed, SHORT)
            streamed = not streamed


async def _stop_mid_run(stop: Stop, victim: VllmServer, survivor: VllmServer) -> Run:
    """Stop the victim while long requests run on both replicas and a series of short ones
    goes on."""
    async with _gateway([victim, survivor]) as harness:
        engines, client = harness.engines, harness.client
        await _warm_up(harness)
        # Round-robin alternates: a long stream, then a long plain request, on each replica.
        sent = [await _send_long(harness, streamed) for streamed in (True, True, False, False)]
        long = {(r.url, r.streamed): r for r in sent}
        expected = {(s.url, streamed) for s in (victim, survivor) for streamed in (True, False)}
        assert long.keys() == expected, sent
        series = Series(client.sibling())
        series.start()
        await asyncio.wait_for(long[victim.url, True].first_chunk.wait(), DEADLINE_S)
        await harness.until("both series sending", lambda: len(series.client.outcomes) >= 2)
        assert engines.ejections(VICTIM) == engines.ejections(SURVIVOR) == 0
        on_victim = [long[victim.url, streamed].task for streamed in (True, False)]
        assert not any(task.done() for task in on_victim), "the victim answered before the stop"

        stopped_at = time.monotonic()
        stop.send(victim)
        ejected_at = await harness.until("the ejection", lambda: engines.ejections(VICTIM) > 0)

        def answered_since_ejection() -> int:
            outcomes = series.client.outcomes
            return sum(ejected_at < o.sent_at < o.ended_at < math.inf for o in outcomes)

        await harness.until("six answers sent after it", lambda: answered_since_ejection() >= 6)
        await series.stop()
        await asyncio.wait_for(asyncio.gather(*(r.task for r in sent)), DEADLINE_S)
        steady = series.client.outcomes
        metered = await usage_records(harness.usage, len(client.outcomes) + len(steady))
        return Run(
            stopped_at,
            ejected_at,
            {key: r.task.result() for key, r in long.items()},
            steady,
            {record.request_id: record for record in metered},
            engines.health_report(),
        )


async def _warm_up(harness: Harness) -> None:
    """Once both replicas were scraped, one request each: a fresh vLLM's first answer takes
    seconds."""

    def scraped() -> bool:
        loads = harness.engines.loads()
        return all(e in loads and loads[e].age_s < 5 for e in (VICTIM, SURVIVOR))

    await harness.until("a scrape of both replicas", scraped)
    for _ in range(2):
        assert (await harness.client.send(False, SHORT)).whole


@pytest.mark.parametrize("stop", STOPS, ids=[stop.name for stop in STOPS])
async def test_a_replica_stopped_mid_run_costs_no_request_sent_after_it(
    stop: Stop, victim: VllmServer, vllm_server: VllmServer
) -> None:
    run = await _stop_mid_run(stop, victim, vllm_server)

    print(f"\n{stop.name}: ejected {run.ejected_at - run.stopped_at:.3f} s after the signal")
    for (url, _streamed), outcome in run.long.items():
        ended = outcome.ended_at - run.stopped_at
        print(f"  long request sent to {url}: {outcome}, ended {ended:+.3f} s after the signal")
    # The victim was ejected; every request sent after the stop was answered whole by the
    # survivor.
    ejected = [(h.endpoint, h.ejections > 0) for h in run.health]
    assert ejected == [(VICTIM, True), (SURVIVOR, False)]
    after = [o for o in run.steady if o.sent_at > run.stopped_at]
    failed = [o for o in after if not o.whole or run.served_by(o) != vllm_server.url]
    assert failed == [], f"stopped at {run.stopped_at}"
    # In flight at the stop, short ones: answered whole, cut with the error event, or at worst
    # refused with a retryable OpenAI error (nothing more is promised for them; a short stream
    # sent 50 ms before a group SIGTERM once got a 503 when its retry met a connection error).
    in_flight = [o for o in run.steady if o.sent_at <= run.stopped_at]
    failed = [
        o for o in in_flight if not (o.whole or o.cut_with_error_event or o.refused_retryably)
    ]
    assert failed == [], f"stopped at {run.stopped_at}"
    # The long ones: a plain request the victim had moved to the survivor; a stream it had
    # sent a first chunk of ended with an error event.
    plain = [run.long[server.url, False] for server in (victim, vllm_server)]
    assert all(o.whole and run.served_by(o) == vllm_server.url for o in plain), plain
    assert run.long[vllm_server.url, True].whole, run.long[vllm_server.url, True]
    cut = run.long[victim.url, True]
    assert cut.cut_with_error_event and run.served_by(cut) == victim.url, cut
    assert run.records[cut.request_id].status == 502
