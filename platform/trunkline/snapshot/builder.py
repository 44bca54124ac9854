"""Build a snapshot from the database and publish it (control plane side only)."""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from trunkline.auth.secrets import tenant_cache_salt
from trunkline.kit.text import URL_PATTERN, ZMQ_ADDRESS_PATTERN
from trunkline.models import (
    AcceleratorFlavor,
    ApiKey,
    Endpoint,
    Entitlement,
    Model,
    ModelAlias,
    Pool,
    Tenant,
    Tier,
)
from trunkline.pools.endpoint_schemas import engine_url
from trunkline.quota.book import build_quota_book
from trunkline.snapshot.key_shards import KEY_COLUMNS, key_entries
from trunkline.snapshot.parts import split, store_snapshot
from trunkline.snapshot.schemas import (
    AliasEntry,
    CascadeEntry,
    EndpointEntry,
    PoolEntry,
    Snapshot,
    TenantEntry,
    TierEntry,
)
from trunkline.snapshot.store import BuiltFrom, SnapshotPublisher, content_digest, part_digest

log = logging.getLogger(__name__)


def build_snapshot(
    session: Session, version: int, *, cache_secret: bytes, now: datetime | None = None
) -> Snapshot:
    """``cache_secret`` keys the tenants' cache salts (the server secret in every process);
    keys expired at ``now`` (default: the time it is) are left out."""
    tiers = {
        t.name: TierEntry(t.name, t.priority, t.ttft_slo_ms, t.itl_slo_ms, t.may_use_burst)
        for t in session.scalars(select(Tier))
    }
    tenants = _tenants(session, cache_secret)
    rows = session.execute(select(*KEY_COLUMNS).where(ApiKey.revoked_at.is_(None)))
    keys = key_entries(rows, datetime.now(UTC) if now is None else now)
    pools = _pools(session)
    aliases = _aliases(session, pools)
    quotas = build_quota_book(session, tenants, keys)
    return Snapshot(version, time.time(), tiers, tenants, keys, aliases, pools, quotas)


def _tenants(session: Session, cache_secret: bytes) -> dict[str, TenantEntry]:
    alias_names = {
        row.id: row.alias for row in session.execute(select(ModelAlias.id, ModelAlias.alias))
    }
    entitled: dict[str, set[str]] = defaultdict(set)
    for owner, alias_id in session.execute(select(Entitlement.tenant_id, Entitlement.alias_id)):
        entitled[str(owner)].add(alias_names[alias_id])
    tenants: dict[str, TenantEntry] = {}
    for t in session.scalars(select(Tenant)):
        tid = str(t.id)
        salt = tenant_cache_salt(cache_secret, tid) if t.cache_isolated else None
        tenants[tid] = TenantEntry(
            tid, t.slug, t.tier.name, tuple(t.regions), frozenset(entitled[tid]), salt
        )
    return tenants


def _aliases(session: Session, pools: Mapping[str, PoolEntry]) -> dict[str, AliasEntry]:
    models = {m.id: m for m in session.scalars(select(Model))}

    def served_by(model: Model, only: list[str] | None) -> tuple[str, ...]:
        names = (p.name for p in pools.values() if p.model == model.name)
        return tuple(sorted(n for n in names if only is None or n in only))

    aliases = {}
    for alias in session.scalars(select(ModelAlias)):
        model = models[alias.model_id]
        cascade = None
        if alias.escalate_model_id is not None:
            large = models[alias.escalate_model_id]
            checks = alias.cascade_checks or {}
            cascade = msgspec.convert(
                {
                    **checks,
                    "model": large.name,
                    "pools": served_by(large, None),
                    "context_length": large.context_length,
                },
                CascadeEntry,
            )
        aliases[alias.alias] = AliasEntry(
            alias.alias,
            model.name,
            model.kind,
            served_by(model, alias.pools),
            cascade,
            model.context_length,
            int(alias.created_at.timestamp()),
        )
    return aliases


_CONNECTABLE = re.compile(URL_PATTERN)
_SUBSCRIBABLE = re.compile(ZMQ_ADDRESS_PATTERN)


