"""Argument types of the commands that start servers: a value out of range is a usage error
naming the option, not a traceback from the server once it starts."""

from __future__ import annotations

import argparse

__all__ = ["TIME_SCALE_HELP", "listen_port", "time_scale"]

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
