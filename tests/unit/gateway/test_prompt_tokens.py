"""Prompts tokenized as vLLM's OpenAI server tokenizes them, with a real Hugging Face tokenizer
built here (a word-level vocabulary and a chat template). That real vLLM counts the same tokens
is checked against vLLM itself (tests/integration/vllm/test_vllm_engine_state.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from trunkline.apps.gateway import prompt_tokens, routing_policy
from trunkline.gateway.pipeline import parse_body
from trunkline.gateway.prompt_tokens import HfPromptTokenizer, PromptTokens, PromptTokensCollector
from trunkline.gateway.routing.vllm_hashes import VllmHashing
from trunkline.settings import GatewaySettings

WORDS = ["<s>", "</s>", "<unk>", "user", "assistant", "system", ":", "hello", "world", "one"]
ID = {word: index for index, word in enumerate(WORDS)}
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'tool' %}{{ raise_exception('no tools here') }}{% endif %}"
    "{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocabulary = Tokenizer(models.WordLevel(ID, unk_token="<unk>"))
    vocabulary.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=vocabulary, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.chat_template = TEMPLATE
    path = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(path)
    return path


def _ids(*words: str) -> list[int]:
    return [ID[word] for word in words]


def _chat(content: object, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": content}], **extra}


def test_a_chat_is_its_rendered_template_tokenized_without_special_tokens(
    tokenizer_dir: Path,
) -> None:
    tokenizer = HfPromptTokenizer(str(tokenizer_dir))

    ids = tokenizer.prompt_ids("chat", _chat("hello world"))
    # The template writes the BOS itself; vLLM adds no other special token to a chat.
    assert ids == _ids("<s>", "user", ":", "hello", "world", "assistant", ":")
    continued = _chat("hello", add_generation_prompt=False)
    assert tokenizer.prompt_ids("chat", continued) == _ids("<s>", "user", ":", "hello")


def test_what_cannot_be_tokenized_as_the_engine_would_has_no_token_view(
    tokenizer_dir: Path,
) -> None:
    tokenizer = HfPromptTokenizer(str(tokenizer_dir))
    parts = [{"type": "text", "text": "hello"}]
    tool = {"model": "m", "messages": [{"role": "tool", "content": "one"}]}

    assert tokenizer.prompt_ids("chat", _chat(parts)) is None  # multi-part content
    assert tokenizer.prompt_ids("chat", tool) is None  # the template refuses it
    assert tokenizer.prompt_ids("embeddings", {"input": "hello"}) is None


def test_a_completion_prompt_is_tokenized_and_token_ids_are_taken_as_sent(
    tokenizer_dir: Path,
) -> None:
    tokenizer = HfPromptTokenizer(str(tokenizer_dir))
    assert tokenizer.prompt_ids("completions", {"prompt": "hello world"}) == _ids("hello", "world")
    assert tokenizer.prompt_ids("completions", {"prompt": ["hello"]}) == _ids("hello")
    assert tokenizer.prompt_ids("completions", {"prompt": [7, 8, 9]}) == [7, 8, 9]
    assert tokenizer.prompt_ids("completions", {"prompt": [[7, 8], [9]]}) is None


@pytest.mark.parametrize("policy", ["prefix-aware", "precise-prefix"])
async def test_configured_tokenizers_give_every_policy_token_views(
    tokenizer_dir: Path, policy: str
) -> None:
    settings = GatewaySettings(routing_policy=policy, tokenizers={"served": str(tokenizer_dir)})
    tokens = prompt_tokens(settings, routing_policy(policy))
    assert tokens is not None
    tokens.max_queue_wait_s = 60.0  # a busy machine's slow thread start is not under test

    request = parse_body(
        "chat", b'{"model": "m", "messages": [{"role": "user", "content": "one"}]}'
    )
    view = await tokens.view("served", request, cache_salt=None)
    assert view is not None and view.num_tokens == 6
    assert await tokens.view("another-model", request, cache_salt=None) is None
    tokens.close()


class _HeldTokenizer:
    """One token per character; the first call waits until ``release`` is set."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        self.calls = 0

    def prompt_ids(self, kind: str, body: Mapping[str, Any]) -> list[int] | None:
        self.calls += 1
        if self.calls == 1:
            self.started.set()
            self.release.wait(timeout=10)
        return [ord(c) for c in body["messages"][-1]["content"]]


