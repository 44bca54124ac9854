"""The load of the quota-accuracy benchmark: concurrent streaming clients that honour Retry-After.

Each client sticks to one gateway, sends streamed chat completions back to back and, refused
with a 429, waits ``retry-after-ms`` as the OpenAI SDKs do, so refused clients come back
together when the window turns: the burst that tells accounting schemes apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from trunkline.quota.estimate import estimate_prompt_tokens

PROMPT = "Our router drops packets when the uplink saturates. Explain why, then list remedies."
ALIAS = "bench-chat"


@dataclass(frozen=True, slots=True)
class Record:
    variant: str
    started: float
    """Epoch seconds when the request was sent."""
    status: int
    tokens: int
    """Prompt plus completion tokens the engine reported (0 unless the answer completed)."""


@dataclass
class Load:
    gateway_urls: list[str]
    keys: dict[str, str]
    """Variant -> the API key of its tenant."""
    clients: int
    """Per variant."""
    min_tokens: int
    max_tokens: int
    rng: random.Random


def body(max_tokens: int) -> dict[str, Any]:
    return {
        "model": ALIAS,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def one_reservation(max_tokens: int) -> int:
    """The most one request of the load reserves: what the gateway estimates, exactly."""
    return estimate_prompt_tokens("chat", body(max_tokens)) + max_tokens


async def drive(
    load: Load, minutes: list[int], read_after_s: float, read: Callable[[int], None]
) -> list[Record]:
    """Run the clients; ``read(minute)`` once each minute has ended ``read_after_s`` ago (the
    clients stop just before the last read). Returns every request the clients made."""
    records: list[Record] = []
    connections = httpx.Limits(max_connections=4 * load.clients, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=120.0, limits=connections, trust_env=False) as client:
        tasks = [
            asyncio.create_task(_client(client, load, variant, index, records))
            for variant in load.keys
            for index in range(load.clients)
        ]
        try:
            for minute in minutes:
                await asyncio.sleep(max(0.0, (minute + 1) * 60 + read_after_s - time.time()))
                if minute == minutes[-1]:
                    _stop(tasks)
                await asyncio.to_thread(read, minute)
        finally:
            _stop(tasks)
            await asyncio.gather(*tasks, return_exceptions=True)
    return records


def _stop(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()


async def _client(
    client: httpx.AsyncClient, load: Load, variant: str, index: int, records: list[Record]
) -> None:
    url = load.gateway_urls[index % len(load.gateway_urls)] + "/v1/chat/completions"
    headers = {"authorization": f"Bearer {load.keys[variant]}"}
    await asyncio.sleep(load.rng.random())  # do not start in lockstep
    while True:
        started = time.time()
        payload = body(load.rng.randint(load.min_tokens, load.max_tokens))
        wait_s = 0.0
        try:
            async with client.stream("POST", url, json=payload, headers=headers) as response:
                tokens = await _usage(response) if response.status_code == 200 else 0
                if response.status_code != 200:
                    await response.aread()
                    wait_s = int(response.headers.get("retry-after-ms", "1000")) / 1000
                records.append(Record(variant, started, response.status_code, tokens))
        except httpx.HTTPError:
            records.append(Record(variant, started, 599, 0))
            wait_s = 1.0
        await asyncio.sleep(wait_s)


async def _usage(response: httpx.Response) -> int:
    tokens = 0
    async for line in response.aiter_lines():
        if not line.startswith("data: {") or '"usage"' not in line:
            continue
        with contextlib.suppress(ValueError):
            usage = json.loads(line[6:]).get("usage")
            if usage:
                tokens = int(usage["prompt_tokens"]) + int(usage["completion_tokens"])
    return tokens
