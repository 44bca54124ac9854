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
their times and outcomes are printed, with the medians. Run it with another checkout's
``platform`` on PYTHONPATH to compare code (there both build).
"""

from __future__ import annotations

import argparse
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

from pydantic import SecretStr
from sqlalchemy import insert, select

from trunkline.apps.publishing import check_published
from trunkline.apps.runtime import Runtime, build_runtime
from trunkline.auth.principal import Principal
from trunkline.bench.servers import start_postgres, start_redis
from trunkline.keys.schemas import ApiKeyCreate
from trunkline.keys.service import create_key
from trunkline.kit.migrate import upgrade
from trunkline.kit.shards import key_shard
from trunkline.models import ApiKey, Project, Tenant
from trunkline.settings import DatabaseSettings, RedisSettings, SecuritySettings, Settings
from trunkline.tenancy.changes import unit_of_work
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
    parser.add_argument("--db", nargs="+", default=["sqlite", "postgresql"])
    args = parser.parse_args()
    for kind in args.db:
        measure(kind, args.keys, args.changes)


def measure(kind: str, keys: int, changes: int) -> None:
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
            for runtime in (a, recorded, built):
                runtime.close()
        finally:
            server.destroy()


if __name__ == "__main__":
    main()
