"""Authenticate a bearer API key against the snapshot (constant-time compare)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from trunkline.auth.secrets import API_KEY_PREFIX, parse, tenant_cache_salt, verify
from trunkline.errors import Unauthenticated
from trunkline.snapshot import KeyEntry, Snapshot, TenantEntry, TierEntry
from trunkline.snapshot.schemas import pin_applies


@dataclass(frozen=True, slots=True)
class Principal:
    key: KeyEntry
    tenant: TenantEntry
    tier: TierEntry


def _refuse(message: str) -> Unauthenticated:
    return Unauthenticated(message, reason="invalid_api_key")


def authenticate(
    snapshot: Snapshot,
    authorization: str | None,
    server_secret: bytes,
    now: float,
    previous_secrets: Sequence[bytes] = (),
) -> Principal:
    if not authorization:
        raise _refuse(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'"
            " (or 'api-key: <key>')."
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _refuse("Malformed Authorization header; expected 'Bearer <key>'.")
    parsed = parse(token.strip(), API_KEY_PREFIX)
    if parsed is None:
        raise _refuse("Incorrect API key provided.")
    entry = snapshot.keys.get(parsed.public_id)
    # Hash even when the id is unknown, so timing does not reveal which ids exist.
    digest = entry.secret_hash if entry is not None else ""
    matched = verify(server_secret, parsed.plaintext, digest, previous_secrets)
    if entry is None or not matched:
        raise _refuse(_REVOKED)
    return _principal(snapshot, entry, now)


_REVOKED = "Incorrect API key provided, or the key was revoked."


def current_principal(snapshot: Snapshot, principal: Principal, now: float) -> Principal:
    """``principal`` as ``snapshot`` has it: the request is served by this configuration, not
    by the one its key was checked against before its body came (a slow body outlived a key's
    revocation, a tenant's move to other regions or a lower tier). Its secret was checked;
    the key must still be there with the same one."""
    entry = snapshot.keys.get(principal.key.key_id)
    if entry is principal.key and not expired(entry, now):
        tenant, tier = snapshot.tenants.get(entry.tenant_id), principal.tier
        if tenant is principal.tenant and snapshot.tiers.get(tier.name) is tier:
            return principal  # no new configuration meanwhile, the usual case
    if entry is None or entry.secret_hash != principal.key.secret_hash:
        raise _refuse(_REVOKED)
    return _principal(snapshot, entry, now)


def secret_differs(snapshot: Snapshot, secrets: Sequence[bytes]) -> bool:
    """Whether ``snapshot`` was built under none of ``secrets``: its cache salts, keyed HMACs
    under the control plane's server secret, are not what these give. Then every key's hash
    differs too, and every key is refused. Unknown (False) without a cache-isolated tenant."""
    for tenant in snapshot.tenants.values():
        if tenant.cache_salt is not None:
            return all(tenant_cache_salt(s, tenant.id) != tenant.cache_salt for s in secrets)
    return False


def expired(key: KeyEntry, now: float) -> bool:
    return key.expires_at is not None and key.expires_at <= now


def _principal(snapshot: Snapshot, entry: KeyEntry, now: float) -> Principal:
    if expired(entry, now):
        raise _refuse("This API key has expired.")
    tenant = snapshot.tenants.get(entry.tenant_id)
    if tenant is None:
        raise _refuse("The tenant of this API key no longer exists.")
    tier = key_tier(snapshot.tiers.get(entry.tier or ""), snapshot.tiers.get(tenant.tier))
    if tier is None:
        raise _refuse("The tier of this API key is not configured.")
    return Principal(entry, tenant, tier)


def key_tier(pinned: TierEntry | None, tenants: TierEntry | None) -> TierEntry | None:
    """The tier a key's requests run in: its pin when that is the tenant's tier or below it
    (a batch key on bronze), else the tenant's. The pin was checked against the tenant's tier
    when the key was made; the tenant may have moved down since, and a pin must never reach
    above it (priority, burst pools, pools kept for a tier)."""
    if pinned is None or tenants is None:
        return pinned or tenants
    if pin_applies(pinned.name, pinned.priority, tenants.name, tenants.priority):
        return pinned
    return tenants
