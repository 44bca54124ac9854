"""What a gateway knows about quotas: resolved limits per scope, prices, and the snapshot section.

Everything here is plain data, encoded in the config snapshot. Money is counted in integers
so counters add exactly in Redis and in memory alike. Amounts are in the price book's currency
(``QuotaBook.currency``): prices in millionths of it per million tokens, costs and cost budgets
in billionths (``NANO``: 1 USD = 10⁹), fine enough that rounding a request up to a whole unit
costs nothing a budget notices (one token of a $0.02-per-million embedding model is 20
billionths; counted in millionths it was one, 50 times its price).
"""

from __future__ import annotations

from typing import Final

import msgspec

from trunkline.metering.outcomes import BILLED_BY_DEFAULT

MICRO: Final = 1_000_000
"""Prices' unit: millionths of the price book's currency (per million tokens)."""
NANO: Final = 1_000_000_000
"""Costs' and cost budgets' unit: billionths of the price book's currency."""

LIMIT_NAMES: Final = (
    "requests_per_minute",
    "tokens_per_minute",
    "concurrent_requests",
    "tokens_per_day",
    "tokens_per_month",
    "cost_per_month",
)
"""The order of every limit vector (``Limits.vector``, counters in the stores, the Lua script)."""

REQUESTS, TOKENS, CONCURRENCY, DAY_TOKENS, MONTH_TOKENS, MONTH_COST = range(6)
UNLIMITED: Final = -1

SCOPE_KINDS: Final = ("key", "project", "tenant")
"""Scopes from the most specific to the broadest; a request is checked against each."""


class Limits(msgspec.Struct, frozen=True, omit_defaults=True):
    """The limits of one scope; ``None`` means no limit. ``cost_per_month`` is in ``NANO`` units."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_requests: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    cost_per_month: int | None = None

    def vector(self) -> tuple[int, int, int, int, int, int]:
        """The limits in ``LIMIT_NAMES`` order, ``UNLIMITED`` (-1) where there is none."""
        return (
            _or_unlimited(self.requests_per_minute),
            _or_unlimited(self.tokens_per_minute),
            _or_unlimited(self.concurrent_requests),
            _or_unlimited(self.tokens_per_day),
            _or_unlimited(self.tokens_per_month),
            _or_unlimited(self.cost_per_month),
        )

    @property
    def unlimited(self) -> bool:
        return all(value == UNLIMITED for value in self.vector())


def _or_unlimited(value: int | None) -> int:
    return UNLIMITED if value is None else value


class Price(msgspec.Struct, frozen=True):
    """List price of a served model for one tier, in ``MICRO`` units per million tokens of
    each class."""

    input: int
    cached_input: int
    output: int

    def cost(self, prompt: int, cached: int, completion: int) -> int:
        """``NANO`` units for the given tokens, rounded up (by less than one of them)."""
        cached = min(cached, prompt)
        per_million = (prompt - cached) * self.input + cached * self.cached_input
        per_million += completion * self.output  # MICRO x tokens / 10⁶ = NANO x 10³
        return -(-per_million // (MICRO * MICRO // NANO))


class QuotaBook(msgspec.Struct, frozen=True, omit_defaults=True):
    """The quota section of the snapshot, resolved by the control plane.

    ``tenants`` and ``projects`` are keyed by tenant id (every project of a tenant has the same
    limits, counted per project); ``keys`` by public key id. Scopes without any limit are absent.
    """

    tenants: dict[str, Limits] = msgspec.field(default_factory=dict)
    projects: dict[str, Limits] = msgspec.field(default_factory=dict)
    keys: dict[str, Limits] = msgspec.field(default_factory=dict)
    prices: dict[str, Price] = msgspec.field(default_factory=dict)
    """``price_key(model, tier)`` -> list price, for the monthly cost budgets."""
    billable_outcomes: tuple[str, ...] = BILLED_BY_DEFAULT
    """The outcomes the price book in force bills (``metering.outcomes``): a cost budget is
    charged for these alone, as the bill is."""
    currency: str = "USD"
    """The price book's (ISO 4217): prices, costs and budgets are amounts of it."""


def price_key(model: str, tier: str) -> str:
    return f"{model}|{tier}"
