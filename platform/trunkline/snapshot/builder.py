"""Build a snapshot from the database and publish it (control plane side only)."""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import UTC, datetime

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

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
from trunkline.quota.book import build_quota_book
from trunkline.snapshot.schemas import (
    AliasEntry,
    EndpointEntry,
    KeyEntry,
    PoolEntry,
    Snapshot,
    TenantEntry,
    TierEntry,
    encode_snapshot,
)
from trunkline.snapshot.store import SnapshotPublisher


def build_snapshot(session: Session, version: int) -> Snapshot:
    tiers = {
        t.name: TierEntry(t.name, t.priority, t.ttft_slo_ms, t.itl_slo_ms, t.may_use_burst)
        for t in session.scalars(select(Tier))
    }
    alias_names = {
        row.id: row.alias for row in session.execute(select(ModelAlias.id, ModelAlias.alias))
    }
    entitled: dict[str, set[str]] = defaultdict(set)
    for tenant_id, alias_id in session.execute(select(Entitlement.tenant_id, Entitlement.alias_id)):
        entitled[str(tenant_id)].add(alias_names[alias_id])
    tenants = {
        str(t.id): TenantEntry(
            str(t.id), t.slug, t.tier.name, tuple(t.regions), frozenset(entitled[str(t.id)])
        )
        for t in session.scalars(select(Tenant))
    }
    now = datetime.now(UTC)
    keys = {
        k.key_id: KeyEntry(
            key_id=k.key_id,
            secret_hash=k.secret_hash,
            tenant_id=str(k.tenant_id),
            project_id=str(k.project_id),
            allowed_aliases=None if k.allowed_models is None else frozenset(k.allowed_models),
            tier=k.tier_name,
            expires_at=None if k.expires_at is None else k.expires_at.timestamp(),
        )
        for k in session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None)))
        if k.expires_at is None or k.expires_at > now
    }
    pools = _pools(session)
    models = {m.id: m for m in session.scalars(select(Model))}
    aliases = {}
    for alias in session.scalars(select(ModelAlias)):
        model = models[alias.model_id]
        served_by = tuple(sorted(p.name for p in pools.values() if p.model == model.name))
        aliases[alias.alias] = AliasEntry(alias.alias, model.name, model.kind, served_by)
    quotas = build_quota_book(session, tenants, keys)
    return Snapshot(version, time.time(), tiers, tenants, keys, aliases, pools, quotas)


def _pools(session: Session) -> dict[str, PoolEntry]:
    endpoints: dict[object, list[EndpointEntry]] = defaultdict(list)
    for e in session.scalars(select(Endpoint).where(Endpoint.enabled).order_by(Endpoint.url)):
        endpoints[e.pool_id].append(EndpointEntry(str(e.id), e.url))
    rows = session.execute(
        select(Pool, Model.name, AcceleratorFlavor.name)
        .join(Model, Pool.model_id == Model.id)
        .join(AcceleratorFlavor, Pool.flavor_id == AcceleratorFlavor.id)
    ).all()
    return {
        pool.name: PoolEntry(
            pool.name,
            model_name,
            flavor_name,
            pool.region,
            pool.burst,
            pool.block_size,
            tuple(endpoints[pool.id]),
        )
        for pool, model_name, flavor_name in rows
    }


def fingerprint(snapshot: Snapshot) -> bytes:
    """The snapshot's content without its version and time, to tell real changes apart."""
    return encode_snapshot(msgspec.structs.replace(snapshot, version=0, published_at=0.0))


def current_fingerprint(factory: sessionmaker[Session]) -> bytes:
    with factory() as session:
        return fingerprint(build_snapshot(session, 0))


def publish_snapshot(factory: sessionmaker[Session], publisher: SnapshotPublisher) -> Snapshot:
    """Read the current configuration and publish it under a fresh version."""
    version = publisher.next_version()
    with factory() as session:
        snapshot = build_snapshot(session, version)
    publisher.publish(version, encode_snapshot(snapshot))
    return snapshot
