"""A watchdog that says where an event loop was when it stopped answering: a test whose
gateway, clients and pytest share one loop, on a loaded machine, tells a loop blocked in Python
code (the stack shows where) from a process starved of CPU (the loop thread waits in select).

What it writes goes to stderr, which pytest shows for a failed test only."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import sys
import threading
import time
from collections.abc import AsyncIterator

__all__ = ["loop_watchdog"]


@contextlib.asynccontextmanager
async def loop_watchdog(stall_s: float = 2.0) -> AsyncIterator[None]:
    """While the block runs, dump every thread's stack once for each time the running loop
    does not run a callback for ``stall_s``."""
    loop = asyncio.get_running_loop()
    answered = threading.Event()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            answered.clear()
            asked = time.monotonic()
            loop.call_soon_threadsafe(answered.set)
            if answered.wait(stall_s) or done.is_set():
                done.wait(0.1)
                continue
            print(f"\nevent loop stalled for over {stall_s} s; every thread:", file=sys.stderr)
            faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
            answered.wait()  # until it runs again: one dump per stall
            waited = time.monotonic() - asked
            print(f"event loop ran again after {waited:.1f} s", file=sys.stderr)

    watcher = threading.Thread(target=watch, name="loop-watchdog", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        answered.set()
        watcher.join()
