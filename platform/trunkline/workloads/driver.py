"""Replay a workload against real OpenAI-compatible engines (open loop), routed by a policy.

Each request is sent at its arrival time as a streamed ``/v1/completions`` call whose prompt is
its token ids (so the engine sees exactly the tokens the simulator would), with
``ignore_eos`` so it generates exactly ``max_tokens``. Before each routing decision every
endpoint's ``/metrics`` is read, as the gateway's scraper would, and the gateway's own policy
object picks the endpoint. The record keeps the actual send time, so a simulator can replay the
same arrivals.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
import msgspec
from prometheus_client.parser import text_string_to_metric_families

from trunkline.engines.metrics import parse_vllm_metrics
from trunkline.gateway.routing import EndpointLoad, EndpointView, RequestView, RoutingPolicy
from trunkline.workloads.schemas import WorkloadRequest

__all__ = ["HttpEndpoint", "Measured", "inter_token_totals", "replay_http"]


@dataclass(frozen=True, slots=True)
class HttpEndpoint:
    key: str
    url: str
    model: str
    block_size: int = 16


@dataclass(slots=True)
class Measured:
    request_id: str
    endpoint: str
    sent: float
    """Seconds after the replay started."""
    ttft: float = 0.0
    e2e: float = 0.0
    completion_tokens: int = 0
    cached_tokens: int = 0
    error: str | None = None

    @property
    def tpot(self) -> float:
        """Mean inter-token latency: robust to chunks that arrive bunched together."""
        if self.completion_tokens < 2:
            return 0.0
        return (self.e2e - self.ttft) / (self.completion_tokens - 1)


class _Details(msgspec.Struct):
    cached_tokens: int | None = None


class _Usage(msgspec.Struct):
    completion_tokens: int = 0
    prompt_tokens_details: _Details | None = None


class _Chunk(msgspec.Struct):
    choices: list[msgspec.Raw] = []
    usage: _Usage | None = None


_decode_chunk = msgspec.json.Decoder(_Chunk).decode


async def replay_http(
    requests: Sequence[WorkloadRequest],
    endpoints: Sequence[HttpEndpoint],
    policy: RoutingPolicy,
    *,
    client: httpx.AsyncClient,
    token_map: int | None = None,
) -> list[Measured]:
    """Send every request at its arrival; ``token_map`` folds token ids into a smaller vocab."""
    started = time.perf_counter()
    tasks: list[asyncio.Task[Measured]] = []
    for request in requests:
        delay = request.arrival - (time.perf_counter() - started)
        if delay > 0:
            await asyncio.sleep(delay)
        loads = await asyncio.gather(*(_load(client, e) for e in endpoints))
        views = [
            EndpointView(e.key, "real", "local", "cpu", e.block_size, load)
            for e, load in zip(endpoints, loads, strict=True)
        ]
        view = RequestView(
            request.request_id,
            request.tenant,
            "silver",
            endpoints[0].model,
            prompt_tokens=request.prompt.num_tokens,
            max_tokens=request.max_tokens,
            prompt=request.prompt,
        )
        choice = views[policy.rank(view, views)[0]]
        policy.routed(view, choice)
        endpoint = next(e for e in endpoints if e.key == choice.key)
        prompt = request.prompt.token_ids
        if token_map is not None:
            prompt = [100 + token % token_map for token in prompt]
        measured = Measured(request.request_id, endpoint.key, 0.0)
        send = _send(client, endpoint, prompt, request, measured, started)
        tasks.append(asyncio.create_task(send))
    return list(await asyncio.gather(*tasks))


async def inter_token_totals(
    client: httpx.AsyncClient, endpoint: HttpEndpoint
) -> tuple[float, float]:
    """``(sum, count)`` of vLLM's ``vllm:inter_token_latency_seconds`` histogram.

    vLLM times tokens where the engine core produces them, so the difference of two readings
    gives the mean inter-token latency of the requests between, free of the bunching a busy API
    server adds to the streamed chunks.
    """
    response = await client.get(f"{endpoint.url}/metrics")
    totals = {"sum": 0.0, "count": 0.0}
    for family in text_string_to_metric_families(response.text):
        if family.name == "vllm:inter_token_latency_seconds":
            for sample in family.samples:
                suffix = sample.name.rpartition("_")[2]
                if (
                    suffix in totals
                    and sample.labels.get("model_name", endpoint.model) == endpoint.model
                ):
                    totals[suffix] += sample.value
    return totals["sum"], totals["count"]


async def _load(client: httpx.AsyncClient, endpoint: HttpEndpoint) -> EndpointLoad:
    response = await client.get(f"{endpoint.url}/metrics")
    load = parse_vllm_metrics(response.text, model_name=endpoint.model)
    return EndpointLoad(load.running, load.waiting, load.kv_usage)


async def _send(
    client: httpx.AsyncClient,
    endpoint: HttpEndpoint,
    prompt: list[int],
    request: WorkloadRequest,
    measured: Measured,
    started: float,
) -> Measured:
    body = {
        "model": endpoint.model,
        "prompt": prompt,
        "max_tokens": request.max_tokens,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    measured.sent = start - started
    first: float | None = None
    try:
        async with client.stream("POST", f"{endpoint.url}/v1/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = _decode_chunk(line[6:])
                if chunk.choices and first is None:
                    first = time.perf_counter()
                if chunk.usage is not None:
                    measured.completion_tokens = chunk.usage.completion_tokens
                    details = chunk.usage.prompt_tokens_details
                    measured.cached_tokens = (details.cached_tokens or 0) if details else 0
    except httpx.HTTPError as exc:
        measured.error = f"{type(exc).__name__}: {exc}"
        return measured
    end = time.perf_counter()
    measured.ttft = (first or end) - start
    measured.e2e = end - start
    return measured
