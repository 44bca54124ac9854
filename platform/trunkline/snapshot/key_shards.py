"""Some of the snapshot's key shards, rebuilt from the database alone (control plane side).

A change confined to keys (created, revoked, rotated, their own limits set, expired) moves
only the shards those keys are in. Reading only those shards' keys (by ``ApiKey.shard``),
their tenants' tiers and the quota documents they are resolved from took 30 ms for one shard
where the whole snapshot and its split took 1 s (40,000 keys on SQLite, a loaded machine).
The entries and limits are made and encoded by the same code as the whole build's
(``key_entries``, ``quota.book.key_limits``, ``parts.key_parts``), so a shard rebuilt here
has the bytes the whole build gives it.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from trunkline.kit.shards import key_shard
from trunkline.models import ApiKey, Tenant, Tier
from trunkline.quota.book import KeyLimitSources, key_limits, tier_priorities
from trunkline.quota.repository import QuotaRepository
from trunkline.snapshot.parts import key_parts, part_of_shard
from trunkline.snapshot.schemas import KeyEntry

KEY_COLUMNS = (
    ApiKey.key_id, ApiKey.secret_hash, ApiKey.tenant_id, ApiKey.project_id,
    ApiKey.allowed_models, ApiKey.tier_name, ApiKey.expires_at,
)  # fmt: skip
"""What a key's entry is made of (plain rows, not ORM objects: tens of thousands of keys are
most of a big snapshot's build)."""


def key_entries(rows: Iterable[Any], now: datetime) -> dict[str, KeyEntry]:
    """The entries of ``KEY_COLUMNS`` rows of keys not revoked; those expired at ``now`` are
    left out (a gateway checks expiry per request too, so one left in is never served)."""
    return {
        key_id: KeyEntry(
            key_id=key_id,
            secret_hash=secret_hash,
            tenant_id=str(tenant_id),
            project_id=str(project_id),
            allowed_aliases=None if allowed is None else frozenset(allowed),
            tier=tier,
            expires_at=None if expires_at is None else expires_at.timestamp(),
        )
        for key_id, secret_hash, tenant_id, project_id, allowed, tier, expires_at in rows
        if expires_at is None or expires_at > now
    }


def build_key_parts(
    session: Session, shards: Collection[int], *, now: datetime
) -> dict[str, bytes | None]:
    """The parts of ``shards`` as the whole build at ``now`` would give them (None: the shard
    holds no key, so it is no part)."""
    # Shard 0 too: a key inserted without its shard (by an older control plane during an
    # upgrade, or SQL by hand) has the column's default, 0; each row's shard is its id's.
    read = sorted(set(shards) | {0})
    rows = [
        row
        for row in session.execute(
            select(ApiKey.id, ApiKey.rotated_from, *KEY_COLUMNS).where(
                ApiKey.shard.in_(read), ApiKey.revoked_at.is_(None)
            )
        )
        if key_shard(row.key_id) in shards
    ]
    keys = key_entries((row[2:] for row in rows), now)
    rotated = {row.id: (row.key_id, row.rotated_from) for row in rows if row.key_id in keys}
    tenant_ids = {uuid.UUID(key.tenant_id) for key in keys.values()}
    # The shards' keys' tenants by what selected the keys, not a list of their ids: a few
    # shards of a big platform's keys may have more tenants than a statement may list.
    shards_tenants = select(ApiKey.tenant_id).where(ApiKey.shard.in_(read))
    tiers = session.execute(
        select(Tenant.id, Tier.name)
        .join(Tier, Tenant.tier_id == Tier.id)
        .where(Tenant.id.in_(shards_tenants))
    )
    repository = QuotaRepository(session)
    sources = KeyLimitSources(
        {str(tenant_id): tier for tenant_id, tier in tiers},
        repository.tier_docs_by_name(),
        repository.tenant_docs(tenant_ids),
        repository.key_docs(rotated),
        tier_priorities(session),
    )
    parts = key_parts(keys, key_limits(keys, sources))
    return {part_of_shard(n): parts.get(part_of_shard(n)) for n in shards}


def expired_shards(session: Session, since: datetime, now: datetime) -> set[int]:
    """The shards of the keys (not revoked) that expired after ``since``, up to ``now``: the
    whole build at ``now`` leaves them out, so their shards change."""
    statement = select(ApiKey.key_id).where(
        ApiKey.expires_at > since, ApiKey.expires_at <= now, ApiKey.revoked_at.is_(None)
    )
    return {key_shard(key_id) for key_id in session.scalars(statement)}