async def test_a_prompt_that_waited_too_long_for_the_tokenizer_goes_without_a_token_view() -> None:
    now = [0.0]
    held = _HeldTokenizer()
    tokens = PromptTokens(
        {"served": held}, VllmHashing(), max_queue_wait_s=0.05, clock=lambda: now[0]
    )
    registry = CollectorRegistry()
    registry.register(PromptTokensCollector(tokens))
    long_one = parse_body(
        "chat", b'{"model": "m", "messages": [{"role": "user", "content": "ab"}]}'
    )
    queued = parse_body("chat", b'{"model": "m", "messages": [{"role": "user", "content": "c"}]}')

    first = asyncio.ensure_future(tokens.view("served", long_one, cache_salt=None))
    assert await asyncio.to_thread(held.started.wait, 10)
    second = asyncio.ensure_future(tokens.view("served", queued, cache_salt=None))
    await asyncio.sleep(0)  # the second is queued behind the first, at time 0
    now[0] = 1.0  # the first takes a second: the second has waited far over 50 ms
    held.release.set()

    first_view, second_view = await first, await second
    assert first_view is not None and first_view.num_tokens == 2
    assert second_view is None  # routed by load, not a second late
    assert held.calls == 1  # never tokenized at all
    assert await tokens.view("served", queued, cache_salt=None) is not None  # the queue is free
    for outcome, count in (("tokenized", 2.0), ("queue_wait", 1.0), ("untokenizable", 0.0)):
        sample = registry.get_sample_value(
            "trunkline_prompt_tokenizations_total", {"outcome": outcome}
        )
        assert sample == count, outcome
    tokens.close()


class _GatedTokenizer:
    """One token per character; each call waits for its own gate (by prompt text)."""

    def __init__(self, *held: str) -> None:
        self.started = {text: threading.Event() for text in held}
        self.release = {text: threading.Event() for text in held}

    def prompt_ids(self, kind: str, body: Mapping[str, Any]) -> list[int] | None:
        text = body["messages"][-1]["content"]
        if text in self.started:
            self.started[text].set()
            self.release[text].wait(timeout=10)
        return [ord(c) for c in text]


async def test_a_prompt_never_waits_out_a_whole_tokenization_it_queued_behind() -> None:
    # "a" is tokenized; "b" queues behind it, then "c". "b" waited under 50 ms when "a" ends,
    # so it is tokenized, and it is long: "c" must not wait for all of it, but go without a
    # token view once it waited 50 ms.
    now = [0.0]
    gated = _GatedTokenizer("a", "b")
    tokens = PromptTokens(
        {"served": gated}, VllmHashing(), max_queue_wait_s=0.05, clock=lambda: now[0]
    )

    def chat(text: str) -> Any:
        body = b'{"model": "m", "messages": [{"role": "user", "content": "%s"}]}' % text.encode()
        return parse_body("chat", body)

    a = asyncio.ensure_future(tokens.view("served", chat("a"), cache_salt=None))
    assert await asyncio.to_thread(gated.started["a"].wait, 10)
    b = asyncio.ensure_future(tokens.view("served", chat("b"), cache_salt=None))
    c = asyncio.ensure_future(tokens.view("served", chat("c"), cache_salt=None))
    await asyncio.sleep(0)
    now[0] = 0.01  # "a" ends 10 ms later: "b" and "c" waited 10 ms
    gated.release["a"].set()
    assert await asyncio.to_thread(gated.started["b"].wait, 10)
    try:
        assert await asyncio.wait_for(c, 2) is None  # not after the whole of "b"
    finally:
        gated.release["b"].set()
        assert (await a) is not None and (await b) is not None
        tokens.close()
    assert tokens.outcomes["queue_wait"] == 1
