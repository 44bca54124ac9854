"""Admission's view of engine caches in the gateway: what the router's prefix index knows."""

from __future__ import annotations

from trunkline.gateway.admission.routing_cache import routing_prefix_cache
from trunkline.gateway.routing import EndpointView, RequestView, make_policy
from trunkline.gateway.routing.text_prompt import TextPrompt

PREAMBLE = "You are the support assistant of a telecom operator. " * 40


def _view(key: str) -> EndpointView:
    return EndpointView(key, "pool", "eu-west", "h100", 16, kv_capacity_tokens=400_000)


def _request(text: str, salt: str | None = "tenant-a") -> RequestView:
    prompt = TextPrompt(text, cache_salt=salt)
    return RequestView("r", "t", "gold", "chat", prompt_tokens=prompt.num_tokens, prompt=prompt,
                       cache_salt=salt)  # fmt: skip


def test_the_replica_a_prefix_was_routed_to_is_known_to_hold_it() -> None:
    policy = make_policy("prefix-aware")
    cache = routing_prefix_cache(policy)
    assert cache is not None
    first, second = _view("e1"), _view("e2")
    policy.routed(_request(PREAMBLE + "first question"), first)

    follow_up = _request(PREAMBLE + "another question")
    assert follow_up.prompt is not None
    held = cache.cached_tokens(follow_up.prompt, first)
    assert follow_up.prompt.num_tokens * 0.8 < held <= follow_up.prompt.num_tokens
    assert cache.cached_tokens(follow_up.prompt, second) == 0
    # Another tenant's salt never matches this tenant's blocks.
    other = _request(PREAMBLE + "another question", salt="tenant-b")
    assert other.prompt is not None and cache.cached_tokens(other.prompt, first) == 0


def test_a_policy_without_prefix_affinity_gives_no_cache_view() -> None:
    assert routing_prefix_cache(make_policy("round-robin")) is None
    assert routing_prefix_cache(make_policy("least-loaded")) is None
