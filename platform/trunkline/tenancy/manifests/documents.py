"""Parsed manifest documents, where each came from, and the issues found in them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TypeVar

from trunkline.errors import InvalidRequest
from trunkline.tenancy.manifests.schemas import (
    CascadeSpec,
    FlavorSpec,
    Manifest,
    ModelSpec,
    PoolSpec,
    TenantSpec,
    TierSpec,
    spec_name,
)

FieldPath = tuple[str | int, ...]
SpecT = TypeVar("SpecT", TierSpec, FlavorSpec, ModelSpec, PoolSpec, CascadeSpec, TenantSpec)


@dataclass(frozen=True)
class ManifestIssue:
    file: str
    line: int
    field: str
    message: str
    subject: str = ""
    """The document the issue is in, e.g. ``Tenant acme``."""

    def __str__(self) -> str:
        where = f"{self.subject}: " if self.subject else ""
        return f"{self.file}:{self.line}: {where}{self.field or '(document)'}: {self.message}"


class ManifestError(InvalidRequest):
    """Manifests that cannot be applied; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ManifestIssue]) -> None:
        super().__init__("\n".join(str(i) for i in issues), param="manifests")
        self.issues = issues


@dataclass(frozen=True)
class Located:
    """One parsed document and where it came from."""

    spec: Manifest
    file: str
    lines: dict[FieldPath, int] = field(repr=False)
    given: frozenset[str] = frozenset()
    """The fields the document writes out: only these change an object that exists already."""

    @property
    def subject(self) -> str:
        return f"{type(self.spec).__name__.removesuffix('Spec')} {spec_name(self.spec)}"

    def line_of(self, path: FieldPath) -> int:
        return line_of(self.lines, path)

    def issue(self, path: FieldPath, message: str) -> ManifestIssue:
        return ManifestIssue(self.file, self.line_of(path), dotted(path), message, self.subject)


@dataclass(frozen=True)
class Manifests:
    documents: list[Located]

    def of(self, kind: type[SpecT]) -> list[SpecT]:
        return [d.spec for d in self.documents if isinstance(d.spec, kind)]

    def located(self, kind: type[SpecT]) -> list[Located]:
        """The documents of ``kind``, with where each came from and what it writes out."""
        return [d for d in self.documents if isinstance(d.spec, kind)]

    @property
    def tiers(self) -> list[TierSpec]:
        return self.of(TierSpec)

    @property
    def flavors(self) -> list[FlavorSpec]:
        return self.of(FlavorSpec)

    @property
    def models(self) -> list[ModelSpec]:
        return self.of(ModelSpec)

    @property
    def pools(self) -> list[PoolSpec]:
        return self.of(PoolSpec)

    @property
    def cascades(self) -> list[CascadeSpec]:
        return self.of(CascadeSpec)

    @property
    def tenants(self) -> list[TenantSpec]:
        return self.of(TenantSpec)


def dotted(path: FieldPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def undotted(text: str) -> FieldPath:
    """``dotted``'s inverse: ``quota.tenant.cost_per_month`` -> its path (``""``: the document)."""
    path: list[str | int] = []
    for part in filter(None, re.split(r"\.|(\[\d+\])", text)):
        path.append(int(part[1:-1]) if part.startswith("[") else part)
    return tuple(path)


def line_of(lines: dict[FieldPath, int], path: FieldPath) -> int:
    """The line of ``path``, or of its closest parent that has one."""
    while path not in lines and path:
        path = path[:-1]
    return lines.get(path, 1)
