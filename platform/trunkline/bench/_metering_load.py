"""Synthetic tenants and usage for ``trunkline bench metering``: the world written to the
database, deterministic usage events, the one-row-per-request baseline writer, and a month of
ledger rows made in SQL for the export measurement."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from trunkline.bench.servers import PostgresCluster
from trunkline.metering.schemas import UsageRecord

MODELS = (("llama-3.1-8b-instruct", "llama-3.1-8b"), ("bge-small-en", "bge-small"))
TIERS = (("gold", 100, 500), ("silver", 50, 2000), ("bronze", 10, 10000))
POOLS = {"llama-3.1-8b-instruct": ("h100-eu-west", "h100"), "bge-small-en": ("embed-eu", "l40s")}


@dataclass(frozen=True)
class Universe:
    """Tenants (with tier), their projects and keys; serialisable for child processes."""

    tenants: list[tuple[str, str, str]]
    """(id, slug, tier)"""
    keys: list[tuple[str, str, str, str]]
    """(tenant id, project id, key id, tier)"""
    projects: list[tuple[str, str, str]]
    """(tenant id, project id, name)"""

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: Path) -> Universe:
        data = json.loads(path.read_text())
        return cls(
            [tuple(t) for t in data["tenants"]],
            [tuple(k) for k in data["keys"]],
            [tuple(p) for p in data["projects"]],
        )


def make_universe(tenants: int = 20, projects: int = 3, keys: int = 2, seed: int = 1) -> Universe:
    rng = random.Random(seed)
    out_tenants, out_projects, out_keys = [], [], []
    for t in range(tenants):
        tenant_id, tier = str(uuid.UUID(int=rng.getrandbits(128))), TIERS[t % 3][0]
        out_tenants.append((tenant_id, f"tenant-{t:02d}", tier))
        for p in range(projects):
            project_id = str(uuid.UUID(int=rng.getrandbits(128)))
            out_projects.append((tenant_id, project_id, f"project-{p}"))
            for k in range(keys):
                out_keys.append((tenant_id, project_id, f"k{t:02d}{p}{k}".ljust(12, "x"), tier))
    return Universe(out_tenants, out_keys, out_projects)


def seed_world(dsn: str, universe: Universe) -> None:
    """Tiers, tenants, projects and keys (so the ledger's key updates find their rows)."""
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        tier_ids = {}
        for name, priority, slo in TIERS:
            tier_ids[name] = uuid.uuid4()
            cur.execute(
                "INSERT INTO tiers (id, name, description, priority, ttft_slo_ms, itl_slo_ms,"
                " may_use_burst, created_at) VALUES (%s, %s, '', %s, %s, NULL, false, now())",
                (tier_ids[name], name, priority, slo),
            )
        cur.executemany(
            "INSERT INTO tenants (id, slug, name, tier_id, regions, created_at)"
            " VALUES (%s, %s, %s, %s, '[]', now())",
            [(t, slug, slug.title(), tier_ids[tier]) for t, slug, tier in universe.tenants],
        )
        cur.executemany(
            "INSERT INTO projects (id, tenant_id, name, description, created_at)"
            " VALUES (%s, %s, %s, '', now())",
            [(p, t, name) for t, p, name in universe.projects],
        )
        cur.executemany(
            "INSERT INTO api_keys (id, key_id, secret_hash, tenant_id, project_id, name,"
            " created_at) VALUES (%s, %s, '', %s, %s, %s, now())",
            [(uuid.uuid4(), k, t, p, f"key {k}") for t, p, k, _tier in universe.keys],
        )


def records(universe: Universe, count: int, prefix: str, seed: int) -> list[UsageRecord]:
    """``count`` events spread over the keys: streamed, cancelled and failed ones included."""
    rng = random.Random(seed)
    now = time.time()
    out = []
    for i in range(count):
        tenant, project, key, tier = universe.keys[i % len(universe.keys)]
        model, alias = MODELS[0] if i % 5 else MODELS[1]
        pool, accelerator = POOLS[model]
        prompt = rng.randint(50, 2000)
        roll = rng.random()
        status = 200 if roll < 0.97 else (499 if roll < 0.99 else 502)
        out.append(
            UsageRecord(
                request_id=f"{prefix}-{i:09d}",
                tenant_id=tenant,
                project_id=project,
                key_id=key,
                alias=alias,
                model=model,
                endpoint_kind="chat",
                tier=tier,
                stream=roll < 0.7,
                status=status,
                error_code=None if status == 200 else "client_closed",
                pool=pool,
                endpoint="http://engine-0",
                region="eu-west",
                accelerator=accelerator,
                prompt_tokens=prompt,
                cached_tokens=rng.randint(0, prompt // 2),
                completion_tokens=rng.randint(1, 400),
                ttft_ms=rng.uniform(30, 3000),
                latency_ms=rng.uniform(100, 9000),
                started_at=now - rng.uniform(0, 3600),
            )
        )
    return out


_BASELINE_INSERT = (
    "INSERT INTO usage_events (request_id, tenant_id, project_id, api_key_id, alias, model,"
    " endpoint_kind, tier, stream, status, error_code, pool, endpoint, region, accelerator,"
    " prompt_tokens, cached_tokens, completion_tokens, ttft_ms, latency_ms, started_at,"
    " ttft_slo_ms)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
    " to_timestamp(%s), %s) ON CONFLICT DO NOTHING"
)


def write_one_row_per_request(dsn: str, events: list[UsageRecord], writers: int) -> float:
    """The baseline: each request writes its own row and commits, from ``writers``
    concurrent connections (as gateway workers would); returns the seconds it took."""
    import msgspec

    chunks = [events[i::writers] for i in range(writers)]
    errors: list[BaseException] = []

    def write(chunk: list[UsageRecord]) -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                for event in chunk:
                    conn.execute(_BASELINE_INSERT, msgspec.structs.astuple(event))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(chunk,)) for chunk in chunks]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started