def _endpoint_entry(endpoint: Endpoint) -> EndpointEntry | None:
    """``endpoint`` as the gateways route to it; None, with a warning, when no client can
    connect to its URL, and without the KV-event addresses no subscriber can connect to. The
    API refuses such addresses; rows stored before it did (``http://host:99999``) made every
    gateway answer 500 to each request routed there, and its scraper log a traceback at every
    tick."""
    if not _CONNECTABLE.match(endpoint.url):
        log.warning(
            "endpoint %s of pool %s: its URL is not one a client can connect to; left out of "
            "the gateways' configuration until the pool's endpoints are set again",
            endpoint.id, endpoint.pool_id,
        )  # fmt: skip
        return None
    events, replay = endpoint.kv_events, endpoint.kv_replay
    if events is not None and not _SUBSCRIBABLE.match(events):
        log.warning(
            "endpoint %s of pool %s: its KV-event address is not one a subscriber can connect "
            "to; its KV events are not followed until the pool's endpoints are set again",
            endpoint.id, endpoint.pool_id,
        )  # fmt: skip
        events = replay = None
    if replay is not None and not _SUBSCRIBABLE.match(replay):
        replay = None
    return EndpointEntry(str(endpoint.id), engine_url(endpoint.url), events, replay)


def _pools(session: Session) -> dict[str, PoolEntry]:
    endpoints: dict[object, list[EndpointEntry]] = defaultdict(list)
    for e in session.scalars(select(Endpoint).where(Endpoint.enabled).order_by(Endpoint.url)):
        entry = _endpoint_entry(e)
        if entry is not None:
            endpoints[e.pool_id].append(entry)
    rows = session.execute(
        select(Pool, Model.name, AcceleratorFlavor)
        .join(Model, Pool.model_id == Model.id)
        .join(AcceleratorFlavor, Pool.flavor_id == AcceleratorFlavor.id)
    ).all()
    return {
        pool.name: PoolEntry(
            pool.name,
            model_name,
            flavor.name,
            pool.region,
            pool.burst,
            pool.block_size,
            tuple(endpoints[pool.id]),
            cost_per_hour=float(
                flavor.cost_per_hour if pool.cost_per_hour is None else pool.cost_per_hour
            ),
            tokens_per_s=pool.tokens_per_s,
            capacity=pool.capacity,
            min_prompt_tokens=pool.min_prompt_tokens,
            max_prompt_tokens=pool.max_prompt_tokens,
            tiers=None if pool.tiers is None else tuple(pool.tiers),
            max_num_batched_tokens=pool.max_num_batched_tokens,
        )
        for pool, model_name, flavor in rows
    }


def digest_of(snapshot: Snapshot) -> bytes:
    """The ``content_digest`` the store gives ``snapshot`` once published: the same content
    has the same digest whatever order the database returned its rows in (a key's last use
    moves its row: the same configuration was published again every 2 s under traffic)."""
    return content_digest({name: part_digest(blob) for name, blob in split(snapshot).items()})


def current_digest(
    factory: sessionmaker[Session], *, cache_secret: bytes, now: datetime | None = None
) -> bytes:
    with factory() as session:
        return digest_of(build_snapshot(session, 0, cache_secret=cache_secret, now=now))


def publish_snapshot(
    factory: sessionmaker[Session],
    publisher: SnapshotPublisher,
    *,
    cache_secret: bytes,
    now: datetime | None = None,
    built_from: BuiltFrom | None = None,
) -> tuple[int, bool]:
    """Read the current configuration and publish it under a fresh version, allocated before
    the database is read (so it holds every change whose publisher got an older one): the
    version, and whether the store took it (not if a newer one was stored meanwhile).
    ``built_from``: the configuration state read before (``SnapshotPublisher.built_from``)."""
    version = publisher.next_version()
    with factory() as session:
        snapshot = build_snapshot(session, version, cache_secret=cache_secret, now=now)
    return version, store_snapshot(publisher, snapshot, built_from)
