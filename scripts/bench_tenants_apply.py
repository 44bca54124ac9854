"""Queries and time of `trunkline tenants apply` for a manifest of many tenants.

    PYTHONPATH=platform python scripts/bench_tenants_apply.py --tenants 1000 5000 \
        --db sqlite postgresql

For each database and size: a first apply into a migrated, empty database, a re-apply with
nothing changed, and one with 1 % of the tenants changed (name, entitlements, a project, a
member). Counts every statement the apply sends (``before_cursor_execute``) and its wall time.
Run it with another checkout's ``platform`` on PYTHONPATH to compare code.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from trunkline.bench.servers import start_postgres
from trunkline.kit.db import make_engine, make_sessionmaker
from trunkline.kit.migrate import upgrade
from trunkline.tenancy.changes import count_config_changes
from trunkline.tenancy.manifests import apply_manifests, load_manifests

REPO = Path(__file__).resolve().parents[1]
TIERS = ("gold", "silver", "bronze")


def tenant_document(n: int, changed: bool) -> str:
    models = "[llama-3.1-8b]" if changed else "[llama-3.1-8b, bge-small]"
    extra_project = "\n  - name: added" if changed else ""
    extra_member = f"\n  - {{email: new-{n}@t.example, role: developer}}" if changed else ""
    quota = "\nquota: {tenant: {requests_per_minute: 100}}" if n % 2 == 0 else ""
    return (
        f"kind: Tenant\nslug: t{n:05d}\nname: Tenant {n}{' (renamed)' if changed else ''}\n"
        f"tier: {TIERS[n % 3]}\nmodels: {models}\n"
        f"projects:\n  - name: main{extra_project}\n"
        f"members:\n  - {{email: admin-{n}@t.example, role: tenant_admin}}\n"
        f"  - {{email: dev-{n}@t.example, role: developer}}{extra_member}{quota}\n"
    )


def write_manifests(directory: Path, tenants: int, changed_every: int | None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("tiers.yaml", "catalog.yaml"):
        shutil.copy(REPO / "tenants" / name, directory / name)
    documents = [
        tenant_document(n, changed_every is not None and n % changed_every == 0)
        for n in range(tenants)
    ]
    (directory / "tenants.yaml").write_text("---\n".join(documents))
    return directory


def measure(factory: sessionmaker[Session], path: Path) -> tuple[int, float, int]:
    manifests = load_manifests(path)
    statements = 0

    def count(*_args: Any) -> None:
        nonlocal statements
        statements += 1

    engine = factory.kw["bind"]
    event.listen(engine, "before_cursor_execute", count)
    try:
        started = time.perf_counter()
        report = apply_manifests(factory, manifests)
        elapsed = time.perf_counter() - started
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return statements, elapsed, len(report.changes)


@contextlib.contextmanager
def database(kind: str, work: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{work / 'bench.db'}"
        return
    cluster = start_postgres(durable=False)  # its own directory, which postgres may enter
    try:
        yield cluster.create_database("bench")
    finally:
        cluster.destroy()


def run(kind: str, tenants: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, database(kind, Path(tmp)) as url:
        upgrade(url)
        engine = make_engine(url)
        factory = make_sessionmaker(engine)
        count_config_changes(factory)  # as the CLI's runtime does
        same = write_manifests(Path(tmp) / "same", tenants, None)
        some = write_manifests(Path(tmp) / "some", tenants, 100)
        for label, path in (("first", same), ("unchanged", same), ("1% changed", some)):
            statements, elapsed, changes = measure(factory, path)
            print(
                f"{kind:10} {tenants:5} tenants  {label:10}  {statements:6} statements"
                f"  {elapsed:6.2f} s  {changes} changes",
                flush=True,
            )
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, nargs="+", default=[1000])
    parser.add_argument("--db", nargs="+", default=["sqlite", "postgresql"])
    args = parser.parse_args()
    for kind in args.db:
        for tenants in args.tenants:
            run(kind, tenants)


if __name__ == "__main__":
    main()
