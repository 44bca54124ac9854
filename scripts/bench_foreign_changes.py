"""What a change made through one control plane costs another's periodic check (HA: two or
more behind a load balancer, one database, one Redis).

    PYTHONPATH=platform python scripts/bench_foreign_changes.py --keys 40000 --changes 10 \
        --db sqlite postgresql

For each database: the example tenants (``tenants/``) with ``--keys`` keys inserted, control
plane A publishing to a Redis of its own, and two others on the same database and store, each
published at its start as every control plane is: ``recorded`` reads what the store says its
version was built from, ``built`` does not (what a store written by the code before holds, so
its check builds the whole snapshot, as every check after a foreign change did before). After
each change through A (a key created, every third a tenant's tier changed) both check, and
their times and outcomes are printed, with the medians. Then ``--rounds`` times two key
changes at once, through A and a third control plane C, C's patch stored first (the store's
record stops before A's change), and three through A alone: how often ``recorded`` builds, and
a gateway's refresh after its first check (``out_of_order``). Run it with another checkout's
``platform`` on PYTHONPATH to compare code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import secrets
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from pydantic import SecretStr
from sqlalchemy import insert, select

from trunkline.apps import publishing
from trunkline.apps.publishing import check_published
from trunkline.apps.runtime import Runtime, build_runtime
from trunkline.auth.principal import Principal
from trunkline.bench.servers import start_postgres, start_redis
from trunkline.gateway.state import SnapshotHolder
from trunkline.keys.schemas import ApiKeyCreate
from trunkline.keys.service import create_key
from trunkline.kit.migrate import upgrade
from trunkline.kit.shards import key_shard
from trunkline.models import ApiKey, Project, Tenant
from trunkline.settings import DatabaseSettings, RedisSettings, SecuritySettings, Settings
from trunkline.snapshot import RedisSnapshotSource
from trunkline.tenancy.changes import Change, unit_of_work
from trunkline.tenancy.manifests import apply_manifests
from trunkline.tenancy.schemas import TenantUpdate
from trunkline.tenancy.service import update_tenant

REPO = Path(__file__).resolve().parents[1]
SYSTEM = Principal.system()


class NotRecorded:
    """The store, saying nothing of what its version was built from."""

    def __init__(self, publisher: Any) -> None:
        self._publisher = publisher

    def built_from(self) -> None:
        return None

    def vouch(self, *_args: Any) -> bool:
        return False  # nor says it after a check found it holding the database's state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._publisher, name)


@contextlib.contextmanager
def database(kind: str, work: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{work / 'bench.db'}"
        return
    cluster = start_postgres(durable=False)
    try:
        yield cluster.create_database("bench")
    finally:
        cluster.destroy()


def insert_keys(runtime: Runtime, count: int) -> tuple[uuid.UUID, uuid.UUID]:
    """``count`` keys over the example tenants' projects; one project to create more in."""
    with runtime.session_factory() as session, session.begin():
        projects = session.execute(select(Project.id, Project.tenant_id)).all()
        rows = []
        for n in range(count):
            project, tenant = projects[n % len(projects)]
            key_id = secrets.token_hex(8)
            rows.append(
                {"key_id": key_id, "secret_hash": secrets.token_hex(32), "tenant_id": tenant,
                 "project_id": project, "name": f"bulk-{n}", "shard": key_shard(key_id)}
            )  # fmt: skip
        for start in range(0, count, 5000):
            session.execute(insert(ApiKey), rows[start : start + 5000])
        acme = session.scalar(select(Tenant.id).where(Tenant.slug == "acme"))
        demo = session.scalar(select(Project.id).where(Project.tenant_id == acme))
    assert acme is not None and demo is not None
    return acme, demo


def change(a: Runtime, n: int, tenant: uuid.UUID, project: uuid.UUID) -> str:
    with unit_of_work(a.session_factory, a.publish) as session:
        if n % 3 == 2:
            tier = ("silver", "gold")[n % 2]
            update_tenant(session, tenant, TenantUpdate(tier=tier))
            return f"tier {tier}"
        data = ApiKeyCreate(project_id=project, name=f"k{n}")
        create_key(session, SYSTEM, a.server_secret, tenant, data)
        return "key"


def timed_check(runtime: Runtime) -> tuple[float, str]:
    started = time.perf_counter()
    outcome = check_published(runtime)
    return time.perf_counter() - started, outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=40_000)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--db", nargs="+", default=["sqlite", "postgresql"])
    args = parser.parse_args()
    for kind in args.db:
        measure(kind, args.keys, args.changes, args.rounds)


