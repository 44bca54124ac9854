"""FOCUS rows written as files: CSV (RFC 4180) and Parquet, a piece at a time as they are
made, so a month of every tenant's charges is never held whole."""

from __future__ import annotations

import io
import itertools
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from trunkline.billing.focus import (
    COLUMN_NAMES,
    COLUMNS,
    DATETIME,
    DECIMAL,
    JSON,
    PROVIDER,
    STRING,
    TAG_PREFIX,
)
from trunkline.kit.batches import batches

DECIMAL_SCALE = 24
"""Parquet decimal scale: prices ≤ 6 places x multiplier 4 x discount 4 x quantity 6 x credit 4."""

CSV_PIECE_LINES = 10_000
"""A CSV is written or sent in pieces of this many lines."""
ROW_GROUP_ROWS = 20_000
"""A Parquet file is written or sent a row group of this many rows at a time: its rows are
held while they are converted (fewer hold less memory, and compress a little less; measured
in docs/metering.md)."""


def _decimal_text(value: Decimal | None) -> str:
    if value is None:
        return ""
    text = str(value)
    return format(value, "f") if "E" in text else text  # never scientific notation


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet opening a CSV runs a cell starting with as a formula."""


def _field(value: Any) -> str:
    """One CSV field (RFC 4180): quoted only when it must be. Text that a spreadsheet would
    run as a formula (a tenant name kept from before names starting so were refused) starts
    with ``'``, which spreadsheets read as "text follows" (OWASP's CSV injection advice);
    numbers (a negative cost) are written elsewhere and never start with it."""
    if value is None:
        return ""
    text = value.strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(value, datetime) else str(value)
    if text.startswith(FORMULA_STARTS):
        text = "'" + text
    if '"' in text or "," in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


class _Fields(dict[Any, str]):
    """A column's values as CSV fields, each distinct value formatted once."""

    def __missing__(self, value: Any) -> str:
        text = self[value] = _field(value)
        return text


def write_csv(rows: Iterable[tuple[Any, ...]]) -> bytes:
    """RFC 4180 CSV with a header row; null is the empty field."""
    return b"".join(csv_chunks(rows))


def csv_chunks(rows: Iterable[tuple[Any, ...]], lines: int | None = None) -> Iterator[bytes]:
    """The CSV of :func:`write_csv` in pieces of ``lines`` lines (``CSV_PIECE_LINES``), each
    ending with CRLF: a month of every tenant's charges is written out (or sent) as it is
    made, not held whole (2.4 million lines took 9 GB)."""
    lines = CSV_PIECE_LINES if lines is None else lines
    formatters = [
        _decimal_text if column.type == DECIMAL else _Fields().__getitem__ for column in COLUMNS
    ]
    join = ",".join
    body = (join([f(v) for f, v in zip(formatters, row, strict=True)]) for row in rows)
    for piece in batches(itertools.chain([join(COLUMN_NAMES)], body), lines):
        yield ("\r\n".join(piece) + "\r\n").encode("utf-8")


def parquet_chunks(rows: Iterable[tuple[Any, ...]], batch: int | None = None) -> Iterator[bytes]:
    """Parquet with typed columns: decimal128(38, 24), timestamp[s, UTC], string; a row group
    of ``batch`` rows (``ROW_GROUP_ROWS``) at a time, each written out (or sent) as it is made,
    and the footer last. Held whole, a month of every tenant's charges was the whole compressed
    file in memory, and made before the API's first byte."""
    batch = ROW_GROUP_ROWS if batch is None else batch
    import pyarrow as pa
    import pyarrow.parquet as pq

    types: dict[str, Any] = {
        STRING: pa.string(),
        JSON: pa.string(),
        DECIMAL: pa.decimal128(38, DECIMAL_SCALE),
        DATETIME: pa.timestamp("s", tz="UTC"),
    }
    tag_prefixes = {"ProviderTagPrefixes": json.dumps([TAG_PREFIX])}
    schema = pa.schema(
        [
            pa.field(c.name, types[c.type], metadata=tag_prefixes if c.name == "Tags" else None)
            for c in COLUMNS
        ],
        metadata={"focus_version": "1.2", "provider": PROVIDER},
    )
    sink = _Drain()
    with pq.ParquetWriter(pa.PythonFile(sink, mode="w"), schema, compression="zstd") as writer:
        groups = batches(rows, batch)
        # No empty row group, but the one of a file without rows.
        for chunk in itertools.chain([next(groups, [])], groups):
            columns = [
                pa.array([row[i] for row in chunk], type=types[c.type])
                for i, c in enumerate(COLUMNS)
            ]
            writer.write_table(pa.Table.from_arrays(columns, schema=schema))
            yield sink.take()
    yield sink.take()  # the footer


class _Drain(io.RawIOBase):
    """A write-only file whose bytes are taken as they come: it counts what was written, as
    the Parquet writer's offsets (``tell``) must, not what it still holds."""

    def __init__(self) -> None:
        super().__init__()
        self._pieces: list[bytes] = []
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        piece = bytes(data)
        self._pieces.append(piece)
        self._written += len(piece)
        return len(piece)

    def tell(self) -> int:
        return self._written

    def take(self) -> bytes:
        taken, self._pieces = b"".join(self._pieces), []
        return taken
