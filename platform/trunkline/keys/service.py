"""API key operations shared by the REST API and the CLI.

Tenant admins (and platform admins) manage every key of a tenant; developers
only the keys they created — another developer's key reads as missing. The
plaintext secret leaves this module exactly once, in ``ApiKeyCreated``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from trunkline.auth import secrets
from trunkline.auth.principal import Principal
from trunkline.errors import Conflict, InvalidRequest, NotFound, TrunklineError
from trunkline.keys.repository import ApiKeyRepository, successors, tenant_of_key
from trunkline.keys.schemas import (
    MAX_TTL_DAYS,
    ApiKey,
    ApiKeyBatch,
    ApiKeyCreate,
    ApiKeyCreated,
    status,
)
from trunkline.kit.ids import utcnow
from trunkline.kit.pagination import EVERYTHING, Page, PageRequest
from trunkline.models import ApiKey as ApiKeyRow
from trunkline.models import Role, Tenant
from trunkline.pools.entitlements import entitled_aliases
from trunkline.tenancy.changes import flush_or_conflict, mark_keys_changed
from trunkline.tenancy.repository import MembershipRepository, ProjectRepository, TierRepository
from trunkline.tenancy.service import tenant_row


def _keys(session: Session, principal: Principal, tenant_id: uuid.UUID) -> ApiKeyRepository:
    """The keys the caller may manage, by its role as the database holds it now (see
    ``_role_now``): a tenant admin's every key of the tenant, a developer's their own."""
    tenant_row(session, principal, tenant_id)
    if principal.is_platform_admin or _role_now(session, principal, tenant_id) is Role.TENANT_ADMIN:
        return ApiKeyRepository(session, tenant_id)
    return ApiKeyRepository(session, tenant_id, created_by=principal.user_id or uuid.UUID(int=0))


def _role_now(session: Session, principal: Principal, tenant_id: uuid.UUID) -> Role:
    """The caller's role in the tenant now; a caller no longer a member is told the tenant does
    not exist. Its memberships were read as its request began, perhaps before a removal or a
    demotion that the request's hold on the configuration then waited for: a key issued after
    a removal stayed live (``remove_member`` revokes the member's keys before), and one rotated
    from another member's key by a tenant admin removed or made a developer meanwhile handed
    its secret to someone no longer allowed to see it."""
    found = None
    if principal.user_id is not None:
        found = MembershipRepository(session, tenant_id).get(principal.user_id)
    if found is None:
        raise NotFound("tenant not found", param="tenant_id")
    membership, _user = found
    return membership.role


def list_keys(
    session: Session,
    principal: Principal,
    tenant_id: uuid.UUID,
    project_id: uuid.UUID | None = None,
    page: PageRequest = EVERYTHING,
) -> Page[ApiKey]:
    """Keys the caller may manage, oldest first, revoked and expired included."""
    keys = _keys(session, principal, tenant_id).page(page, project_id)
    return keys.map(lambda row: ApiKey.of(*row))


def get_key(session: Session, principal: Principal, tenant_id: uuid.UUID, key_id: str) -> ApiKey:
    return ApiKey.of(*_key(session, principal, tenant_id, key_id))


def create_key(
    session: Session,
    principal: Principal,
    server_secret: bytes,
    tenant_id: uuid.UUID,
    data: ApiKeyCreate,
    *,
    max_live: int | None = None,
) -> ApiKeyCreated:
    """Create a key; ``max_live`` bounds the tenant's live keys (the API's callers; the CLI,
    an operator, is not bounded)."""
    _room_for(session, principal, tenant_id, 1, max_live)
    return _create_key(session, principal, server_secret, tenant_id, data)


def _room_for(
    session: Session,
    principal: Principal,
    tenant_id: uuid.UUID,
    wanted: int,
    max_live: int | None,
) -> None:
    """Refuse ``wanted`` more keys that would take the tenant past ``max_live`` live ones: each
    live key is in every gateway's configuration, and one member's script creating keys in a
    loop would otherwise grow it, and its publishes, for every tenant."""
    if max_live is None:
        return
    tenant_row(session, principal, tenant_id)  # a non-member learns nothing of the tenant
    live = ApiKeyRepository(session, tenant_id).count_live(utcnow())
    if live + wanted > max_live:
        raise Conflict(
            f"the tenant has {live:,} live keys of the {max_live:,} it may have; revoke keys it "
            "no longer uses, or ask the platform's operators for more",
            reason="too_many_keys",
        )


def _create_key(
    session: Session,
    principal: Principal,
    server_secret: bytes,
    tenant_id: uuid.UUID,
    data: ApiKeyCreate,
) -> ApiKeyCreated:
    tenant = tenant_row(session, principal, tenant_id)
    _still_a_member(session, principal, tenant_id)
    project = ProjectRepository(session, tenant_id).get(data.project_id)
    if project is None:
        raise NotFound("project not found", param="project_id")
    expires_at = _expiry(data.expires_at, data.ttl_days)
    row = ApiKeyRow(
        tenant_id=tenant_id,
        project_id=project.id,
        created_by=principal.user_id,
        name=data.name,
        allowed_models=_allowed_models(session, tenant_id, data.allowed_models),
        tier_name=_pinned_tier(session, tenant, data.tier),
        expires_at=expires_at,
    )
    return _issue(session, server_secret, row, project.name)


def _still_a_member(session: Session, principal: Principal, tenant_id: uuid.UUID) -> None:
    """Refuse a caller no longer a member of the tenant, as a non-member (``_role_now``)."""
    if principal.is_platform_admin or principal.user_id is None:
        return
    _role_now(session, principal, tenant_id)


def create_keys(
    session: Session,
    principal: Principal,
    server_secret: bytes,
    tenant_id: uuid.UUID,
    batch: ApiKeyBatch,
    *,
    max_live: int | None = None,
) -> list[ApiKeyCreated]:
    """Create every key of ``batch``, or none (the first refusal names ``keys[i]``): one
    transaction, so gateways learn them in one publish (of their shards, or whole when they
    fall in many). ``max_live`` as for :func:`create_key`, for the batch as a whole."""
    _room_for(session, principal, tenant_id, len(batch.keys), max_live)
    created = []
    for index, data in enumerate(batch.keys):
        try:
            created.append(_create_key(session, principal, server_secret, tenant_id, data))
        except TrunklineError as exc:
            where = f"keys[{index}]" + (f".{exc.param}" if exc.param else "")
            raise type(exc)(
                f"keys[{index}]: {exc.message}", param=where, reason=exc.reason
            ) from exc
    return created


def revoke_key(session: Session, principal: Principal, tenant_id: uuid.UUID, key_id: str) -> ApiKey:
    """Revoke a key (idempotent); gateways refuse it once the new snapshot is published."""
    key, project = _key(session, principal, tenant_id, key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
        mark_keys_changed(session, [key.key_id])
    return ApiKey.of(key, project)


def rotate_key(
    session: Session,
    principal: Principal,
    server_secret: bytes,
    tenant_id: uuid.UUID,
    key_id: str,
    *,
    grace_s: int = 0,
    max_live: int | None = None,
) -> ApiKeyCreated:
    """Issue a new key with the same scope, in one transaction with the old one's end: revoked
    at once, or with ``grace_s`` left to expire that many seconds on (sooner if it was to
    expire sooner), so its clients can move to the new key without an outage. A key has one
    successor: a second rotation is refused. With a grace, both keys are live meanwhile, so
    the tenant needs room for one more under ``max_live``."""
    if not 0 <= grace_s <= MAX_ROTATION_GRACE_S:
        raise InvalidRequest(
            f"grace_s must be from 0 to {MAX_ROTATION_GRACE_S} (7 days)", param="grace_s"
        )
    old, project = _key(session, principal, tenant_id, key_id)  # by the caller's role now
    if status(old) != "active":
        raise Conflict(f"key {key_id} is {status(old)} and cannot be rotated", param="key_id")
    # Its row locked first, by an update that changes nothing (the row's lock on PostgreSQL,
    # the database's write lock on SQLite), so a rotation running beside this one (a caller
    # without the configuration's lock) waits, then sees this one's successor, not none.
    session.execute(
        update(ApiKeyRow)
        .where(ApiKeyRow.id == old.id)
        .values(name=ApiKeyRow.name)
        .execution_options(synchronize_session=False)
    )
    if successors(session, old.id):
        raise Conflict(f"key {key_id} was rotated already", param="key_id")
    inherited = old.expires_at  # the successor's, before a grace brings the old one's forward
    if grace_s:
        _room_for(session, principal, tenant_id, 1, max_live)
        end = utcnow() + timedelta(seconds=grace_s)
        if old.expires_at is None or old.expires_at > end:
            old.expires_at = end
            session.flush()
    elif not ApiKeyRepository(session, tenant_id).revoke(old, utcnow()):
        # a concurrent rotation or revocation got there first: one key has one successor
        raise Conflict(f"key {key_id} is revoked and cannot be rotated", param="key_id")
    mark_keys_changed(session, [old.key_id])
    new = ApiKeyRow(
        tenant_id=old.tenant_id,
        project_id=old.project_id,
        created_by=old.created_by,
        name=old.name,
        allowed_models=old.allowed_models,
        tier_name=old.tier_name,
        expires_at=inherited,
        rotated_from=old.id,
    )
    return _issue(session, server_secret, new, project)


MAX_ROTATION_GRACE_S = 7 * 24 * 3600
"""The longest a rotated key may keep working beside its successor."""


def key_tenant(session: Session, key_id: str) -> uuid.UUID:
    """The tenant of a key named by id alone (system callers such as the CLI)."""
    tenant_id = tenant_of_key(session, key_id)
    if tenant_id is None:
        raise _not_found(key_id)
    return tenant_id


def _issue(session: Session, server_secret: bytes, row: ApiKeyRow, project: str) -> ApiKeyCreated:
    issued = secrets.issue(server_secret, secrets.API_KEY_PREFIX)
    row.key_id, row.secret_hash = issued.public_id, issued.digest
    session.add(row)
    flush_or_conflict(session, "key id collision, try again")
    mark_keys_changed(session, [row.key_id])
    return ApiKeyCreated(secret=issued.plaintext, key=ApiKey.of(row, project))


def _key(
    session: Session, principal: Principal, tenant_id: uuid.UUID, key_id: str
) -> tuple[ApiKeyRow, str]:
    found = _keys(session, principal, tenant_id).get(key_id)
    if found is None:
        raise _not_found(key_id)
    return found


def _expiry(expires_at: datetime | None, ttl_days: int | None) -> datetime | None:
    if expires_at is not None and ttl_days is not None:
        raise InvalidRequest("give expires_at or ttl_days, not both", param="ttl_days")
    if ttl_days is not None:
        return utcnow() + timedelta(days=ttl_days)
    if expires_at is None:
        return None
    try:  # stored in UTC: 9999-12-31T23:59:59-12:00 is past the last day Python knows
        expires_at = expires_at.astimezone(UTC)
    except OverflowError:
        raise InvalidRequest("expires_at is out of range", param="expires_at") from None
    now = utcnow()
    if expires_at <= now:
        raise InvalidRequest("expires_at must be in the future", param="expires_at")
    if expires_at > now + timedelta(days=MAX_TTL_DAYS):
        raise InvalidRequest(
            f"expires_at must be within {MAX_TTL_DAYS} days, as ttl_days", param="expires_at"
        )
    return expires_at


def _allowed_models(
    session: Session, tenant_id: uuid.UUID, requested: list[str] | None
) -> list[str] | None:
    if requested is None:
        return None
    if not requested:
        raise InvalidRequest("allowed_models must name at least one alias", param="allowed_models")
    unknown = sorted(set(requested) - entitled_aliases(session, tenant_id))
    if unknown:
        raise InvalidRequest(
            f"the tenant is not entitled to {', '.join(unknown)}", param="allowed_models"
        )
    return list(dict.fromkeys(requested))


def _pinned_tier(session: Session, tenant: Tenant, name: str | None) -> str | None:
    if name is None:
        return None
    tier = TierRepository(session).by_name(name)
    if tier is None:
        raise InvalidRequest(f"unknown tier {name!r}", param="tier")
    if tier.name != tenant.tier.name and tier.priority >= tenant.tier.priority:
        raise InvalidRequest(
            f"a key may only be pinned to the tenant's tier ({tenant.tier.name}) or one below it",
            param="tier",
        )
    return tier.name


def _not_found(key_id: str) -> NotFound:
    """A key not found, named unless what was given holds a whole key or access token, secret
    included (pasted in place of its id): never echoed, into a terminal, a response or a log."""
    if secrets.redacted(key_id) != key_id:
        return NotFound(
            "key not found: that is a whole key or token, secret included, not a key id (the "
            f"part between '{secrets.API_KEY_PREFIX}_' and the next '_'); treat the secret as "
            "exposed",
            param="key_id",
        )
    return NotFound(f"key {key_id} not found", param="key_id")
