"""``trunkline up``: control plane, gateway, simulated engines and usage ingest in one process.

SQLite, in-memory snapshot store and usage stream; nothing to install. The same
services and apps as production, wired to the embedded implementations.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import make_url, select

from trunkline.apps import serving
from trunkline.apps.controlplane import create_controlplane_app
from trunkline.apps.embedded_lock import only_instance
from trunkline.apps.gateway import create_gateway_app, routing_policy
from trunkline.apps.publishing import THOROUGH_EVERY, republish_if_stale
from trunkline.apps.runtime import Runtime, build_runtime
from trunkline.auth.principal import Principal
from trunkline.engines import EngineSpec, SimulatedEngines
from trunkline.errors import ConfigurationError
from trunkline.keys.schemas import ApiKeyCreate
from trunkline.keys.service import create_key
from trunkline.kit.db import transaction
from trunkline.kit.migrate import database_name, upgrade
from trunkline.kit.scrape_access import loopback
from trunkline.metering.stream import InMemoryUsageStream
from trunkline.models import ApiKey, Project, Tenant
from trunkline.pools.service import set_pool_endpoints
from trunkline.quota.memory import InMemoryQuotaStore
from trunkline.settings import Settings
from trunkline.tenancy.manifests import Manifests, apply_manifests, load_manifests
from trunkline.worker.inprocess import drain as drain_jobs
from trunkline.worker.inprocess import run_jobs
from trunkline.worker.jobs import JobContext, JobSettings, load_job_settings

log = logging.getLogger(__name__)

DEMO_TENANT = "acme"
DEMO_PROJECT = "demo"


@dataclass(frozen=True)
class DemoKey:
    key_id: str
    plaintext: str


async def run_embedded(
    settings: Settings,
    tenants_dir: Path,
    *,
    time_scale: float = 1.0,
    ready: asyncio.Event | None = None,
) -> None:
    refuse_outside_development(settings)
    with only_instance(settings.database.url):  # before anything touches the database
        runtime = build_runtime(settings)
        try:
            await _run(runtime, tenants_dir, time_scale, ready)
        finally:
            runtime.close()


def refuse_outside_development(settings: Settings) -> None:
    """Stop ``trunkline up`` before it touches a database it was not meant for: it applies
    ``tenants/`` (the example tenants), points the simulated pools at its loopback engines and
    keeps a demo key's plaintext on disk. With production's settings (PostgreSQL, Redis) it
    did all that to the production database, published it to the gateways, and then failed."""
    problems = []
    if settings.is_production:
        problems.append(
            "it does not run with TRUNKLINE_ENVIRONMENT=production (run the production "
            "processes: trunkline controlplane, gateway, worker)"
        )
    if settings.redis.url:
        problems.append("its stores are in memory: unset TRUNKLINE_REDIS__URL")
    if problems:
        raise ConfigurationError("trunkline up is the development platform: " + "; ".join(problems))


async def _run(
    runtime: Runtime, tenants_dir: Path, time_scale: float, ready: asyncio.Event | None
) -> None:
    settings = runtime.settings
    routing_policy(settings.gateway.routing_policy)  # a bad profile stops it before any change
    manifests = load_manifests(tenants_dir)  # a mistake in them stops it before any database
    await asyncio.to_thread(upgrade, settings.database.url)
    report = await asyncio.to_thread(apply_manifests, runtime.session_factory, manifests)
    log.info("manifests applied", extra={"changes": len(report.changes)})
    stream = InMemoryUsageStream(claim_idle_s=1.0)
    stop = asyncio.Event()
    serving.install_stop_signals(stop)
    async with SimulatedEngines(_engine_specs(manifests, time_scale)) as engines:
        await asyncio.to_thread(_register_engines, runtime, manifests, engines.urls)
        runtime.publish()
        demo = await asyncio.to_thread(ensure_demo_key, runtime, Path(settings.state_dir))
        assert runtime.memory_store is not None
        quotas = InMemoryQuotaStore()  # the gateway counts, the control plane reads back
        gateway = create_gateway_app(
            source=runtime.memory_store,
            emitter=stream,
            server_secret=runtime.server_secret,
            previous_secrets=runtime.previous_secrets,
            settings=settings.gateway,
            quota_store=quotas,
        )
        servers = [
            serving.server(
                create_controlplane_app(runtime, quota_store=quotas),
                settings.controlplane.host,
                settings.controlplane.port,
                header_timeout_s=settings.controlplane.header_timeout_s,
                keep_alive_timeout_s=settings.controlplane.keep_alive_timeout_s,
                name=serving.CONTROL_PLANE,
                drain_s=settings.controlplane.drain_timeout_s,  # Ctrl-C ends a long export
            ),
            serving.server(
                gateway,
                settings.gateway.host,
                settings.gateway.port,
                header_timeout_s=settings.gateway.header_timeout_s,
                keep_alive_timeout_s=settings.gateway.keep_alive_timeout_s,
                name=serving.GATEWAY,
                drain_s=settings.gateway.drain_timeout_s,  # Ctrl-C ends a long stream, metered
            ),
        ]
        tasks = [asyncio.create_task(s.serve()) for s in servers]
        jobs = _job_context(runtime, stream)
        ingest = asyncio.create_task(run_jobs(jobs))
        follow = asyncio.create_task(_follow_database(runtime))
        try:
            await serving.wait_started(servers, tasks)
            print(banner(settings, demo, engines.urls), flush=True)
            if ready is not None:
                ready.set()
            await _until_stopped(stop, tasks)
        finally:
            drain_s = max(settings.gateway.drain_timeout_s, settings.controlplane.drain_timeout_s)
            serving.stop(servers, drain_s)
            await asyncio.gather(*tasks, return_exceptions=True)
            for task in (ingest, follow):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await asyncio.to_thread(drain_jobs, jobs)
    print("Trunkline stopped.", flush=True)


async def _until_stopped(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()


def _engine_specs(manifests: Manifests, time_scale: float) -> list[EngineSpec]:
    specs = []
    for pool in manifests.pools:
        if pool.simulated is None:
            continue
        for replica in range(pool.simulated.replicas):
            specs.append(
                EngineSpec(pool.model, pool.simulated.profile, seed=replica, time_scale=time_scale)
            )
    return specs


def _register_engines(runtime: Runtime, manifests: Manifests, urls: list[str]) -> None:
    remaining = iter(urls)
    with transaction(runtime.session_factory) as session:
        for pool in manifests.pools:
            if pool.simulated is not None:
                mine = [next(remaining) for _ in range(pool.simulated.replicas)]
                set_pool_endpoints(session, pool.name, mine)


async def _follow_database(runtime: Runtime, every_s: float = 1.0) -> None:
    """Republish when the database changed behind our back (e.g. ``trunkline keys revoke``
    run in another shell): the in-memory snapshot store has no other way to hear of it."""
    for count in itertools.count(1):
        await asyncio.sleep(every_s)
        thorough = count % THOROUGH_EVERY == 0
        try:
            if await asyncio.to_thread(republish_if_stale, runtime, thorough=thorough):
                log.info("configuration changed in the database; snapshot republished")
        except Exception:
            log.exception("could not check the database for configuration changes")


def _job_context(runtime: Runtime, stream: InMemoryUsageStream) -> JobContext:
    """The worker's jobs (ingest, rollups, closing periods) over the in-memory stream."""
    return JobContext(runtime.session_factory, lambda: stream, embedded_job_settings())


