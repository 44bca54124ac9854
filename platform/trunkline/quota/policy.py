"""Resolve quota documents into the limits in force: pure functions, no database.

    tenant scope   = tier.tenant  <- tenant.tenant
    project scope  = tier.project <- tenant.project                (each project, counted apart)
    key scope      = key tier.key <- tenant.key <- key override    (``key_tier``: the key's pin, if
                                                                    still in force)

``a <- b``: ``b``'s limits replace ``a``'s where ``b`` sets them (``null``: unlimited).

Documents written through the API, the CLI or a manifest pass ``priced`` first: cost budgets
are amounts of the price book's currency, and the deprecated ``cost_per_month_usd`` is taken
for ``cost_per_month`` only while that currency is USD.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_CEILING, Decimal
from typing import Final, TypeVar, overload

import msgspec
from msgspec import UNSET

from trunkline.errors import InvalidRequest
from trunkline.quota.limits import NANO, Limits
from trunkline.quota.schemas import QuotaLimits, ScopeLimits
from trunkline.snapshot.schemas import pin_applies

ALIAS: Final = "cost_per_month_usd"
"""The deprecated name of ``cost_per_month``: US dollars, from before budgets had a currency."""
FIELDS = tuple(name for name in ScopeLimits.__struct_fields__ if name != ALIAS)
"""The limits of a scope (the alias is not one: ``priced`` folds it into ``cost_per_month``)."""
SCOPES: Final = QuotaLimits.__struct_fields__
DocT = TypeVar("DocT", QuotaLimits, ScopeLimits)
NO_LIMITS = ScopeLimits(**dict.fromkeys(FIELDS))
"""Every limit given, and none set."""


def overlay(base: ScopeLimits, override: ScopeLimits | None) -> ScopeLimits:
    """``base`` with ``override``'s given limits applied; every field of the result is given."""
    values = {}
    for name in FIELDS:
        chosen = UNSET if override is None else getattr(override, name)
        if chosen is UNSET:
            chosen = getattr(base, name)
        values[name] = None if chosen is UNSET else chosen
    return ScopeLimits(**values)


def resolve(
    tier: QuotaLimits | None,
    tenant: QuotaLimits | None,
    key_tier: QuotaLimits | None = None,
    key: ScopeLimits | None = None,
) -> QuotaLimits:
    """The limits in force for a tenant (and, given ``key``, for one of its keys)."""
    tier = tier or QuotaLimits()
    tenant = tenant or QuotaLimits()
    key_defaults = (key_tier or tier).key
    return QuotaLimits(
        tenant=overlay(tier.tenant, tenant.tenant),
        project=overlay(tier.project, tenant.project),
        key=overlay(overlay(key_defaults, tenant.key), key),
    )


def key_tier(pinned: str | None, tenants: str, priorities: Mapping[str, int]) -> str:
    """The tier a key's requests run in, so the one whose key defaults it gets: its pin when
    that is its tenant's tier or below it, else its tenant's (as ``gateway.authn.key_tier``
    decides per request). A tenant may have moved below its keys' pins since they were made."""
    if pinned is None or pinned not in priorities:
        return tenants
    applies = pin_applies(pinned, priorities[pinned], tenants, priorities.get(tenants, 0))
    return pinned if applies else tenants


def alias_problem(scope: ScopeLimits, currency: str | None) -> str | None:
    """What is wrong with ``scope``'s use of the deprecated ``cost_per_month_usd``, if anything
    (``currency``: the price book's, None where it is not known, as in ``tenants validate``)."""
    if scope.cost_per_month_usd is UNSET:
        return None
    if scope.cost_per_month is not UNSET:
        return f"give cost_per_month or its deprecated alias {ALIAS}, not both"
    if currency is not None and currency != "USD":
        return (
            f"{ALIAS} is a budget in US dollars, but the price book bills in {currency}: "
            f"give cost_per_month, in {currency}"
        )
    return None


@overload
def folded(doc: QuotaLimits) -> QuotaLimits: ...
@overload
def folded(doc: ScopeLimits) -> ScopeLimits: ...
def folded(doc: QuotaLimits | ScopeLimits) -> QuotaLimits | ScopeLimits:
    """``doc`` with the ``cost_per_month_usd`` its scopes hold moved to ``cost_per_month``
    (documents stored before the rename held it, in the price book's currency already)."""
    if isinstance(doc, ScopeLimits):
        return _folded(doc)
    return QuotaLimits(**{name: _folded(getattr(doc, name)) for name in SCOPES})


def _folded(scope: ScopeLimits) -> ScopeLimits:
    usd = scope.cost_per_month_usd
    if usd is UNSET:
        return scope
    return msgspec.structs.replace(scope, cost_per_month=usd, cost_per_month_usd=UNSET)


def priced(doc: DocT, currency: str, at: str = "") -> DocT:
    """``doc`` as stored, its budgets amounts of ``currency`` (the price book's); refuses the
    deprecated alias where ``alias_problem`` does, naming the field (under ``at``)."""
    scopes = (
        [(at, doc)]
        if isinstance(doc, ScopeLimits)
        else [(f"{at}{name}.", getattr(doc, name)) for name in SCOPES]
    )
    for where, scope in scopes:
        if problem := alias_problem(scope, currency):
            raise InvalidRequest(problem, param=where + ALIAS, reason="budget_currency")
    return folded(doc)


def to_limits(scope: ScopeLimits) -> Limits:
    """What the gateway enforces: the same limits, cost in ``NANO`` units of the currency."""
    cost = scope.cost_per_month
    return Limits(
        requests_per_minute=_count(scope.requests_per_minute),
        tokens_per_minute=_count(scope.tokens_per_minute),
        concurrent_requests=_count(scope.concurrent_requests),
        tokens_per_day=_count(scope.tokens_per_day),
        tokens_per_month=_count(scope.tokens_per_month),
        cost_per_month=None if cost is None or cost is UNSET else nano(cost),
    )


def nano(amount: float) -> int:
    """Rounded up: a budget under a ``NANO`` unit is not 0, which refuses everything."""
    return int((Decimal(str(amount)) * NANO).to_integral_value(rounding=ROUND_CEILING))


def _count(value: int | msgspec.UnsetType | None) -> int | None:
    return None if value is None or value is UNSET else value


def merge(current: ScopeLimits, changes: ScopeLimits, forget: tuple[str, ...] = ()) -> ScopeLimits:
    """``current`` with the limits ``changes`` gives, less the ones named in ``forget`` (which
    are inherited again): how the CLI edits one limit at a time. The deprecated alias
    replaces ``cost_per_month`` as that would (``priced`` then judges it)."""
    values = {name: getattr(current, name) for name in FIELDS}
    given = {k: v for k, v in msgspec.structs.asdict(changes).items() if v is not UNSET}
    if ALIAS in given and "cost_per_month" not in given:
        values["cost_per_month"] = UNSET
    values.update(given)
    for name in forget:
        values[name] = UNSET
    return ScopeLimits(**values)
