"""What an apply changed (its report), and the create-or-update every kind of document shares."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from trunkline.errors import TrunklineError
from trunkline.tenancy.changes import assign
from trunkline.tenancy.manifests.documents import Located, undotted


@dataclass(frozen=True)
class Change:
    kind: str
    name: str
    action: str
    """``created`` or ``updated``."""
    details: tuple[str, ...] = ()

    def __str__(self) -> str:
        text = f"{self.kind} {self.name} {self.action}"
        return text + (": " + "; ".join(self.details) if self.details else "")


@dataclass
class ApplyReport:
    changes: list[Change] = field(default_factory=list)
    _created: dict[tuple[str, str], int] = field(default_factory=dict, init=False, repr=False)
    """(kind, name) -> the index of its ``created`` change: details attach to it without a
    search of every change (a first apply of thousands of tenants searched millions)."""

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def lines(self) -> list[str]:
        return [str(c) for c in self.changes] or ["no changes"]

    def created(self, kind: str, name: str) -> None:
        self._created[kind, name] = len(self.changes)
        self.changes.append(Change(kind, name, "created"))

    def record(self, kind: str, name: str, details: list[str]) -> None:
        """Attach details to the ``created`` change of this object, or log an ``updated`` one."""
        if not details:
            return
        index = self._created.get((kind, name))
        if index is None:
            self.changes.append(Change(kind, name, "updated", tuple(details)))
        else:
            change = self.changes[index]
            self.changes[index] = Change(kind, name, "created", (*change.details, *details))


@contextlib.contextmanager
def located_at(document: Located) -> Iterator[None]:
    """Name the file, line and document of what the database refuses (a check only it can
    make, such as a tenant's last tenant_admin or a cascade's name), as validation does."""
    try:
        yield
    except TrunklineError as exc:
        line = document.line_of(undotted(exc.param or ""))
        where = f"{document.file}:{line}: {document.subject}: "
        raise type(exc)(where + exc.message, param=exc.param, reason=exc.reason) from exc


def given_values(
    values: Mapping[str, Any], given: frozenset[str], columns: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The ``values`` (by column) of the fields a document writes out (``columns``: a field's
    column where the names differ). Only these update an object that exists: a field left out
    keeps what the database holds, perhaps set through the API or the CLI (a tenant's regions
    were reset to "anywhere" by a manifest that did not mention them, on every `trunkline
    up`); a new object takes the defaults."""
    named = {(columns or {}).get(f, f) for f in given}
    return {column: value for column, value in values.items() if column in named}


def upsert(
    session: Session,
    report: ApplyReport,
    kind: str,
    name: str,
    row: Any | None,
    create: Callable[[], Any],
    values: Mapping[str, Any],
    *,
    flush: bool = True,
    named: Mapping[str, tuple[str, Mapping[Any, str]]] | None = None,
) -> tuple[Any, list[str]]:
    """Create ``row`` or update its ``values``; returns the row and the details logged so far.
    ``flush=False``: a row created is written at the session's next flush (its id must be set
    by ``create``), with the others of its kind at once. ``named``: a column holding another
    row's id -> the field the document names it by and the names of its old and new ids."""
    details: list[str] = []
    if row is None:
        row = create()
        session.add(row)
        if flush:
            session.flush()
        report.created(kind, name)
    elif diff := assign(row, values):
        details += [_change(key, old, new, named or {}) for key, (old, new) in diff.items()]
    return row, details


def _change(
    column: str, old: Any, new: Any, named: Mapping[str, tuple[str, Mapping[Any, str]]]
) -> str:
    """A change as the report says it: a row named as the document names it (``model 'a' ->
    'b'``, not its id), an amount of money as written (``3.5``, not ``Decimal('3.5000')``)."""
    field = column
    if column in named:
        field, names = named[column]
        old, new = names.get(old, old), names.get(new, new)
    return f"{field} {_shown(old)} -> {_shown(new)}"


def _shown(value: Any) -> str:
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    return repr(value)
