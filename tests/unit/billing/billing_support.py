"""Helpers of the billing tests: the months they bill and their FOCUS exports read back."""

from __future__ import annotations

import csv
import io
from decimal import Decimal

from sqlalchemy.orm import Session, sessionmaker

from trunkline.billing.periods import parse_period
from trunkline.billing.service import export_period
from trunkline.kit.db import transaction

NOV, DEC = parse_period("2026-11"), parse_period("2026-12")


def focus(
    factory: sessionmaker[Session], period: str = "2026-11", **kw: object
) -> list[dict[str, str]]:
    with transaction(factory) as session:
        body = export_period(session, parse_period(period), "focus-csv", **kw).body  # type: ignore[arg-type]
    return list(csv.DictReader(io.StringIO(body.decode())))


def billed(rows: list[dict[str, str]], **match: str) -> Decimal:
    selected = [r for r in rows if all(r[k] == v for k, v in match.items())]
    return sum((Decimal(r["BilledCost"]) for r in selected), Decimal(0))
