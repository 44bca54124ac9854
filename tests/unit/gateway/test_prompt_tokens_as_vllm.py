"""The gateway renders and tokenizes a chat as vLLM 0.32's OpenAI server does (``renderers/``,
``chat_completion/protocol.py``), with a real Hugging Face tokenizer built here: one token per
byte, so the token ids spell out exactly the text the chat template rendered."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from tests.unit.gateway.engines_support import UNHURRIED_S, Gateway
from tests.unit.gateway.upstreams import chat_any

from trunkline.gateway.prompt_tokens import HfPromptTokenizer, PromptTokens
from trunkline.gateway.routing.vllm_hashes import VllmHashing

TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}:{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> HfPromptTokenizer:
    return byte_tokenizer(tmp_path_factory, TEMPLATE)


def byte_tokenizer(tmp_path_factory: pytest.TempPathFactory, template: str) -> HfPromptTokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocabulary = {symbol: index for index, symbol in enumerate(alphabet)}
    vocabulary["<s>"] = len(vocabulary)
    byte_level = Tokenizer(models.BPE(vocabulary, merges=[]))
    byte_level.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    byte_level.decoder = decoders.ByteLevel()
    bos = ("<s>", vocabulary["<s>"])
    byte_level.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[bos])
    built = PreTrainedTokenizerFast(tokenizer_object=byte_level, bos_token="<s>")
    built.chat_template = template
    path = tmp_path_factory.mktemp("byte-tokenizer")
    built.save_pretrained(path)
    return HfPromptTokenizer(str(path))


def rendered(tokenizer: HfPromptTokenizer, body: dict[str, Any]) -> str | None:
    """The text the gateway tokenized for a chat ``body`` (None: no token view)."""
    ids = tokenizer.prompt_ids("chat", {"model": "m", **body})
    return None if ids is None else tokenizer._tokenizer.decode(ids)


HELLO = [{"role": "user", "content": "hello"}]


def test_a_completion_has_the_bos_unless_the_client_turned_special_tokens_off(
    tokenizer: HfPromptTokenizer,
) -> None:
    def text(body: dict[str, Any]) -> str:
        ids = tokenizer.prompt_ids("completions", {"model": "m", "prompt": "hi", **body})
        assert ids is not None
        return str(tokenizer._tokenizer.decode(ids))

    assert text({}) == "<s>hi"
    assert text({"add_special_tokens": False}) == "hi"


def test_a_chat_renders_the_models_template(tokenizer: HfPromptTokenizer) -> None:
    assert rendered(tokenizer, {"messages": HELLO}) == "user:hello\nassistant:"
    assert rendered(tokenizer, {"messages": HELLO, "add_generation_prompt": False}) == (
        "user:hello\n"
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        # A client's template: vLLM refuses it (unless it trusts request templates), and
        # nested loops within the sandbox's range limit (range(100000) twice) would hold the
        # gateway's event loop for minutes.
        {"chat_template": "client:{{ messages[0]['content'] }}"},
        {"tokenize": True},
    ],
    ids=["template", "tokenize"],
)
def test_a_clients_own_chat_template_is_never_rendered(
    tokenizer: HfPromptTokenizer, kwargs: dict[str, Any]
) -> None:
    assert rendered(tokenizer, {"messages": HELLO, "chat_template_kwargs": kwargs}) is None
    body = {"messages": HELLO, "chat_template": "client:{{ messages[0]['content'] }}"}
    assert rendered(tokenizer, body) is None


def test_the_requests_own_fields_win_over_its_chat_template_kwargs(
    tokenizer: HfPromptTokenizer,
) -> None:
    # vLLM merges add_generation_prompt (a request field) over chat_template_kwargs.
    body = {"messages": HELLO, "chat_template_kwargs": {"add_generation_prompt": False}}
    assert rendered(tokenizer, body) == "user:hello\nassistant:"


RAG_TEMPLATE = (
    "{% for d in documents or [] %}doc:{{ d['text'] }}\n{% endfor %}"
    "{% if reasoning_effort %}effort:{{ reasoning_effort }}\n{% endif %}"
    "{% for m in messages %}{{ m['role'] }}:{{ m['content'] }}\n{% endfor %}"
    "{% if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}"
)


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        # A RAG template renders the documents, often most of the prompt: without them the
        # quota reserved the messages alone, and no block matched the engine's.
        ({"documents": [{"text": "a"}, {"text": "b"}]}, "doc:a\ndoc:b\nuser:hello\n"),
        # vLLM hands the template reasoning_effort, and enable_thinking derived from it.
        ({"reasoning_effort": "none"}, "effort:none\nuser:hello\n<think></think>"),
        ({"reasoning_effort": "high"}, "effort:high\nuser:hello\n"),
        # ...unless the client set enable_thinking itself.
        (
            {"reasoning_effort": "none", "chat_template_kwargs": {"enable_thinking": True}},
            "effort:none\nuser:hello\n",
        ),
    ],
)
def test_documents_and_reasoning_effort_reach_the_template_as_in_vllm(
    tmp_path_factory: pytest.TempPathFactory, fields: dict[str, Any], text: str
) -> None:
    tokenizer = byte_tokenizer(tmp_path_factory, RAG_TEMPLATE)
    assert rendered(tokenizer, {"messages": HELLO, **fields}) == text


class _LoopRecordingTokenizer:
    """One token per word; notes whether it ran on an event loop."""

    def __init__(self) -> None:
        self.on_event_loop: list[bool] = []

    def prompt_ids(self, kind: str, body: Mapping[str, Any]) -> list[int] | None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.on_event_loop.append(False)
        else:
            self.on_event_loop.append(True)
        return [len(word) for word in body["messages"][-1]["content"].split()]


def test_prompts_are_tokenized_off_the_event_loop(
    engine_gateway: Callable[..., Gateway],
) -> None:
    """A long prompt takes a second to render and tokenize: on the event loop, every other
    request of the gateway would wait on it."""
    gw = engine_gateway(chat_any, policy="precise-prefix")
    recording = _LoopRecordingTokenizer()
    gw.service.prompt_tokens = PromptTokens(
        {"llama-8b-served": recording}, VllmHashing(), max_queue_wait_s=UNHURRIED_S
    )

    assert gw.chat().status_code == 200
    assert recording.on_event_loop == [False]


TOOLS_TEMPLATE = (
    "{% if tools %}{% for t in tools %}{{ t | tojson }}\n{% endfor %}{% endif %}"
    "{% for m in messages %}{{ m | tojson }}\n{% endfor %}"
)


def test_messages_and_tools_reach_the_template_as_vllm_hands_them_over(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """vLLM dumps each tool with its absent fields as null, decodes tool-call arguments, gives
    null content as "" and drops fields it does not know (an SDK echoing its last answer sends
    refusal, annotations...): a template printing them renders what the engine renders."""
    tokenizer = byte_tokenizer(tmp_path_factory, TOOLS_TEMPLATE)
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    body = {
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [call], "refusal": None},
            {"role": "tool", "tool_call_id": "c1", "content": "2"},
        ],
    }
    sent = json.dumps(body)

    assert rendered(tokenizer, body) == (
        '{"type": "function", "function": {"name": "f", "description": null, "parameters": null}}\n'
        '{"role": "user", "content": "hi"}\n'
        '{"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", '
        '"function": {"name": "f", "arguments": {"x": 1}}}]}\n'
        '{"role": "tool", "content": "2", "tool_call_id": "c1"}\n'
    )
    assert json.dumps(body) == sent  # the body sent upstream is untouched