def fill_month(dsn: str, universe: Universe, events: int, month_start: float) -> None:
    """``events`` ledger rows spread over 30 days from ``month_start`` (made in SQL: this
    measures exports, not ingest), each tenant-hour marked for rollup."""
    combos = [
        (i, t, p, k, tier, model, alias, *POOLS[model])
        for i, ((t, p, k, tier), (model, alias)) in enumerate(
            (key, m) for key in universe.keys for m in MODELS
        )
    ]
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE combos (idx int, tenant_id uuid, project_id uuid, key_id text,"
            " tier text, model text, alias text, pool text, accelerator text)"
        )
        cur.executemany("INSERT INTO combos VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", combos)
        cur.execute(
            """
            INSERT INTO usage_events (request_id, tenant_id, project_id, api_key_id, alias, model,
                endpoint_kind, tier, stream, status, error_code, pool, endpoint, region,
                accelerator, prompt_tokens, cached_tokens, completion_tokens, ttft_ms,
                latency_ms, started_at)
            SELECT 'month-' || i, c.tenant_id, c.project_id, c.key_id, c.alias, c.model, 'chat',
                c.tier, mod(i, 3) <> 0,
                CASE WHEN mod(i, 100) = 0 THEN 502 WHEN mod(i, 50) = 1 THEN 499 ELSE 200 END, NULL,
                c.pool, 'http://engine-0', 'eu-west', c.accelerator,
                200 + mod(i * 7919, 1800), mod(i * 7919, 1800) / 3, 20 + mod(i * 104729, 480),
                50 + mod(i * 31, 1500), 1000,
                to_timestamp(%(start)s + (i::float8 / %(n)s) * 30 * 86400)
            FROM generate_series(0::bigint, %(n)s - 1) AS i
            JOIN combos AS c ON c.idx = mod(i * 37, %(combos)s)
            """,
            {"start": month_start, "n": events, "combos": len(combos)},
        )
        cur.execute(
            "INSERT INTO usage_rollup_watermarks (tenant_id, hour, changed_seq, rolled_seq)"
            " SELECT DISTINCT tenant_id, date_trunc('hour', started_at, 'UTC'), 1, 0"
            " FROM usage_events WHERE request_id LIKE 'month-%%'"
        )


def prepare_database(pg: PostgresCluster, name: str, universe: Universe) -> str:
    """A new database, migrated, with the universe's tenants, projects and keys."""
    from trunkline.kit.migrate import upgrade

    url = pg.create_database(name)
    upgrade(url)
    seed_world(pg.dsn(name), universe)
    return url
