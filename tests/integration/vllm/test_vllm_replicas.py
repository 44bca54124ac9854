"""Two real vLLM replicas, one core each: what prefix-aware routing across replicas builds on.

This file starts ``vllm_pair`` (≈35 s). Keep routing tests that need two replicas here or in
files that share the fixture, so the pair starts once per session.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest

from support.vllm import (
    MODEL_NAME,
    Gateway,
    KvEventSubscriber,
    VllmEnv,
    VllmServer,
    unique_prompt,
)
from trunkline.gateway.routing import kv_event_index
from trunkline.gateway.service import GatewayService


def test_each_replica_is_pinned_to_its_own_core(vllm_pair: tuple[VllmServer, VllmServer]) -> None:
    bound = []
    for server in vllm_pair:
        match = re.search(r"local_rank=0, core ids=\[([\d, ]+)\]", server.output())
        assert match, f"no OpenMP binding line in {server.log}"
        bound.append(match.group(1))

    assert bound == [server.cpu for server in vllm_pair]


@pytest.mark.parametrize("admission", ["off", "slo"])
def test_round_robin_spreads_requests_over_both_replicas(
    vllm_pair: tuple[VllmServer, VllmServer],
    make_gateway: Callable[..., Gateway],
    admission: str,
) -> None:
    # With SLO admission on, a scrape taken while the previous request waited may still show it
    # waiting when the next one is decided; that request is the gateway's own and has finished,
    # so admission predicts nothing ahead and keeps the router's choice.
    gateway = make_gateway(list(vllm_pair), "round-robin", admission=admission)

    for n in range(4):
        response = gateway.post("/v1/completions", {"prompt": f"request {n}", "max_tokens": 2})
        assert response.status_code == 200, response.text

    endpoints = [record.endpoint for record in gateway.usage_records()]
    assert sorted(endpoints) == sorted(2 * [server.url for server in vllm_pair])


def test_prefix_aware_sends_a_repeated_preamble_back_to_the_replica_that_cached_it(
    vllm_pair: tuple[VllmServer, VllmServer],
    make_gateway: Callable[..., Gateway],
) -> None:
    gateway = make_gateway(list(vllm_pair))  # the default policy, prefix-aware
    preambles = [unique_prompt(150) for _ in range(4)]

    for turn in range(2):
        for n, preamble in enumerate(preambles):
            body = {"prompt": f"{preamble} question {n} turn {turn}", "max_tokens": 2}
            response = gateway.post("/v1/completions", body)
            assert response.status_code == 200, response.text

    records = gateway.usage_records()
    first, second = records[:4], records[4:]
    # Each preamble's second request went where its first one left the preamble's blocks, and
    # vLLM answered most of that prompt from its prefix cache.
    assert [r.endpoint for r in second] == [r.endpoint for r in first]
    block = vllm_pair[0].block_size
    assert all(r.cached_tokens >= 4 * block for r in second), [r.cached_tokens for r in second]


def test_precise_prefix_sends_a_repeated_preamble_to_the_replica_its_kv_events_name(
    vllm_pair: tuple[VllmServer, VllmServer],
    vllm_env: VllmEnv,
    make_gateway: Callable[..., Gateway],
) -> None:
    gateway = precise_gateway(make_gateway, list(vllm_pair), vllm_env)
    block = vllm_pair[0].block_size
    preambles = [unique_prompt(150) for _ in range(4)]

    def body(n: int, turn: int) -> dict[str, object]:
        return {"prompt": f"{preambles[n]} question {n} turn {turn}", "max_tokens": 2}

    # The health page says when both subscriptions are live.
    deadline = time.monotonic() + 60
    while not all(s["connected"] for s in kv_subscriptions(gateway).values()):
        assert time.monotonic() < deadline, kv_subscriptions(gateway)
        time.sleep(0.05)
    assert sorted(kv_subscriptions(gateway)) == ["vllm-0", "vllm-1"]
    for n in range(len(preambles)):
        assert gateway.post("/v1/completions", body(n, 0)).status_code == 200
    where = wait_for_holders(gateway, [f"{p} question" for p in preambles], block)
    for n in range(len(preambles)):
        assert gateway.post("/v1/completions", body(n, 1)).status_code == 200

    records = gateway.usage_records()
    assert tokenized(gateway) == {"tokenized": 2 * len(preambles)}
    first, second = records[: len(preambles)], records[len(preambles) :]
    # Each preamble's second request went to the replica whose events say it holds the
    # preamble's blocks (where the first was served), and vLLM answered it from its cache.
    assert [r.endpoint for r in first] == [vllm_pair[i].url for i in where]
    assert [r.endpoint for r in second] == [r.endpoint for r in first]
    assert all(r.cached_tokens >= 4 * block for r in second), [r.cached_tokens for r in second]


def test_a_gateway_started_after_the_replicas_served_a_preamble_learns_where_from_a_replay(
    vllm_pair: tuple[VllmServer, VllmServer],
    vllm_env: VllmEnv,
    make_gateway: Callable[..., Gateway],
) -> None:
    # Each replica serves a preamble of its own before any gateway listens to its events; a
    # gateway started afterwards asks vLLM's replay socket for them (`kv_replay`).
    preambles = [unique_prompt(150) for _ in vllm_pair]
    for server, preamble in zip(vllm_pair, preambles, strict=True):
        server.complete(preamble)
    gateway = precise_gateway(make_gateway, list(vllm_pair), vllm_env)

    assert wait_for_holders(gateway, preambles, vllm_pair[0].block_size) == [0, 1]
    for preamble in preambles:
        body = {"prompt": f"{preamble} and a question", "max_tokens": 2}
        assert gateway.post("/v1/completions", body).status_code == 200
    records = gateway.usage_records()
    assert tokenized(gateway) == {"tokenized": 2}
    assert [r.endpoint for r in records] == [server.url for server in vllm_pair]
    assert all(r.cached_tokens >= 4 * vllm_pair[0].block_size for r in records)


def precise_gateway(
    make_gateway: Callable[..., Gateway], servers: list[VllmServer], vllm_env: VllmEnv
) -> Gateway:
    """A ``precise-prefix`` gateway over ``servers``, with their KV events and the tokenizer.

    Its tokenizer may wait for its thread as long as it takes: on a busy machine a prompt that
    waited over ``MAX_QUEUE_WAIT_S`` is routed by load (by design), which is not what these
    tests are about. They check every prompt was tokenized."""
    gateway = make_gateway(servers, "precise-prefix", tokenizers={MODEL_NAME: str(vllm_env.model)})
    tokens = gateway.client.app.state.gateway.prompt_tokens
    assert tokens is not None
    tokens.max_queue_wait_s = 60.0
    return gateway


def tokenized(gateway: Gateway) -> dict[str, int]:
    """The gateway's prompts by tokenization outcome."""
    return dict(gateway.client.app.state.gateway.prompt_tokens.outcomes)