def measure(kind: str, keys: int, changes: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp)) as url:
        server = start_redis(Path(tmp))
        try:
            settings = Settings(
                state_dir=Path(tmp) / "state",
                database=DatabaseSettings(url=url),
                redis=RedisSettings(url=server.url, key_prefix="bench"),
                security=SecuritySettings(key_hash_secret=SecretStr("bench-" + "0" * 40)),
            )
            upgrade(url)
            a = build_runtime(settings)
            apply_manifests(a.session_factory, REPO / "tenants", publish=a.publish)
            tenant, project = insert_keys(a, keys)
            a.publish()
            recorded = build_runtime(settings)
            built = build_runtime(settings)
            built = dataclasses.replace(built, publisher=NotRecorded(built.publisher))
            for runtime in (recorded, built):
                runtime.publish()  # at its start
            rows: dict[str, list[float]] = {"recorded": [], "built": []}
            for n in range(changes):
                what = change(a, n, tenant, project)
                line = [f"{kind:10} {keys:6} keys  change {n + 1:2} ({what:11})"]
                for label, runtime in (("built", built), ("recorded", recorded)):
                    seconds, outcome = timed_check(runtime)
                    rows[label].append(seconds)
                    line.append(f"{label} {seconds * 1000:7.1f} ms {outcome:9}")
                print("  ".join(line), flush=True)
            print(
                f"{kind:10} {keys:6} keys  median check after a change: "
                f"built {statistics.median(rows['built']) * 1000:.1f} ms, "
                f"recorded {statistics.median(rows['recorded']) * 1000:.1f} ms",
                flush=True,
            )
            out_of_order(kind, settings, a, recorded, (tenant, project), rounds)
            for runtime in (a, recorded, built):
                runtime.close()
        finally:
            server.destroy()


def out_of_order(
    kind: str,
    settings: Settings,
    a: Runtime,
    b: Runtime,
    where: tuple[uuid.UUID, uuid.UUID],
    rounds: int,
) -> None:
    """``rounds`` times: A and a third control plane C each create a key at once, C's patch
    stored before A's (ordinary under concurrent key traffic: the store's record stops before
    A's change), B and A check; then three keys through A alone, B checking after each. B's
    builds are counted, and a gateway's refresh after B's first check timed (when B records
    the state, the version moves with no part changed)."""
    c = build_runtime(settings)
    c.publish()  # at its start
    a.whole_every_s = c.whole_every_s = 3600.0  # key changes patched, as within 2 s of a build
    builds: list[int] = []
    counted = publishing.current_digest

    def counting(factory: Any, **kwargs: Any) -> bytes:
        if factory is b.session_factory:
            builds.append(1)
        return counted(factory, **kwargs)

    publishing.current_digest = counting  # type: ignore[assignment]
    gateway = Gateway(settings)
    first, after, refreshes = 0, 0, []
    try:
        for _ in range(rounds):
            deferred: list[Change] = []
            with unit_of_work(a.session_factory, deferred.append) as session:
                create_key(session, SYSTEM, a.server_secret, where[0], _data(where[1]))
            with unit_of_work(c.session_factory, c.publish) as session:
                create_key(session, SYSTEM, c.server_secret, where[0], _data(where[1]))
            a.publish(deferred[0])
            gateway.refresh()
            builds.clear()
            check_published(b)
            first += len(builds)
            refreshes.append(gateway.refresh())
            check_published(a)
            builds.clear()
            for n in range(3):
                change(a, 3 * n, *where)
                check_published(b)
            after += len(builds)
        print(
            f"{kind:10} patches out of order, {rounds} times: B's first check built {first} "
            f"times, its checks after the {3 * rounds} changes through A alone since {after} "
            f"times; a gateway's refresh after B's first check: {', '.join(refreshes)}",
            flush=True,
        )
    finally:
        publishing.current_digest = counted  # type: ignore[assignment]
        gateway.close()
        c.close()


def _data(project: uuid.UUID) -> ApiKeyCreate:
    return ApiKeyCreate(project_id=project, name="out-of-order")


class Gateway:
    """A gateway's snapshot holder, refreshed on one event loop of its own."""

    def __init__(self, settings: Settings) -> None:
        assert settings.redis.url is not None
        self._loop = asyncio.new_event_loop()
        self._client = aioredis.Redis.from_url(settings.redis.url)
        self._holder = SnapshotHolder(RedisSnapshotSource(self._client, settings.redis.key_prefix))
        self._loop.run_until_complete(self._holder.refresh())

    def refresh(self) -> str:
        """The time it took, and ``+`` when it loaded a new version (``-`` not)."""
        held = self._holder.current.version
        started = time.perf_counter()
        self._loop.run_until_complete(self._holder.refresh())
        took = (time.perf_counter() - started) * 1000
        return f"{took:.1f} ms" + ("+" if self._holder.current.version != held else "-")

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()


if __name__ == "__main__":
    main()
