"""Export files that appear whole or not at all: written beside their path (``.partial``) and
renamed once whole, so a failure part-way (a full disk, a line that cannot be written) never
leaves a file that looks like a complete export."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

from trunkline.errors import InvalidRequest


def partial_of(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def stage(path: Path, chunks: Iterable[bytes]) -> Path:
    """Write ``chunks`` beside ``path`` as they come, and return that file (rename it to
    ``path`` once nothing else can fail). A failure removes it."""
    return _write_to(path, partial_of(path), chunks)


def write_file(path: Path, chunks: Iterable[bytes]) -> None:
    """``chunks`` to ``path``, appearing once whole. What is not a regular file
    (``/dev/stdout``, a pipe) is written to as the export comes."""
    if path.exists() and not path.is_file():
        _write_to(path, path, chunks)
    else:
        publish(stage(path, chunks), path)


def append_file(path: Path, chunks: Iterable[bytes]) -> None:
    """``chunks`` after what ``path`` holds, the whole appearing at once as :func:`write_file`
    writes it: a failure part-way leaves the file as it was."""
    if path.is_file():
        chunks = itertools.chain(_read(path), chunks)
    write_file(path, chunks)


def _read(path: Path) -> Iterator[bytes]:
    try:
        with path.open("rb") as kept:
            yield from iter(lambda: kept.read(1 << 20), b"")
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path}: {exc.strerror or exc}", param="out") from exc


def publish(staged: Path, path: Path) -> None:
    """Rename the file :func:`stage` wrote to ``path`` (removed if that fails)."""
    try:
        staged.replace(path)
    except OSError as exc:
        staged.unlink(missing_ok=True)
        raise InvalidRequest(f"cannot write {path}: {exc.strerror or exc}", param="out") from exc


def _write_to(path: Path, target: Path, chunks: Iterable[bytes]) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
    except BaseException as exc:
        if target != path:
            with contextlib.suppress(OSError):
                target.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise InvalidRequest(
                f"cannot write {path}: {exc.strerror or exc}", param="out"
            ) from exc
        raise
    return target
