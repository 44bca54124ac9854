"""The headers OpenAI clients read: ``x-ratelimit-*`` on every answer, and how long to wait.

When several scopes limit requests (or tokens) per minute, the headers describe the tightest:
the one with the least remaining, which is the one the next request will meet first.
"""

from __future__ import annotations

from collections.abc import Sequence

from trunkline.quota.limits import REQUESTS, TOKENS, UNLIMITED
from trunkline.quota.rules import Vector
from trunkline.quota.windows import Windows

_KINDS = ((REQUESTS, "requests"), (TOKENS, "tokens"))


def rate_limit_headers(
    limits: Sequence[Vector], used: Sequence[Vector], windows: Windows
) -> dict[str, str]:
    headers: dict[str, str] = {}
    reset = format_duration(windows.minute_end_ms - windows.now_ms)
    for field, name in _KINDS:
        tightest: tuple[int, int] | None = None
        for limit, current in zip(limits, used, strict=True):
            bound = limit[field]
            if bound == UNLIMITED:
                continue
            candidate = (max(bound - current[field], 0), bound)
            if tightest is None or candidate < tightest:
                tightest = candidate
        if tightest is not None:
            headers[f"x-ratelimit-limit-{name}"] = str(tightest[1])
            headers[f"x-ratelimit-remaining-{name}"] = str(tightest[0])
            headers[f"x-ratelimit-reset-{name}"] = reset
    return headers


def retry_headers(retry_after_ms: int | None) -> dict[str, str]:
    """``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms`` when waiting helps;
    otherwise ``x-should-retry: false``, which the OpenAI SDKs obey instead of retrying."""
    if retry_after_ms is None:
        return {"x-should-retry": "false"}
    return {
        "retry-after": str(max(1, -(-retry_after_ms // 1000))),
        "retry-after-ms": str(retry_after_ms),
    }


def format_duration(ms: int) -> str:
    """OpenAI's duration format: ``250ms``, ``12.5s``, ``1m0s``."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    minutes, rest = divmod(ms, 60_000)
    seconds = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"
