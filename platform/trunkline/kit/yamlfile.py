"""YAML as configuration files need it: ``safe_load`` that refuses a key given twice in one
mapping, where PyYAML keeps the last value silently (a price or a weight overridden unseen)."""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["DuplicateKeyError", "load_strict"]


class DuplicateKeyError(yaml.YAMLError):
    """A mapping gives one key twice; the message names the key and both lines."""


class _UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str | int | float | bool | None):
                continue  # unhashable keys are the base class's error to report
            if key in seen:
                raise DuplicateKeyError(
                    f"line {line}: key {key!r} given twice (first at line {seen[key]})"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_strict(text: str) -> Any:
    """Parse one YAML document like ``yaml.safe_load``; a key given twice is a
    :class:`DuplicateKeyError` (a ``yaml.YAMLError``) naming its lines."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
