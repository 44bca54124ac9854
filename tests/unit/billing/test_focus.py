"""FOCUS output checked column by column against the specification's types and nullability,
in CSV and in Parquet, on a month with every kind of line: token usage, dedicated GPUs, an SLA
credit, and a correction to a closed period.

The rules below are written from the FOCUS 1.2 column definitions, not from our code."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing import focus
from trunkline.billing.exports import export_period
from trunkline.billing.focus import COLUMN_NAMES, COLUMNS
from trunkline.billing.focus_files import csv_chunks, parquet_chunks
from trunkline.billing.periods import parse_period
from trunkline.kit.db import transaction

Row = dict[str, Any]
Rule = Callable[[Row], bool]

DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def usage_not_correction(row: Row) -> bool:
    return row["ChargeCategory"] in ("Usage", "Purchase") and row["ChargeClass"] is None


def never(_row: Row) -> bool:
    return False


def always(_row: Row) -> bool:
    return True


# column: (data type, "must not be null when", "must be null when")
SPEC: dict[str, tuple[str, Rule, Rule]] = {
    "BilledCost": ("Decimal", always, never),
    "EffectiveCost": ("Decimal", always, never),
    "ListCost": ("Decimal", always, never),
    "ContractedCost": ("Decimal", always, never),
    "BillingAccountId": ("String", always, never),
    "BillingAccountName": ("String", never, never),
    "BillingCurrency": ("String", always, never),
    "BillingPeriodStart": ("DateTime", always, never),
    "BillingPeriodEnd": ("DateTime", always, never),
    "ChargePeriodStart": ("DateTime", always, never),
    "ChargePeriodEnd": ("DateTime", always, never),
    "ChargeCategory": ("String", always, never),
    "ChargeClass": ("String", never, never),
    "ChargeDescription": ("String", never, never),
    "ChargeFrequency": ("String", always, never),
    "ConsumedQuantity": (
        "Decimal",
        lambda r: r["ChargeCategory"] == "Usage" and r["ChargeClass"] is None,
        lambda r: r["ChargeCategory"] != "Usage",
    ),
    "ConsumedUnit": (
        "String",
        lambda r: r["ChargeCategory"] == "Usage" and r["ChargeClass"] is None,
        lambda r: r["ChargeCategory"] != "Usage",
    ),
    "PricingQuantity": ("Decimal", usage_not_correction, lambda r: r["ChargeCategory"] == "Tax"),
    "PricingUnit": ("String", usage_not_correction, lambda r: r["ChargeCategory"] == "Tax"),
    "ListUnitPrice": ("Decimal", usage_not_correction, lambda r: r["ChargeCategory"] == "Tax"),
    "ContractedUnitPrice": (
        "Decimal",
        usage_not_correction,
        lambda r: r["ChargeCategory"] == "Tax",
    ),
    "PricingCategory": ("String", usage_not_correction, lambda r: r["ChargeCategory"] == "Tax"),
    "ProviderName": ("String", always, never),
    "PublisherName": ("String", always, never),
    "InvoiceIssuerName": ("String", always, never),
    "InvoiceId": ("String", never, never),
    "ServiceName": ("String", always, never),
    "ServiceCategory": ("String", always, never),
    "ServiceSubcategory": ("String", always, never),
    "ResourceId": ("String", never, never),
    "ResourceName": ("String", never, lambda r: r["ResourceId"] is None),
    "ResourceType": ("String", never, lambda r: r["ResourceId"] is None),
    "RegionId": ("String", never, never),
    "RegionName": ("String", never, lambda r: r["RegionId"] is None),
    "SubAccountId": ("String", never, never),
    "SubAccountName": ("String", never, lambda r: r["SubAccountId"] is None),
    "SkuId": ("String", usage_not_correction, never),
    "SkuPriceId": ("String", usage_not_correction, never),
    "SkuMeter": ("String", never, lambda r: r["SkuId"] is None),
    "SkuPriceDetails": ("KeyValue", never, lambda r: r["SkuPriceId"] is None),
    "Tags": ("KeyValue", never, never),
}
ALLOWED = {
    "ChargeCategory": {"Usage", "Purchase", "Tax", "Credit", "Adjustment"},
    "ChargeClass": {"Correction"},
    "ChargeFrequency": {"One-Time", "Recurring", "Usage-Based"},
    "PricingCategory": {"Standard", "Dynamic", "Committed", "Other"},
    "ServiceCategory": {"AI and Machine Learning", "Compute"},
    "ServiceSubcategory": {
        "Generative AI",
        "AI Platforms",
        "Machine Learning",
        "Other (AI and Machine Learning)",
    },
}
REQUESTED_EXTENSIONS = {"x_Model", "x_TokenClass"}


def exported(factory: sessionmaker[Session], period: str, fmt: str) -> bytes:
    with transaction(factory) as session:
        return export_period(session, parse_period(period), fmt).body


def csv_rows(body: bytes) -> list[Row]:
    return [
        {k: (v if v != "" else None) for k, v in row.items()}
        for row in csv.DictReader(io.StringIO(body.decode()))
    ]


def check_rows(rows: list[Row]) -> list[str]:
    problems = []
    for n, row in enumerate(rows):
        for column, (_kind, required, forbidden) in SPEC.items():
            if required(row) and row[column] is None:
                problems.append(f"row {n}: {column} is null ({row['ChargeCategory']})")
            if forbidden(row) and row[column] is not None:
                problems.append(f"row {n}: {column} must be null ({row['ChargeCategory']})")
        for column, allowed in ALLOWED.items():
            if row[column] is not None and row[column] not in allowed:
                problems.append(f"row {n}: {column}={row[column]!r}")
        if row["ChargeClass"] is None and row["ChargePeriodStart"] < row["BillingPeriodStart"]:
            problems.append(f"row {n}: charge before its billing period without a correction")
    return problems


@pytest.mark.parametrize("period", ["2026-11", "2026-12"])
def test_focus_csv_follows_the_specification(month: sessionmaker[Session], period: str) -> None:
    rows = csv_rows(exported(month, period, "focus-csv"))
    assert rows
    columns = set(rows[0])
    assert set(SPEC) <= columns
    assert {c for c in columns - set(SPEC) if not c.startswith("x_")} == set()
    assert columns >= REQUESTED_EXTENSIONS
    for row in rows:
        for column, (kind, _r, _f) in SPEC.items():
            value = row[column]
            if value is None:
                continue
            if kind == "Decimal":
                assert DECIMAL.match(value), (column, value)
            elif kind == "DateTime":
                assert DATETIME.match(value), (column, value)
            elif kind == "KeyValue":
                assert isinstance(json.loads(value), dict), (column, value)
        assert re.match(r"^[A-Z]{3}$", row["BillingCurrency"])
        assert row["ChargePeriodStart"] < row["ChargePeriodEnd"]
    assert check_rows(rows) == []


def test_every_kind_of_line_is_in_the_export(month: sessionmaker[Session]) -> None:
    november = csv_rows(exported(month, "2026-11", "focus-csv"))
    december = csv_rows(exported(month, "2026-12", "focus-csv"))
    # and the rounding of each invoice's total to its cents
    assert {r["ChargeCategory"] for r in november} == {"Usage", "Credit", "Adjustment"}
    assert {r["x_AcceleratorFlavor"] for r in november} >= {"l40s"}
    assert {r["x_TokenClass"] for r in november} >= {"input", "cached_input", "output"}
    # the late event is a correction; the GPUs, still held, are December's own usage
    usage = [r for r in december if r["ChargeCategory"] != "Adjustment"]
    assert {(r["ChargeClass"], r["x_AcceleratorFlavor"]) for r in usage} == {
        ("Correction", None),
        (None, "l40s"),
    }


PARQUET_TYPES = {
    "Decimal": pa.types.is_decimal,
    "DateTime": lambda t: pa.types.is_timestamp(t) and t.tz == "UTC",
    "String": pa.types.is_string,
    "KeyValue": pa.types.is_string,
}


@pytest.mark.parametrize("period", ["2026-11", "2026-12"])
def test_focus_parquet_has_typed_columns_and_the_csv_values(
    month: sessionmaker[Session], period: str
) -> None:
    table = pq.read_table(io.BytesIO(exported(month, period, "focus-parquet")))
    for column, (kind, _r, _f) in SPEC.items():
        assert PARQUET_TYPES[kind](table.schema.field(column).type), column
    parquet_rows = table.to_pylist()
    csv_values = csv_rows(exported(month, period, "focus-csv"))
    assert check_rows(parquet_rows) == []
    assert len(parquet_rows) == len(csv_values)
    for got, expected in zip(parquet_rows, csv_values, strict=True):
        assert Decimal(expected["BilledCost"]) == got["BilledCost"]
        assert got["ChargePeriodStart"] == datetime.fromisoformat(expected["ChargePeriodStart"])
        assert got["ChargePeriodStart"].tzinfo is not None
        assert got["Tags"] == expected["Tags"]
    assert datetime(2026, 11, 1, tzinfo=UTC) <= parquet_rows[0]["ChargePeriodStart"]


def _rows(count: int, *, text: str) -> list[tuple[Any, ...]]:
    """``count`` FOCUS rows of one value per column type, ``text`` in every string column."""
    sample = {
        focus.DECIMAL: Decimal("1.25"),
        focus.DATETIME: datetime(2026, 11, 1, tzinfo=UTC),
        focus.STRING: text,
        focus.JSON: '{"tenant":"acme"}',
    }
    return [tuple(sample[c.type] for c in COLUMNS) for _ in range(count)]


def test_the_csv_comes_in_pieces_that_make_the_same_file() -> None:
    """A month of every tenant's charges was held whole, three times over (9 GB at 2.4
    million lines): it is now written or sent a piece at a time."""
    rows = _rows(25, text='a, "b"')
    pieces = list(csv_chunks(rows, lines=10))
    assert len(pieces) == 3 and all(p.endswith(b"\r\n") for p in pieces)
    assert b"".join(pieces) == b"".join(csv_chunks(rows, lines=10**9))
    parsed = list(csv.reader(io.StringIO(b"".join(pieces).decode(), newline="")))
    assert parsed[0] == list(COLUMN_NAMES) and len(parsed) == 26
    assert parsed[1][[c.type for c in COLUMNS].index(focus.STRING)] == 'a, "b"'


def test_parquet_is_written_a_row_group_at_a_time_and_reads_back_whole() -> None:
    rows = _rows(25, text="acme")
    taken: list[int] = []

    def read() -> Iterator[tuple[Any, ...]]:
        for number, row in enumerate(rows, 1):
            taken.append(number)
            yield row

    pieces = parquet_chunks(read(), batch=10)
    first = next(pieces)
    assert first.startswith(b"PAR1") and len(taken) <= 11, "sent before the rest was read"
    parquet = pq.ParquetFile(io.BytesIO(first + b"".join(pieces)))
    assert parquet.metadata.num_row_groups == 3
    table = parquet.read()
    assert table.num_rows == 25 and table.column_names == list(COLUMN_NAMES)


def test_parquet_of_no_rows_is_a_file_with_its_columns() -> None:
    table = pq.read_table(io.BytesIO(b"".join(parquet_chunks(iter(())))))
    assert table.num_rows == 0 and table.column_names == list(COLUMN_NAMES)
