"""YAML as configuration files need it: a key given twice in one mapping is an error, where
PyYAML keeps the last value silently (a price or a weight overridden unseen); and scalars read
as YAML 1.2 reads them, as editors checking files against ``tenants/schema.json`` do, not as
PyYAML's YAML 1.1 (``1e-7`` a string, ``on`` / ``no`` booleans, ``010`` octal).

:func:`load_strict` parses like ``yaml.safe_load`` with :class:`Yaml12Loader` and refuses such
a key; the manifest loader, which reports every problem at once, parses with
:class:`Yaml12Loader` and asks :func:`repeated_keys` of each mapping it walks.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["DuplicateKeyError", "Yaml12Loader", "load_strict", "repeated_keys"]

MERGE_TAG = "tag:yaml.org,2002:merge"
_BOOL, _INT, _FLOAT = (f"tag:yaml.org,2002:{name}" for name in ("bool", "int", "float"))


_SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser where PyYAML was built with it (its wheels are); tags are resolved by the
Python resolvers below either way."""


class Yaml12Loader(_SafeLoader):  # type: ignore[valid-type,misc]
    """``yaml.SafeLoader`` resolving booleans, integers and floats by YAML 1.2's core schema:
    ``true`` / ``false`` only, decimal integers (``0x`` and ``0o`` prefixed ones too), floats
    with or without a point (``1e-7``); null, merge keys and the rest as before."""


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL, _INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
Yaml12Loader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
Yaml12Loader.add_implicit_resolver(
    _FLOAT,
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node)
    return int(text, 0) if text[:2] in ("0x", "0o") else int(text, 10)  # "010" is ten


Yaml12Loader.add_constructor(_INT, _construct_int)


class DuplicateKeyError(yaml.YAMLError):
    """A mapping gives one key twice; the message names the key and both lines."""


def repeated_keys(node: yaml.MappingNode) -> list[tuple[str, int, int]]:
    """Each key given again in this mapping, as (key, line, line of the first): keys compared
    as written, merge keys (``<<: *anchor``) left out, since a key beside one overrides what
    it merges rather than repeating it."""
    first: dict[str, int] = {}
    repeats = []
    for key, _value in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == MERGE_TAG:
            continue
        line = key.start_mark.line + 1
        if key.value in first:
            repeats.append((key.value, line, first[key.value]))
        else:
            first[key.value] = line
    return repeats


class _UniqueKeyLoader(Yaml12Loader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        for key, line, first in repeated_keys(node):
            raise DuplicateKeyError(f"line {line}: key {key!r} given twice (first at line {first})")
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def load_strict(text: str) -> Any:
    """Parse one YAML document like ``yaml.safe_load``; a key given twice is a
    :class:`DuplicateKeyError` (a ``yaml.YAMLError``) naming its lines."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