def wait_for_holders(gateway: Gateway, prompts: list[str], block: int) -> list[int]:
    """Wait until the gateway's KV-event index holds the first four blocks of each completions
    prompt on one replica (the events travel over ZMQ); returns that replica's index for each."""
    service: GatewayService = gateway.client.app.state.gateway
    index, tokens = kv_event_index(service.policy), service.prompt_tokens
    assert index is not None and tokens is not None

    def holders(prompt: str) -> list[int]:
        ids = tokens.tokenizers[MODEL_NAME].prompt_ids("completions", {"prompt": prompt})
        assert ids is not None
        return index.matches(tokens.hashing.block_hashes(ids, block)[:4], None, REPLICAS)

    deadline = time.monotonic() + 60
    while not all(4 in holders(p) for p in prompts):
        assert time.monotonic() < deadline, [holders(p) for p in prompts]
        time.sleep(0.05)
    return [holders(p).index(4) for p in prompts]


REPLICAS = ["vllm-0", "vllm-1"]


def kv_subscriptions(gateway: Gateway) -> dict[str, dict[str, object]]:
    subscriptions: dict[str, dict[str, object]] = gateway.client.get("/health").json()["engines"][
        "kv_events"
    ]
    return subscriptions


def test_replicas_hash_the_same_prompt_to_the_same_blocks(
    vllm_pair: tuple[VllmServer, VllmServer],
) -> None:
    # A router keeps one index of block hash -> replicas: that needs every replica to hash
    # identical content identically (vLLM seeds its sha256 chain with a fixed value).
    prompt = unique_prompt(120)
    hashes = []
    for server in vllm_pair:
        subscriber = KvEventSubscriber(server)
        try:
            subscriber.wait_live()
            blocks = len(server.tokenize(prompt)) // server.block_size
            server.complete(prompt)
            _messages, stored = subscriber.stored(blocks)
        finally:
            subscriber.close()
        hashes.append([h for event in stored for h in event.block_hashes])

    assert len(hashes[0]) >= 4
    assert hashes[0] == hashes[1]
