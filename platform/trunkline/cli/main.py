"""Entry point of the ``trunkline`` command: one sub-command per module."""

from __future__ import annotations

import argparse
import atexit
import codecs
import errno
import gc
import importlib
import importlib.metadata
import io
import os
import sys
from collections.abc import Sequence
from typing import Any

from trunkline.errors import TrunklineError

MODULES: dict[str, tuple[str, ...]] = {
    "servers": ("up", "migrate", "controlplane", "gateway", "worker", "jobs", "beat", "sim"),
    "tenants": ("tenants",),
    "keys": ("keys",),
    "pools": ("pools",),
    "catalog": ("catalog",),
    "quota": ("quota",),
    "bench": ("bench",),
    "billing": ("billing",),
}
"""The commands each module of ``trunkline.cli`` registers, in the order ``--help`` lists them."""

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
"""What a write to a file on a full disk (or past a quota or size limit) fails with."""


class _Commands(argparse._SubParsersAction):  # type: ignore[type-arg]
    """Sub-commands whose own ``--help`` begins with what their parent's list says of them."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        if kwargs.get("help"):
            kwargs.setdefault("description", kwargs["help"])
        parser: argparse.ArgumentParser = super().add_parser(name, **kwargs)
        return parser


class _Parser(argparse.ArgumentParser):
    """A parser whose sub-commands (and theirs, created of this class) are :class:`_Commands`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", "parsers", _Commands)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: with a known command first, only its module's commands.

    Importing every command's module (the ORM, the fleet simulator, the benchmarks) took
    about 2 s before any command ran; ``trunkline gateway`` needs 0.2 s of it and ``trunkline
    keys`` about 1 s. Help, and anything not naming a command, gets them all.
    """
    first = next(iter(sys.argv[1:] if argv is None else argv), None)
    chosen = [name for name, commands in MODULES.items() if first in commands] or list(MODULES)
    parser = _Parser(prog="trunkline", description="Trunkline: multitenant Models-as-a-Service.")
    parser.add_argument("--version", action="version", version=f"trunkline {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in chosen:
        importlib.import_module(f"trunkline.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The exit code of the command in ``argv`` (the ``trunkline`` command's: ``sys.argv``)."""
    if argv is None:
        # The process ends after the command. Python's exit then ran full garbage collections
        # over every object of ~1,400 modules (SQLAlchemy, Litestar...): a second or two
        # after the answer before the prompt came back ("Trunkline stopped." after Ctrl-C,
        # `keys list`). What is frozen is left to the operating system to free.
        atexit.register(gc.freeze)
        argv = utf8_arguments(sys.argv[1:])
    escape_what_cannot_be_shown()
    try:
        # Importing a command's module takes up to 2 s: Ctrl-C then is no traceback either.
        parser = build_parser(argv)
        if not (sys.argv[1:] if argv is None else argv):  # what there is to run
            parser.print_help(sys.stderr)
            return 2
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        return 130
    return run(args)


def utf8_arguments(argv: Sequence[str]) -> list[str]:
    """``argv`` read as UTF-8 where the locale's encoding is ASCII (``LANG=C`` with Python's
    UTF-8 mode off), as Python reads them by default under the C locale: ``--name clé`` came as
    escapes of its bytes, which the database refused with a traceback. Another locale's
    encoding (Latin-1) is the one its shell passes, and Python read it right. An argument that
    is not UTF-8 either is left as Python gave it."""
    if codecs.lookup(sys.getfilesystemencoding()).name != "ascii":
        return list(argv)
    return [os.fsencode(arg).decode("utf-8", "surrogateescape") for arg in argv]


def escape_what_cannot_be_shown() -> None:
    """Standard output and error print what their encoding cannot show as ``\\xe9`` escapes:
    under an ASCII locale a key or tenant named outside ASCII ended the command on
    UnicodeEncodeError's traceback (stderr escapes by default; stdout did not)."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors != "backslashreplace":
            stream.reconfigure(errors="backslashreplace")


def _version() -> str:
    try:
        return importlib.metadata.version("trunkline")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "(not installed)"


def run(args: argparse.Namespace) -> int:
    """The parsed command's exit code; a refusal or the database's is one line on stderr."""
    if sys.stdout is None and args.command not in MODULES["servers"]:
        # Started with it closed (`>&-`): what the command is for (a key's secret) would be
        # lost. A server (its log is on stderr) runs all the same.
        print("error: standard output is closed: nothing could be shown", file=sys.stderr)
        return 2
    try:
        code = int(args.func(args) or 0)
        if sys.stdout is not None:
            sys.stdout.flush()  # here, where a reader that left (BrokenPipeError) is caught
        return code
    except TrunklineError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader left (`| head`): what is left to write goes nowhere, not into a traceback
        # when Python flushes stdout at exit.
        _discard_stdout()
        return 1
    except OSError as exc:
        # A full disk behind `> file`: the files commands write themselves (export --out)
        # are named in their errors, standard output's has no name.
        if exc.errno not in _FULL or exc.filename is not None:
            raise
        print(f"error: cannot write standard output: {exc.strerror}", file=sys.stderr)
        _discard_stdout()
        return 1
    except Exception as exc:
        refused = database_refusal(exc)
        if refused is None:
            raise
        print(f"error: the database refused it: {refused}", file=sys.stderr)
        return 2


def _discard_stdout() -> None:
    """What is left for standard output goes nowhere, not into a traceback at exit."""
    if sys.stdout is not None:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def database_refusal(exc: BaseException) -> str | None:
    """The database's own first line when ``exc`` is the database refusing a statement (a
    value it cannot store, a constraint) that no check caught first; None for anything else.

    SQLAlchemy is only looked at when a command loaded it: ``trunkline gateway`` never does.
    """
    errors = sys.modules.get("sqlalchemy.exc")
    if errors is None or not isinstance(exc, errors.DBAPIError):
        return None
    from trunkline.kit.db import driver_message

    return driver_message(exc)


if __name__ == "__main__":
    sys.exit(main())
