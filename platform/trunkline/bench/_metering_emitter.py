"""The gateway's side of ``trunkline bench metering``, in a process of its own.

``python -m trunkline.bench._metering_emitter --redis URL --stream S --universe FILE --events N
--prefix P`` emits N synthetic usage events through :class:`RedisUsageEmitter` (the gateway's
emitter) as fast as it can. It prints one JSON line when it starts emitting (``started_at``)
and one when it is done: how many, their tokens, how long.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path

import redis.asyncio as aioredis

from trunkline.bench._metering_load import Universe, records
from trunkline.metering.redis_stream import RedisUsageEmitter


async def _emit(url: str, stream: str, events: list[object]) -> float:
    client = aioredis.Redis.from_url(url)
    emitter = RedisUsageEmitter(client, stream, max_batch=1000)
    await emitter.start()
    started = time.perf_counter()
    for index, event in enumerate(events):
        emitter.emit(event)  # type: ignore[arg-type]
        if index % 1000 == 999:
            await asyncio.sleep(0)  # let the flusher run, as a serving gateway would
    await emitter.close()
    elapsed = time.perf_counter() - started
    await client.aclose()
    return elapsed


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--universe", type=Path, required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--prefix", default="pipe")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    events = records(Universe.load(args.universe), args.events, args.prefix, args.seed)
    started_at = time.time()
    print(json.dumps({"started_at": started_at}), flush=True)
    seconds = asyncio.run(_emit(args.redis, args.stream, list(events)))
    tokens = sum(e.prompt_tokens + e.completion_tokens for e in events)
    report = {
        "emitted": len(events),
        "tokens": tokens,
        "seconds": seconds,
        "started_at": started_at,
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