def embedded_job_settings() -> JobSettings:
    """``TRUNKLINE_JOBS__*`` as the worker reads them (a month's close grace, an export
    directory, the clock skew allowed), with ingest and rollups more often than the worker's
    defaults unless set: a demo shows its usage within seconds."""
    jobs = load_job_settings()
    faster = {"ingest_interval_s": 0.5, "rollup_interval_s": 5.0}
    return jobs.model_copy(
        update={k: v for k, v in faster.items() if k not in jobs.model_fields_set}
    )


def ensure_demo_key(runtime: Runtime, state_dir: Path) -> DemoKey | None:
    """The demo developer key of tenant ``acme``: reused while it is valid, else made anew.

    Development only: the plaintext is kept in the state directory (mode 0600) so a
    restarted demo can print it again; production never stores a plaintext key.
    """
    path = state_dir / "demo-api-key"
    with transaction(runtime.session_factory) as session:
        tenant = session.scalar(select(Tenant).where(Tenant.slug == DEMO_TENANT))
        if tenant is None:
            return None
        if path.exists():
            plaintext = path.read_text().strip()
            key_id = plaintext.split("_")[1] if plaintext.count("_") == 2 else ""
            row = session.scalar(select(ApiKey).where(ApiKey.key_id == key_id))
            if row is not None and row.revoked_at is None and row.expires_at is None:
                return DemoKey(key_id, plaintext)
        project = session.scalar(
            select(Project).where(Project.tenant_id == tenant.id, Project.name == DEMO_PROJECT)
        )
        if project is None:
            return None
        created = create_key(
            session,
            Principal.system(),
            runtime.server_secret,
            tenant.id,
            ApiKeyCreate(project_id=project.id, name="demo key (trunkline up)"),
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(created.secret + "\n")
    runtime.publish()
    return DemoKey(created.key.key_id, created.secret)


def _scrape_note(settings: Settings) -> str:
    """How to read the metrics: nothing on loopback, else the scrape tokens (never shown)."""
    gateway, controlplane = settings.gateway, settings.controlplane
    if loopback(gateway.host) and loopback(controlplane.host):
        return ""
    indent = "\n" + " " * 24
    return (
        f"{indent}(off loopback: send Authorization: Bearer <token>, the token of"
        f"{indent}TRUNKLINE_GATEWAY__METRICS_TOKEN / TRUNKLINE_CONTROLPLANE__METRICS_TOKEN)"
    )


def banner(settings: Settings, demo: DemoKey | None, engine_urls: list[str]) -> str:
    gw_root = serving.base_url(settings.gateway.host, settings.gateway.port)
    gw = f"{gw_root}/v1"
    cp = serving.base_url(settings.controlplane.host, settings.controlplane.port)
    scrape = _scrape_note(settings)
    key = demo.plaintext if demo else "<create one: trunkline keys create --tenant … --project …>"
    url = settings.database.url  # its password is not printed
    database = "SQLite" if make_url(url).get_backend_name() == "sqlite" else "PostgreSQL"
    return f"""
Trunkline is up (embedded: {database} at {database_name(url)}, in-memory stores,
{len(engine_urls)} simulated vLLM engines).

  gateway (OpenAI API)  {gw}
  control plane API     {cp}/api/v1   (OpenAPI: {cp}/schema)
  metrics (Prometheus)  {gw_root}/metrics, {cp}/metrics{scrape}

Paste these lines into a shell (in this directory) to point any OpenAI client at Trunkline;
the venv has the trunkline command and the openai client:

  . .venv/bin/activate
  export OPENAI_BASE_URL={gw}
  export OPENAI_API_KEY={key}

Then try:

  curl -s $OPENAI_BASE_URL/chat/completions -H "Authorization: Bearer $OPENAI_API_KEY" \\
       -H 'content-type: application/json' \\
       -d '{{"model": "llama-3.1-8b", "messages": [{{"role": "user", "content": "hello"}}]}}'

  python -c 'from openai import OpenAI; c = OpenAI(); \\
  print(c.chat.completions.create(model="llama-3.1-8b", \\
  messages=[{{"role": "user", "content": "hello"}}]).usage)'

Manage tenants and keys: trunkline tenants --help, trunkline keys --help.
The control plane API wants a token: trunkline tenants admin-token --email you@example.com
prints one for a platform admin (send it as Authorization: Bearer tlu_…).
Press Ctrl-C to stop.
"""
