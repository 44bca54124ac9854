"""The price book: prices per model x tier x token class, tier multipliers, overrides,
versions effective from an instant, and the checks that keep every amount exact."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from trunkline.billing.pricebook import (
    BUNDLED,
    PriceBook,
    load_price_book_file,
    version_from_document,
)
from trunkline.errors import ConfigurationError, InvalidRequest


def at(day: int, month: int = 11) -> datetime:
    return datetime(2026, month, day, tzinfo=UTC)


def version(number: int = 1, starts: datetime | None = None, **fields: object) -> dict[str, object]:
    document: dict[str, object] = {
        "version": number,
        "effective_from": (starts or at(1, 1)).isoformat(),
        "models": {
            "llama": {"input": "0.20", "cached_input": "0.05", "output": "0.60"},
            "*": {"input": "1", "cached_input": "0.5", "output": "2"},
        },
        "tier_multipliers": {"gold": "1.5", "bronze": "0.6"},
        "overrides": [{"model": "llama", "tier": "silver", "output": "0.55"}],
    }
    document.update(fields)
    return document


@pytest.mark.parametrize(
    ("model", "tier", "token_class", "price"),
    [
        ("llama", "gold", "input", "0.300"),  # base x gold multiplier
        ("llama", "gold", "cached_input", "0.075"),
        ("llama", "bronze", "output", "0.360"),
        ("llama", "silver", "input", "0.20"),  # no multiplier for silver: 1
        ("llama", "silver", "output", "0.55"),  # the override wins, unmultiplied
        ("unknown-model", "gold", "output", "3.0"),  # the "*" default, multiplied
    ],
)
def test_token_price_per_million(model: str, tier: str, token_class: str, price: str) -> None:
    priced = version_from_document(version()).token_price(model, tier, token_class)
    assert priced == Decimal(price)


def test_a_model_without_price_and_without_default_is_refused() -> None:
    document = version(models={"llama": {"input": "1", "cached_input": "1", "output": "1"}})
    with pytest.raises(ConfigurationError, match="no price for model 'other'"):
        version_from_document(document).token_price("other", "gold", "input")


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (at(1, 1), 1),
        (at(14), 1),
        (at(15), 2),  # a version is in force from its first instant
        (at(30), 2),
    ],
)
def test_the_version_in_force_prices_each_instant(moment: datetime, expected: int) -> None:
    book = PriceBook([version_from_document(version(1)), version_from_document(version(2, at(15)))])
    assert book.at(moment).version == expected


def test_no_version_in_force_before_the_first_one() -> None:
    book = PriceBook([version_from_document(version(1, at(10)))])
    with pytest.raises(ConfigurationError):
        book.at(at(9))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"currency": "usd"}, "ISO 4217"),
        ({"currency": "EUR\n"}, "ISO 4217"),
        (
            {"models": {"m": {"input": "0.0000001", "cached_input": "0", "output": "0"}}},
            "bad price",
        ),
        ({"models": {"m": {"input": "-1", "cached_input": "0", "output": "0"}}}, "bad price"),
        ({"tier_multipliers": {"gold": "0"}}, "bad multiplier"),
        ({"contracts": {"acme": "1"}}, "bad discount"),
        ({"contracts": {"acme": "0.12345"}}, "bad discount"),
        ({"sla_credits": {"gold": [{"below": "1.5", "credit": "0.1"}]}}, "SLA credit"),
        # Not numbers a bill can hold: each would rate to NaN, Infinity or 395 digits.
        ({"models": {"m": {"input": "NaN", "cached_input": "0", "output": "0"}}}, "bad price"),
        ({"models": {"m": {"input": "1e400", "cached_input": "0", "output": "0"}}}, "bad price"),
        ({"gpu_hour": {"h100": "Infinity"}}, "bad price"),
        ({"tier_multipliers": {"gold": "Infinity"}}, "bad multiplier"),
        ({"tier_multipliers": {"gold": "1000"}}, "bad multiplier"),
        ({"contracts": {"acme": "NaN"}}, "bad discount"),
        ({"sla_credits": {"gold": [{"below": "NaN", "credit": "0.1"}]}}, "SLA credit"),
    ],
)
def test_invalid_versions_are_refused_with_the_reason(
    change: dict[str, object], problem: str
) -> None:
    with pytest.raises(InvalidRequest, match=problem):
        PriceBook([version_from_document(version(**change))])


@pytest.mark.parametrize(
    "starts", ["2026-11-15T12:30:00Z", "2026-11-15T12:00:01Z", "2027-01-01T00:00:00+05:30"]
)
def test_a_version_must_start_on_a_utc_hour(starts: str) -> None:
    # Usage is rated per UTC hour at the version in force at the hour's start: a version from
    # 12:30 would leave 12:30-13:00 at the old prices.
    with pytest.raises(InvalidRequest, match="on a UTC hour"):
        PriceBook([version_from_document(version(effective_from=starts))])


def test_a_version_may_start_on_a_utc_hour_written_in_another_zone() -> None:
    book = PriceBook([version_from_document(version(effective_from="2027-01-01T05:00:00+05:00"))])
    assert book.versions[0].effective_from == datetime(2027, 1, 1, tzinfo=UTC)


def test_versions_must_start_in_order() -> None:
    with pytest.raises(InvalidRequest, match="must start after"):
        PriceBook(
            [version_from_document(version(1, at(15))), version_from_document(version(2, at(1)))]
        )


def test_prices_written_as_yaml_numbers_are_read_exactly(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(
        "kind: PriceBook\ncurrency: EUR\nversions:\n"
        "  - version: 1\n    effective_from: 2026-01-01T00:00:00Z\n"
        "    models: {m: {input: 0.1, cached_input: 0.2, output: 0.3}}\n"
    )
    prices = load_price_book_file(path).at(at(2))
    total = sum((prices.token_price("m", "gold", c) for c in ("input", "cached_input")), Decimal(0))
    assert total == Decimal("0.3") and prices.currency == "EUR"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"kind: PriceBook\nversions: 7\n", "versions must be a list of mappings"),
        (b"kind: PriceBook\nversions: [5]\n", "versions must be a list of mappings"),
        (b"kind: PriceBook\ncurrency: \xe9\n", "cannot read price book"),
        (
            b"kind: PriceBook\nversions:\n  - {version: 1, version: 2}\n",
            "prices.yaml: line 3: key 'version' given twice \\(first at line 3\\)",
        ),
    ],
)
def test_a_malformed_price_book_file_is_a_clear_error(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "prices.yaml"
    path.write_bytes(content)
    with pytest.raises(InvalidRequest, match=problem):
        load_price_book_file(path)


def test_the_bundled_price_book_is_valid() -> None:
    book = load_price_book_file(BUNDLED)
    assert book.at(at(1)).gpu_hour_price("h100") == Decimal("4.00")
