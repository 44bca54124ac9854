"""Every request through a real gateway is metered, end to end on Redis and PostgreSQL: a
completed stream, a stream the client walked away from, and a request no engine could serve;
cached tokens are priced as cached, the cancelled stream is billed, the failure only metered."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from sqlalchemy import select

from integration.metering.pipeline_support import STREAM, reader
from support.servers import free_port
from trunkline.apps import serving
from trunkline.apps.gateway import create_gateway_app
from trunkline.apps.runtime import Runtime
from trunkline.auth.principal import Principal
from trunkline.billing.exports import export_period
from trunkline.billing.periods import month_of
from trunkline.keys.schemas import ApiKeyCreate
from trunkline.keys.service import create_key
from trunkline.kit.db import transaction
from trunkline.kit.ids import utcnow
from trunkline.metering.consumer import UsageConsumer
from trunkline.metering.redis_stream import RedisUsageEmitter
from trunkline.metering.rollups import rollup_usage
from trunkline.models import Project, Tenant, UsageEvent
from trunkline.pools.service import set_pool_endpoints
from trunkline.quota.estimate import estimate_prompt_tokens
from trunkline.settings import GatewaySettings
from trunkline.tenancy.manifests import apply_manifests
from unit.controlplane.cp_support import TENANTS_DIR, make_runtime

USAGE = {
    "prompt_tokens": 2000,
    "completion_tokens": 3,
    "prompt_tokens_details": {"cached_tokens": 1500},
}


def chunk(data: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(data).encode() + b"\n\n"


class SlowStream(httpx.AsyncByteStream):
    """An engine streaming three tokens, a pause between each (the last with its finish
    reason), then its usage chunk."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in ("a", "b", "c"):
            yield chunk(
                {
                    "object": "chat.completion.chunk",
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"content": piece},
                            # as vLLM ends every answer: an unfinished one is the engine's failure
                            "finish_reason": "stop" if piece == "c" else None,
                        }
                    ],
                }
            )
            await asyncio.sleep(0.2)
        yield chunk({"object": "chat.completion.chunk", "choices": [], "usage": USAGE})
        yield b"data: [DONE]\n\n"


def engine(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    if body["messages"][0]["content"] == "fail":
        raise httpx.ConnectError("refused", request=request)
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=SlowStream())


def platform_with_key(postgres_url: str, tmp_path: Path) -> tuple[Runtime, uuid.UUID, str]:
    """Tenants applied, pools pointing at the scripted engine, and an API key of acme."""
    runtime = make_runtime(postgres_url, tmp_path / "state")
    apply_manifests(runtime.session_factory, TENANTS_DIR, publish=runtime.publish)
    with transaction(runtime.session_factory) as session:
        tenant = session.scalars(select(Tenant).where(Tenant.slug == "acme")).one()
        project = session.scalars(select(Project).where(Project.tenant_id == tenant.id)).first()
        assert project is not None
        set_pool_endpoints(session, "h100-eu-west", ["http://engine-1"])
        set_pool_endpoints(session, "l40s-us-east", ["http://engine-2"])
        created = create_key(
            session,
            Principal.system(),
            runtime.server_secret,
            tenant.id,
            ApiKeyCreate(project_id=project.id, name="e2e"),
        )
    return runtime, tenant.id, created.secret


async def test_streamed_cancelled_and_failed_requests_are_all_metered(
    postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    runtime, tenant_id, key = platform_with_key(postgres_url, tmp_path)
    runtime.publish()
    assert runtime.memory_store is not None
    client = aioredis.Redis.from_url(redis_url)
    app = create_gateway_app(
        source=runtime.memory_store,
        emitter=RedisUsageEmitter(client, STREAM),
        server_secret=runtime.server_secret,
        settings=GatewaySettings(),
        transport=httpx.MockTransport(engine),
    )
    port = free_port()
    server = serving.server(app, "127.0.0.1", port)
    task = asyncio.create_task(server.serve())
    await serving.wait_started([server], [task])
    started = utcnow()
    headers = {"authorization": f"Bearer {key}"}

    def body(content: str) -> dict[str, object]:
        return {
            "model": "llama-3.1-8b",
            "stream": True,
            "messages": [{"role": "user", "content": content}],
        }

    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1") as http:
            complete = await http.post("/chat/completions", json=body("hi"), headers=headers)
            assert complete.status_code == 200 and complete.text.endswith("[DONE]\n\n")
            async with http.stream(
                "POST", "/chat/completions", json=body("hi"), headers=headers
            ) as walked_away:
                async for _first in walked_away.aiter_bytes():
                    break  # the client leaves after the first bytes
            failed = await http.post("/chat/completions", json=body("fail"), headers=headers)
            assert failed.status_code == 503
        await _wait_for_three(redis_url)
    finally:
        server.should_exit = True
        await task
        await client.aclose()

    consumer = UsageConsumer(reader(redis_url, "e2e"), runtime.session_factory)
    assert consumer.drain() == 3
    rollup_usage(runtime.session_factory)
    with transaction(runtime.session_factory) as session:
        statuses = sorted(session.scalars(select(UsageEvent.status)))
        csv_body = export_period(session, month_of(started), "focus-csv", tenant_id).body
    assert statuses == [200, 499, 503]
    rows = list(csv.DictReader(io.StringIO(csv_body.decode())))
    input_rows = [r for r in rows if r["x_TokenClass"] == "input"]
    cached_rows = [r for r in rows if r["x_TokenClass"] == "cached_input"]
    # the completed stream's usage: 500 uncached + 1500 cached; the cancelled one got no usage
    # chunk, so its prompt counts as the gateway's estimate (the engine prefilled it) and its
    # relayed tokens as output; the failure never reached an engine
    cancelled_prompt = estimate_prompt_tokens("chat", body("hi"))
    assert cancelled_prompt > 0
    assert sum(Decimal(r["ConsumedQuantity"]) for r in input_rows) == 500 + cancelled_prompt
    assert sum(Decimal(r["ConsumedQuantity"]) for r in cached_rows) == 1500
    runtime.close()


async def _wait_for_three(redis_url: str) -> None:
    """The gateway emits after the response ends (the cancelled stream's a little later)."""
    client = aioredis.Redis.from_url(redis_url)
    try:
        for _ in range(200):
            if await client.xlen(STREAM) >= 3:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the gateway did not emit three usage events")
    finally:
        await client.aclose()
