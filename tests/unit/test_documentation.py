"""What an operator can set or run is named in the documentation (README.md, docs/)."""

from __future__ import annotations

import argparse
import functools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from trunkline.cli.main import build_parser
from trunkline.settings import Settings
from trunkline.worker.jobs import JobSettings

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def _documentation() -> str:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return re.sub(r"\s+", " ", "\n".join(page.read_text() for page in pages))


def _variables(model: type[BaseModel], prefix: str) -> Iterator[str]:
    for name, field in model.model_fields.items():
        variable, kind = f"{prefix}{name.upper()}", field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            yield from _variables(kind, f"{variable}__")
        else:
            yield variable


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield " ".join((*path, name))
                yield from _commands(sub, (*path, name))


_METRIC_MADE = re.compile(
    r"\b(?:Counter|Gauge|Histogram|Summary)(?:MetricFamily)?\(\s*f?\"(trunkline_[\w{}]+)\""
)


def _metric_names() -> Iterator[str]:
    """Every name given to a Prometheus metric under platform/, as a pattern (an f-string's
    fields match any word)."""
    for source in sorted((ROOT / "platform").rglob("*.py")):
        for match in _METRIC_MADE.finditer(source.read_text()):
            yield re.sub(r"\{\w+\}", r"\\w+", match.group(1))


def _named_commands(text: str) -> set[str]:
    """``trunkline a b`` and the alternatives of ``trunkline keys create/list``."""
    named = set()
    for match in re.finditer(r"trunkline ([\w-]+(?:/[\w-]+)*(?: [\w-]+(?:/[\w-]+)*)*)", text):
        prefixes: list[tuple[str, ...]] = [()]
        for word in match.group(1).split(" "):
            prefixes = [(*p, alternative) for p in prefixes for alternative in word.split("/")]
            named.update(" ".join(p) for p in prefixes)
    return named


VARIABLES = [*_variables(Settings, "TRUNKLINE_"), *_variables(JobSettings, "TRUNKLINE_JOBS__")]


@pytest.mark.parametrize("variable", VARIABLES)
def test_every_setting_is_documented(variable: str) -> None:
    # Pages name a group's settings by their last part once the group is named: `__PORT`,
    # or `SCRAPE_INTERVAL_S` in the list of `TRUNKLINE_GATEWAY__ENGINES__…`.
    leaf = variable.rsplit("__", 1)[-1]
    text = _documentation()
    assert variable in text or f"__{leaf}`" in text or f"`{leaf}`" in text, variable


@pytest.mark.parametrize("command", sorted(_commands(build_parser(["--help"]))))
def test_every_command_is_documented(command: str) -> None:
    assert command in _named_commands(_documentation()), f"trunkline {command}"


@pytest.mark.parametrize("metric", sorted(set(_metric_names())))
def test_every_metric_is_documented(metric: str) -> None:
    assert re.search(rf"\b{metric}(_total|_bucket|_sum|_count)?\b", _documentation()), metric
