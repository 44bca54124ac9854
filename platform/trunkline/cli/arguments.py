"""Argument types of the commands that start servers or run benchmarks: a value out of range
is a usage error naming the option, not a traceback from the server once it starts (or from
the benchmark once it has run)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

__all__ = ["TIME_SCALE_HELP", "listen_port", "output_dir", "time_scale"]

TIME_SCALE_HELP = (
    "simulated engines' time per step, as a multiple of the modelled one "
    "(0.5: twice as fast; 0: as fast as they can)"
)


def time_scale(text: str) -> float:
    """A simulated engine's time factor: 0 or more."""
    try:
        scale = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not scale >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return scale


def listen_port(text: str) -> int:
    """A TCP port to listen on, 1 to 65535."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port from 1 to 65535, not {number}")
    return number


def output_dir(text: str) -> Path:
    """A directory to write results into: there, or creatable where the first part of it that
    exists is a directory this process may write in. A benchmark found out only when it wrote
    its results, minutes in, with a traceback."""
    path = Path(text)
    existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    if existing == path.absolute() and not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a directory")
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"cannot create {text}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write in {existing}")
    return path
