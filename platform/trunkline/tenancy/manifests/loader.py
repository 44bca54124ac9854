"""Read manifests from YAML, keeping line numbers, and check them without a database.

Every problem is reported at once, each pointing at file, line and field:
``tenants/examples.yaml:14: Tenant acme: members[0].role: Invalid enum value 'owner'``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import yaml
from jsonschema import Draft202012Validator, ValidationError

from trunkline.errors import InvalidRequest
from trunkline.kit.text import shown
from trunkline.kit.yamlfile import Yaml12Loader, repeated_keys
from trunkline.tenancy.manifests.checks import check_references
from trunkline.tenancy.manifests.documents import (
    FieldPath,
    Located,
    ManifestError,
    ManifestIssue,
    Manifests,
    dotted,
    line_of,
)
from trunkline.tenancy.manifests.schemas import Manifest, manifest_json_schema

_AT_PATH = re.compile(r"\s+-\s+at\s+`\$([^`]*)`$")
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_QUOTED = re.compile(r"'([^']+)'")


def manifest_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        exists = path.exists()  # /dev/null, a pipe
        what = "not a file or a directory of manifests" if exists else "no such file or directory"
        raise InvalidRequest(f"{path}: {what}", param="path")
    return sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())


def load_manifests(path: str | Path, currency: str | None = None) -> Manifests:
    """Parse and check every ``*.yaml`` under ``path``; ``ManifestError`` lists all issues.
    ``currency``: the price book's, when known (cost budgets are amounts of it)."""
    documents: list[Located] = []
    issues: list[ManifestIssue] = []
    for file in manifest_files(Path(path)):
        for value, lines in _documents(file, issues):
            located = _convert(value, str(file), lines, issues)
            if located is not None:
                documents.append(located)
    manifests = Manifests(documents)
    issues.extend(check_references(manifests, currency))
    if issues:
        raise ManifestError(sorted(issues, key=lambda i: (i.file, i.line)))
    return manifests


def _documents(
    file: Path, issues: list[ManifestIssue]
) -> Iterator[tuple[Any, dict[FieldPath, int]]]:
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = file.read_bytes()[: exc.start].count(b"\n") + 1
        issues.append(ManifestIssue(str(file), line, "", f"not UTF-8 text: {exc.reason}"))
        return
    except OSError as exc:  # not readable by this user: a problem listed with the others
        issues.append(ManifestIssue(str(file), 1, "", f"cannot read it: {exc.strerror or exc}"))
        return
    loader = Yaml12Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: dict[FieldPath, int] = {}
            twice: list[tuple[int, str, str]] = []
            _index(node, (), lines, twice)
            document = loader.construct_document(node)
            if twice:  # YAML keeps the last value silently: an issue, which fails the load
                subject = _subject(document) if isinstance(document, dict) else ""
                issues += [ManifestIssue(str(file), *found, subject) for found in twice]
            # Checked still (with the last values), so documents naming it do not report it
            # unknown besides.
            yield document, lines
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        issues.append(ManifestIssue(str(file), line, "", f"YAML syntax: {exc.problem or exc}"))
    finally:
        loader.dispose()


def _index(
    node: yaml.Node,
    path: FieldPath,
    lines: dict[FieldPath, int],
    twice: list[tuple[int, str, str]],
) -> None:
    """Record the line of every field under ``node``; each key given twice in one mapping is
    added to ``twice`` as (line, field, message)."""
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, line, first in repeated_keys(node):
            twice.append((line, dotted((*path, key)), f"given twice (first at line {first})"))
        for key_node, value in node.value:
            child = (*path, str(key_node.value))
            lines.setdefault(child, key_node.start_mark.line + 1)
            _index(value, child, lines, twice)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index(item, (*path, index), lines, twice)


def _convert(
    value: Any, file: str, lines: dict[FieldPath, int], issues: list[ManifestIssue]
) -> Located | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        issues.append(ManifestIssue(file, lines.get((), 1), "", "a document must be a mapping"))
        return None
    subject = _subject(value)
    kind = value.get("kind")
    validator = _validators().get(kind) if isinstance(kind, str) else None
    if validator is None:
        kinds = ", ".join(sorted(_validators()))
        message = f"unknown kind {kind!r}, expected one of {kinds}"
        issues.append(ManifestIssue(file, line_of(lines, ("kind",)), "kind", message, subject))
        return None
    found = [
        issue
        for error in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.path)))
        for issue in _schema_issues(error, file, lines, subject)
    ]
    if found:
        issues.extend(found)
        return None
    try:
        spec = msgspec.convert(value, Manifest)
    except msgspec.ValidationError as exc:  # the JSON schema should have caught it already
        path, message = _error_path(shown(str(exc)))
        issues.append(ManifestIssue(file, line_of(lines, path), dotted(path), message, subject))
        return None
    return Located(spec, file, lines, frozenset(map(str, value)))


def _subject(document: dict[str, Any]) -> str:
    """The document as issues name it, e.g. ``Tenant acme``."""
    return f"{document.get('kind', '?')} {document.get('slug') or document.get('name') or '?'}"


@functools.cache
def _validators() -> dict[str, Draft202012Validator]:
    """One validator per ``kind``, so errors name fields instead of "not valid under anyOf"."""
    schema = manifest_json_schema()
    validators = {}
    for definition in schema["$defs"].values():
        kinds = definition.get("properties", {}).get("kind", {}).get("enum", [])
        if kinds:
            validators[kinds[0]] = Draft202012Validator({"$defs": schema["$defs"], **definition})
    return validators


def _schema_issues(
    error: ValidationError, file: str, lines: dict[FieldPath, int], subject: str
) -> list[ManifestIssue]:
    while error.validator in ("anyOf", "oneOf") and error.context:
        # "not valid under any of the given schemas" names no field: report the deepest cause.
        error = max(error.context, key=lambda e: (len(e.absolute_path), e.validator != "type"))
    path: FieldPath = tuple(error.absolute_path)
    if error.validator == "required" and (named := _QUOTED.match(error.message)):
        field = (*path, named.group(1))
        return [ManifestIssue(file, line_of(lines, path), dotted(field), "is required", subject)]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        return [
            ManifestIssue(
                file, line_of(lines, (*path, key)), dotted((*path, key)), "unknown field", subject
            )
            for key in sorted(set(error.instance) - set(known))
        ]
    message = shown(error.message)
    return [ManifestIssue(file, line_of(lines, path), dotted(path), message, subject)]


def _error_path(text: str) -> tuple[FieldPath, str]:
    found = _AT_PATH.search(text)
    if found is None:
        return (), text
    path: FieldPath = tuple(
        int(index) if index else name for name, index in _PATH_PART.findall(found.group(1))
    )
    return path, text[: found.start()]
