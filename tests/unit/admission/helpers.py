"""Views and tiers for admission tests."""

from __future__ import annotations

from trunkline.fleet.spec import DEFAULT_TIERS
from trunkline.gateway.routing import EndpointLoad, EndpointView, PromptRange, RequestView

GOLD = DEFAULT_TIERS["gold"]
SILVER = DEFAULT_TIERS["silver"]
BRONZE = DEFAULT_TIERS["bronze"]
TIERS = {"gold": GOLD, "silver": SILVER, "bronze": BRONZE}

IDLE = EndpointLoad()
FULL = EndpointLoad(running=256.0, waiting=40.0, kv_usage=0.99, queued_prompt_tokens=40_000.0)
"""An L40S engine with every sequence slot taken and a long queue: nothing starts soon."""


def endpoint(
    key: str = "pool/0",
    load: EndpointLoad = IDLE,
    *,
    pool: str = "pool",
    burst: bool = False,
    prompt_tokens: PromptRange | None = None,
) -> EndpointView:
    return EndpointView(key, pool, "eu", "l40s", 16, load, burst=burst, prompt_tokens=prompt_tokens)


def request(
    request_id: str = "r", tenant: str = "t", tier: str = "silver", prompt_tokens: int = 1000
) -> RequestView:
    return RequestView(request_id, tenant, tier, "chat", prompt_tokens=prompt_tokens)
