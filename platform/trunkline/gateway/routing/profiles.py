"""Declarative routing profiles: YAML naming the plugins of a pipeline, validated with msgspec.

A profile::

    name: prefix-aware
    filters: [healthy, residency, tier-pools, model]
    scorers:
      - {name: prefix-affinity, weight: 3, params: {mode: approximate}}
      - {name: queue-depth, weight: 1}
    balance: {load_factor: 1.25, headroom: 4}   # optional: sticky until saturated
    picker: {name: max-score, seed: 0}

The bundled profiles live in ``profiles/*.yaml`` beside this module; any other file loads with
:func:`load_profile`. A bad profile raises :class:`~trunkline.errors.ConfigurationError` naming
the file, the line and the field (``prefix-aware.yaml:6: scorers[1].weight: must be >= 0``).
Files are read when a policy is first made, never at import.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

import msgspec
import yaml

from trunkline.errors import ConfigurationError
from trunkline.gateway.routing.pipeline import Balance, PipelinePolicy, WeightedScorer
from trunkline.gateway.routing.registry import FILTERS, PICKERS, SCORERS
from trunkline.kit.yamlfile import MERGE_TAG, Yaml12Loader, load_strict

__all__ = ["BUNDLED_DIR", "RoutingProfile", "bundled_profile", "load_profile", "parse_profile"]

BUNDLED_DIR = Path(__file__).with_name("profiles")


class ScorerSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: str
    weight: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class BalanceSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    load_factor: Annotated[float, msgspec.Meta(ge=1)] = 1.25
    headroom: Annotated[float, msgspec.Meta(ge=0)] = 4.0


class PickerSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: str = "max-score"
    seed: int = 0


class RoutingProfile(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    name: str
    description: str = ""
    filters: list[str] = msgspec.field(default_factory=list)
    scorers: list[ScorerSpec] = msgspec.field(default_factory=list)
    balance: BalanceSpec | None = None
    picker: PickerSpec = msgspec.field(default_factory=PickerSpec)

    def build(self) -> PipelinePolicy:
        """A fresh policy (its own indexes and random stream) from this validated profile."""
        return PipelinePolicy(
            self.name,
            filters=[FILTERS[name]() for name in self.filters],
            scorers=[
                WeightedScorer(
                    SCORERS[s.name].build(msgspec.convert(s.params, SCORERS[s.name].params)),
                    s.weight,
                )
                for s in self.scorers
            ],
            picker=PICKERS[self.picker.name](self.picker.seed),
            balance=(
                Balance(self.balance.load_factor, self.balance.headroom) if self.balance else None
            ),
        )


def load_profile(path: Path) -> RoutingProfile:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read routing profile: {exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # saved in another encoding (Latin-1, a Windows one)
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigurationError(
            f"{path}:{line}: not UTF-8 text (byte {raw[exc.start]:#04x}); save it as UTF-8",
            extra={"file": str(path), "line": line},
        ) from None
    try:
        data = load_strict(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: not valid YAML: {exc}") from exc
    return parse_profile(data, source=str(path), lines=_field_lines(text))


def parse_profile(
    data: Any, *, source: str, lines: Mapping[str, int] | None = None
) -> RoutingProfile:
    """Validate a profile's parsed YAML; ``source`` names it in errors, and ``lines`` (the line
    of each field, by its path: ``scorers[1].weight``) says where in it."""
    try:
        return _validated(data)
    except _Invalid as invalid:
        where = invalid.path or "(top level)"
        line = _line_of(lines, invalid.path, invalid.message) if lines else None
        at = f"{source}:{line}" if line else source
        raise ConfigurationError(
            f"{at}: {where}: {invalid.message}",
            param=invalid.path or None,
            extra={"file": source, "line": line},
        ) from None


class _Invalid(Exception):
    """What is wrong with a profile, and at which field (``""``: the whole of it)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


def _validated(data: Any) -> RoutingProfile:
    if data is None:  # an empty file, or comments only
        raise _Invalid("", "the profile is empty; it needs at least a `name`")
    try:
        profile = msgspec.convert(data, RoutingProfile)
    except msgspec.ValidationError as exc:
        raise _Invalid(*_split(str(exc), data)) from None
    _check_finite(profile)
    for index, name in enumerate(profile.filters):
        if name not in FILTERS:
            raise _Invalid(f"filters[{index}]", _unknown("filter", name, FILTERS))
        _check_once("filters", "", profile.filters, index)
    scorer_names = [scorer.name for scorer in profile.scorers]
    for index, scorer in enumerate(profile.scorers):
        plugin = SCORERS.get(scorer.name)
        if plugin is None:
            raise _Invalid(f"scorers[{index}].name", _unknown("scorer", scorer.name, SCORERS))
        _check_once("scorers", ".name", scorer_names, index)
        try:
            msgspec.convert(scorer.params, plugin.params)
        except msgspec.ValidationError as exc:
            path, message = _split(str(exc), scorer.params)
            where = f"scorers[{index}].params" + (f".{path}" if path else "")
            raise _Invalid(where, message) from None
    if profile.picker.name not in PICKERS:
        raise _Invalid("picker.name", _unknown("picker", profile.picker.name, PICKERS))
    return profile


def _check_once(field: str, suffix: str, names: list[str], index: int) -> None:
    """A plugin named twice is a slip (another one was meant): two scorers of one name weigh
    it twice unseen, and a second prefix-affinity scorer's index is never fed KV events."""
    first = names.index(names[index])
    if first != index:
        where = f"{field}[{index}]{suffix}"
        raise _Invalid(where, f"{names[index]!r} is named twice (first at {field}[{first}])")


