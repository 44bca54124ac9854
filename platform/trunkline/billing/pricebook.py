"""The price book: versions of list prices, each effective from an instant.

A version prices tokens per model x tier x token class (``input``, ``cached_input``,
``output``) per million tokens: a model's base prices times the tier's multiplier, unless an
override names that model and tier. It also prices dedicated GPUs per flavor per GPU-hour,
defines the SLA credits of each tier, and the contracted discount of tenants that have one.
Every amount is a ``Decimal`` read from text, never a float.
"""

from __future__ import annotations

import bisect
import itertools
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import yaml

from trunkline.errors import ConfigurationError, InvalidRequest
from trunkline.kit.yamlfile import load_strict
from trunkline.metering.outcomes import BILLED_BY_DEFAULT

TOKEN_CLASSES = ("input", "cached_input", "output")
DEFAULT_MODEL = "*"
BUNDLED = Path(__file__).with_name("default_pricebook.yaml")
_CURRENCY = re.compile(r"[A-Z]{3}")


class TokenPrices(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Prices per million tokens."""

    input: Decimal
    cached_input: Decimal
    output: Decimal


class Override(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    model: str
    tier: str
    input: Decimal | None = None
    cached_input: Decimal | None = None
    output: Decimal | None = None


class CreditStep(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    below: Decimal
    """Applies when TTFT attainment (a fraction) is below this."""
    credit: Decimal
    """Fraction of the tier's billed usage credited back."""


class PriceVersion(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    version: int
    effective_from: datetime
    currency: str = "USD"
    models: dict[str, TokenPrices]
    tier_multipliers: dict[str, Decimal] = {}
    overrides: list[Override] = []
    gpu_hour: dict[str, Decimal] = {}
    sla_credits: dict[str, list[CreditStep]] = {}
    contracts: dict[str, Decimal] = {}
    """Tenant slug → contracted discount (a fraction of list price)."""
    billable_outcomes: list[str] = msgspec.field(default_factory=lambda: list(BILLED_BY_DEFAULT))
    """Outcomes of requests whose tokens are billed (failed requests are metered, not billed)."""

    def token_price(self, model: str, tier: str, token_class: str) -> Decimal:
        """List price per million tokens."""
        for override in self.overrides:
            if override.model == model and override.tier == tier:
                explicit: Decimal | None = getattr(override, token_class)
                if explicit is not None:
                    return explicit
        prices = self.models.get(model) or self.models.get(DEFAULT_MODEL)
        if prices is None:
            raise ConfigurationError(
                f"price book version {self.version} has no price for model {model!r} "
                f"(and no '{DEFAULT_MODEL}' default)"
            )
        base: Decimal = getattr(prices, token_class)
        return base * self.tier_multipliers.get(tier, Decimal(1))

    def gpu_hour_price(self, flavor: str) -> Decimal:
        try:
            return self.gpu_hour[flavor]
        except KeyError:
            raise ConfigurationError(
                f"price book version {self.version} has no GPU-hour price for {flavor!r}"
            ) from None

    def discount(self, tenant_slug: str) -> Decimal:
        return self.contracts.get(tenant_slug, Decimal(0))


class PriceBook:
    """Versions ordered by ``effective_from``; the one in force at an instant prices it."""

    def __init__(self, versions: list[PriceVersion]) -> None:
        check_versions(versions)
        self.versions = sorted(versions, key=lambda v: v.effective_from)
        self._starts = [v.effective_from for v in self.versions]

    def at(self, moment: datetime) -> PriceVersion:
        index = bisect.bisect_right(self._starts, moment) - 1
        if index < 0:
            raise ConfigurationError(f"no price book version is in force at {moment.isoformat()}")
        return self.versions[index]

    def spans(self) -> list[tuple[PriceVersion, datetime | None]]:
        """Each version and when the next one takes over (None: the latest, in force on)."""
        ends = [v.effective_from for v in self.versions[1:]]
        return list(zip(self.versions, [*ends, None], strict=True))

    @property
    def currency(self) -> str:
        return self.versions[0].currency


MAX_PRICE = Decimal(1_000_000)
"""Per million tokens or per GPU-hour: with quantities up to 10^15 and 6 places, a cost stays
exact in the 38 digits rating computes in."""
MAX_MULTIPLIER = Decimal(100)


def _places(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def _on_utc_hour(moment: datetime) -> bool:
    utc = moment.astimezone(UTC)
    return utc.minute == 0 and utc.second == 0 and utc.microsecond == 0


def _check(ok: bool, version: int, message: str, problems: list[str]) -> None:
    if not ok:
        problems.append(f"version {version}: {message}")


def check_version(v: PriceVersion, problems: list[str]) -> None:
    """Append what is wrong with ``v``: bounds keep every cost exact in 38 digits."""
    _check(bool(_CURRENCY.fullmatch(v.currency)), v.version, "currency must be ISO 4217", problems)
    zoned = v.effective_from.tzinfo is not None
    _check(zoned, v.version, "effective_from needs a zone", problems)
    # Usage is rated by the UTC hour it started in, each hour at the version in force at its
    # start: a version starting inside an hour would leave that hour's rest at the old prices.
    on_the_hour = zoned and _on_utc_hour(v.effective_from)
    _check(
        not zoned or on_the_hour,
        v.version,
        "effective_from must be on a UTC hour (usage is rated by the hour)",
        problems,
    )
    prices = [p for m in v.models.values() for p in (m.input, m.cached_input, m.output)]
    prices += [p for o in v.overrides for p in (o.input, o.cached_input, o.output) if p is not None]
    prices += list(v.gpu_hour.values())
    for price in prices:
        ok = price.is_finite() and 0 <= price <= MAX_PRICE and _places(price) <= 6
        _check(ok, v.version, f"bad price {price}", problems)
    for tier, factor in v.tier_multipliers.items():
        ok = factor.is_finite() and 0 < factor <= MAX_MULTIPLIER and _places(factor) <= 4
        _check(ok, v.version, f"bad multiplier {factor} for {tier}", problems)
    for slug, discount in v.contracts.items():
        ok = discount.is_finite() and 0 <= discount < 1 and _places(discount) <= 4
        _check(ok, v.version, f"bad discount {discount} for {slug}", problems)
    for tier, steps in v.sla_credits.items():
        for step in steps:
            ok = all(d.is_finite() for d in (step.below, step.credit))
            ok = ok and 0 < step.below <= 1 and 0 < step.credit <= 1 and _places(step.credit) <= 4
            _check(ok, v.version, f"bad SLA credit step for {tier}", problems)
    _check(bool(v.models), v.version, "prices no model", problems)


def check_versions(versions: list[PriceVersion]) -> None:
    problems: list[str] = []
    if not versions:
        problems.append("a price book needs at least one version")
    for v in versions:
        check_version(v, problems)
    ordered = sorted(versions, key=lambda v: v.version)
    for before, after in itertools.pairwise(ordered):
        if after.version == before.version or after.effective_from <= before.effective_from:
            problems.append(f"version {after.version} must start after version {before.version}")
    if len({v.currency for v in versions}) > 1:
        problems.append("every version must use the same currency")
    if problems:
        raise InvalidRequest("invalid price book: " + "; ".join(problems), param="price_book")


def _exact(value: Any) -> Any:
    """YAML reads 0.20 as a float: turn every float back into the text it was written as."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {k: _exact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_exact(v) for v in value]
    return value


def version_from_document(document: dict[str, Any]) -> PriceVersion:
    try:
        return msgspec.convert(_exact(document), PriceVersion, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid price book: {exc}", param="price_book") from exc


def version_document(version: PriceVersion) -> dict[str, Any]:
    """JSON-ready form, amounts as decimal strings (what the database stores)."""
    document: dict[str, Any] = msgspec.to_builtins(version)
    return document


def load_price_book_file(path: Path) -> PriceBook:
    """Read a price book file: ``kind: PriceBook`` with a list of ``versions``."""
    try:
        data = load_strict(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidRequest(f"cannot read price book {path}: {exc}", param="path") from exc
    if not isinstance(data, dict) or data.get("kind") != "PriceBook":
        raise InvalidRequest(f"{path}: not a price book (kind: PriceBook)", param="path")
    defaults = {k: v for k, v in data.items() if k not in ("kind", "versions")}
    versions = data.get("versions") or []
    if not isinstance(versions, list) or not all(isinstance(v, dict) for v in versions):
        raise InvalidRequest(f"{path}: versions must be a list of mappings", param="versions")
    return PriceBook([version_from_document({**defaults, **v}) for v in versions])
