"""The simulated engine over an in-process HTTP client, as the server tests call it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from trunkline.engines import (
    ChatMessage,
    SimApp,
    apply_chat_template,
    parse_vllm_metrics,
)

MODEL = "llama"
CHAT_PATH, COMPLETIONS_PATH, EMBEDDINGS_PATH = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
)
MESSAGES = [
    {"role": "system", "content": "You are the assistant of ACME Telecom. " * 8},
    {"role": "user", "content": "My router blinks red."},
]
PROMPT_TOKENS = len(apply_chat_template([ChatMessage(m["role"], m["content"]) for m in MESSAGES]))


@dataclass
class Sim:
    app: SimApp
    client: httpx.AsyncClient

    async def chat(self, **body: Any) -> httpx.Response:
        return await self.client.post(
            "/v1/chat/completions", json={"model": MODEL, "messages": MESSAGES, **body}
        )

    async def load(self) -> Any:
        return parse_vllm_metrics((await self.client.get("/metrics")).text)


@contextlib.asynccontextmanager
async def open_sim(app: SimApp) -> AsyncIterator[Sim]:
    transport = httpx.ASGITransport(app=app)
    async with app, httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        yield Sim(app, client)