def _check_finite(profile: RoutingProfile) -> None:
    """msgspec's bounds let ``.inf`` through: an infinite weight makes every score NaN (and the
    picker fail on each request), an infinite balance term switches the rule off unseen."""
    numbers = [(f"scorers[{i}].weight", s.weight) for i, s in enumerate(profile.scorers)]
    if profile.balance is not None:
        numbers += [
            ("balance.load_factor", profile.balance.load_factor),
            ("balance.headroom", profile.balance.headroom),
        ]
    for where, value in numbers:
        if not math.isfinite(value):
            raise _Invalid(where, "must be a finite number")
    if not math.isfinite(sum(s.weight for s in profile.scorers)):  # 1e308 + 1e308 is inf
        raise _Invalid("scorers", "the weights' sum must be a finite number")


@lru_cache(maxsize=32)
def bundled_profile(name: str) -> RoutingProfile:
    """The profile shipped as ``profiles/<name>.yaml`` (parsed once per process)."""
    return load_profile(BUNDLED_DIR / f"{name}.yaml")


def _unknown(kind: str, name: str, known: Any) -> str:
    return f"unknown {kind} {name!r}; known: {', '.join(sorted(known))}"


_AT = re.compile(r"^(?P<message>.*) - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`$", re.DOTALL)
_BOUND = re.compile(r"^Expected `\w+` (?P<op>>=|<=|>|<) (?P<value>\S+)$")
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")


def _split(text: str, data: Any) -> tuple[str, str]:
    """msgspec's ``Expected `float` >= 0.0 - at `$.scorers[1].weight``` → path and message;
    ``data`` is what was validated, for what msgspec's message leaves out (which key is not a
    name, a bound failed by NaN)."""
    match = _AT.match(text)
    path, message = (match["path"].lstrip("."), match["message"]) if match else ("", text)
    if match and match["key"]:  # a key such as ``16:`` or ``~:``, read as a number or null
        keys = _at(data, path)
        bad = next((k for k in keys if not isinstance(k, str)), None) if keys else None
        written = "null" if bad is None else str(bad).lower() if isinstance(bad, bool) else bad
        return path, f"key {written} is not a field name (keys are names, such as `weight`)"
    bound = _BOUND.match(message)
    if bound:
        value = bound["value"]
        value = value[:-2] if value.endswith(".0") else value
        message = f"must be {bound['op']} {value}"
        number = _at(data, path)
        if isinstance(number, float) and math.isnan(number):
            message = "must be a finite number"
    return path, message


def _at(data: Any, path: str) -> Any:
    """The value at ``path`` (``scorers[1].weight``) in parsed YAML; None where there is none."""
    for name, index in _STEP.findall(f".{path}" if path else path):
        if name and isinstance(data, dict):
            data = data.get(name)
        elif index and isinstance(data, list) and int(index) < len(data):
            data = data[int(index)]
        else:
            return None
    return data


_UNKNOWN_FIELD = re.compile(
    r"^(?:Object contains unknown field `(?P<field>[^`]+)`|key (?P<key>\S+) is not a field)"
)
_LAST_STEP = re.compile(r"(?:\.[^.\[]+|\[\d+\])$")


def _line_of(lines: Mapping[str, int], path: str, message: str) -> int | None:
    """The line of the field at ``path`` (of the unknown field or the key the message names,
    if it does), else of its closest parent written in the file."""
    unknown = _UNKNOWN_FIELD.match(message)
    if unknown:
        field = unknown["field"] or unknown["key"]
        path = f"{path}.{field}" if path else field
    while path not in lines and path:
        parent = _LAST_STEP.sub("", path)
        path = parent if parent != path else ""  # ``nom``: a top-level field, the root next
    return lines.get(path)


def _key_name(key: yaml.Node) -> str:
    """A key as errors name it (see _split): ``~`` and ``null`` as null, ``True`` as true, a
    number as Python writes it (``1e3`` as 1000.0, ``0x10`` as 16)."""
    kind = key.tag.rsplit(":", 1)[-1]
    if kind == "null":
        return "null"
    if kind == "bool":
        return str(key.value).lower()
    if kind in ("int", "float") and isinstance(key, yaml.ScalarNode):
        return str(load_strict(key.value))
    return str(key.value)


_MAX_STEPS = 100_000
"""Nodes visited at most when placing fields: lists of anchors holding the one above twice
(``&b [*a, *a]``, ``&c [*b, *b]``…) name a field by exponentially many paths. A profile is
far smaller; past this, an error is placed at the nearest field already placed."""


def _field_lines(text: str) -> dict[str, int]:
    """The line of every field of a profile's YAML, by its path as errors name it."""
    lines: dict[str, int] = {}
    walking: set[int] = set()  # the nodes above: an anchor may hold itself (``&a [*a]``)
    steps = 0

    def walk(node: yaml.Node, path: str) -> None:
        nonlocal steps
        steps += 1
        if steps > _MAX_STEPS:
            return
        lines.setdefault(path, node.start_mark.line + 1)
        if id(node) in walking:
            return
        walking.add(id(node))
        if isinstance(node, yaml.MappingNode):
            merged: list[yaml.Node] = []
            for key, value in node.value:
                if key.tag == MERGE_TAG:  # its fields land here, unless written here too
                    merged += value.value if isinstance(value, yaml.SequenceNode) else [value]
                    continue
                name = _key_name(key)
                child = f"{path}.{name}" if path else name
                lines.setdefault(child, key.start_mark.line + 1)
                walk(value, child)
            for mapping in merged:
                walk(mapping, path)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, f"{path}[{index}]")
        walking.discard(id(node))

    root = yaml.compose(text, Loader=Yaml12Loader)
    if root is not None:
        walk(root, "")
    return lines
