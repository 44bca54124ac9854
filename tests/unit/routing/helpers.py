"""Views for routing tests: endpoints and requests with only the fields a test cares about."""

from __future__ import annotations

from trunkline.gateway.routing import (
    EndpointLoad,
    EndpointView,
    PromptRange,
    RequestView,
    TextPrompt,
)


def endpoint(
    key: str,
    *,
    region: str = "eu",
    running: float = 0.0,
    waiting: float = 0.0,
    kv: float = 0.0,
    healthy: bool = True,
    burst: bool = False,
    model: str | None = None,
    cost_per_hour: float | None = None,
    tokens_per_s: float | None = None,
    block_size: int = 16,
    prompt_tokens: PromptRange | None = None,
    tiers: tuple[str, ...] | None = None,
) -> EndpointView:
    return EndpointView(
        key,
        f"pool-{region}",
        region,
        "h100",
        block_size,
        EndpointLoad(running, waiting, kv),
        cost_per_hour=cost_per_hour,
        tokens_per_s=tokens_per_s,
        healthy=healthy,
        burst=burst,
        model=model,
        prompt_tokens=prompt_tokens,
        tiers=tiers,
    )


def request(
    text: str = "",
    *,
    salt: str | None = None,
    regions: tuple[str, ...] = (),
    may_use_burst: bool = True,
    model: str | None = None,
    request_id: str = "r",
    prompt_tokens: int = 0,
    tier: str = "silver",
) -> RequestView:
    prompt = TextPrompt(text, cache_salt=salt) if text else None
    return RequestView(
        request_id,
        "tenant",
        tier,
        "chat",
        prompt_tokens=prompt.num_tokens if prompt else prompt_tokens,
        prompt=prompt,
        cache_salt=salt,
        regions=regions,
        may_use_burst=may_use_burst,
        model=model,
    )


# 64 characters: one 16-token block of a TextPrompt at 4 characters per token.
BLOCK = "0123456789abcdef" * 4


def text(*names: str) -> str:
    """A prompt of one block per name: equal names, equal blocks."""
    return "".join((name * 64)[:64] for name in names)
