"""YAML as configuration files need it: a key given twice in one mapping is an error, where
PyYAML keeps the last value silently (a price or a weight overridden unseen).

:func:`load_strict` parses like ``yaml.safe_load`` and refuses such a key; the manifest loader,
which reports every problem at once, asks :func:`repeated_keys` of each mapping it walks.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["DuplicateKeyError", "load_strict", "repeated_keys"]

MERGE_TAG = "tag:yaml.org,2002:merge"


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


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        for key, line, first in repeated_keys(node):
            raise DuplicateKeyError(f"line {line}: key {key!r} given twice (first at line {first})")
        return super().construct_mapping(node, deep=deep)


def load_strict(text: str) -> Any:
    """Parse one YAML document like ``yaml.safe_load``; a key given twice is a
    :class:`DuplicateKeyError` (a ``yaml.YAMLError``) naming its lines."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
