"""The cascade's checks and plan, table-driven: when a first answer is kept or escalated."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from trunkline.gateway.cascade import (
    CONFIDENCE_INSTRUCTION,
    Answer,
    attempt_request_id,
    escalation_reason,
    judge,
    plan_cascade,
    read_answer,
    replay_chunks,
    split_confidence,
)
from trunkline.gateway.pipeline import ParsedRequest, parse_body
from trunkline.snapshot import AliasEntry, CascadeEntry

ALL = CascadeEntry("large", ("big-pool",), True, True, -1.0, 0.7)
ALIAS = AliasEntry("auto", "small", "chat", ("small-pool",), CascadeEntry("large", ("big-pool",)))


@pytest.mark.parametrize(
    ("answer", "confidence", "checks", "reason"),
    [
        (Answer("Paris.", "stop", None, (-0.1, -0.2)), 0.9, ALL, None),
        (Answer("Paris, the", "length", None, (-0.1,)), 0.9, ALL, "truncation"),
        (Answer("Paris, the", "length"), None, CascadeEntry("l", ()), "truncation"),
        (Answer("Paris, the", "length"), None, CascadeEntry("l", (), on_truncation=False), None),
        (
            Answer("I'm sorry, but I can't help with that.", "stop", None, (-0.1,)),
            0.9,
            ALL,
            "refusal",
        ),
        (
            Answer("  I cannot answer questions about that.", "stop"),
            None,
            CascadeEntry("l", ()),
            "refusal",
        ),
        (Answer("As an AI, I have no opinions.", "stop"), None, CascadeEntry("l", ()), "refusal"),
        (
            Answer("", "stop", "The request violates policy."),
            None,
            CascadeEntry("l", ()),
            "refusal",
        ),
        (
            Answer("I'm sorry to hear that; here is how to fix it.", "stop"),
            None,
            CascadeEntry("l", (), on_refusal=False),
            None,
        ),
        (
            Answer("The answer is 4; I cannot stress this enough.", "stop"),
            None,
            CascadeEntry("l", ()),
            None,
        ),
        (Answer("Paris.", "stop", None, (-2.5, -0.1)), 0.9, ALL, "low_logprob"),
        (Answer("Paris.", "stop", None, None), 0.9, ALL, "low_logprob"),
        (Answer("Paris.", "stop", None, (float("-inf"), -0.5)), 0.9, ALL, None),
        (Answer("Paris.", "stop", None, (-0.1,)), 0.5, ALL, "low_confidence"),
        (Answer("Paris.", "stop", None, (-0.1,)), None, ALL, "low_confidence"),
        (Answer("Paris.", "stop", None, (-0.1,)), 0.7, ALL, None),
    ],
)
def test_escalation_reason(
    answer: Answer, confidence: float | None, checks: CascadeEntry, reason: str | None
) -> None:
    assert escalation_reason(answer, checks, confidence) == reason


CUT = CascadeEntry("l", ())


@pytest.mark.parametrize(
    ("answer", "client_limit", "reason"),
    [
        # Stopped at the client's own limit: the large model would stop there too.
        (Answer("Paris, the", "length", completion_tokens=8), 8, None),
        # n answers of 8 tokens each: every one, the first too, reached the limit.
        (Answer("Paris, the", "length", completion_tokens=24, choices=3), 8, None),
        # Short of the client's limit: the small model's context ran out, not the limit.
        (Answer("Paris, the", "length", completion_tokens=5), 8, "truncation"),
        # 20 tokens over 3 answers: the first may have stopped short of 8.
        (Answer("Paris, the", "length", completion_tokens=20, choices=3), 8, "truncation"),
        (Answer("Paris, the", "length"), 8, "truncation"),  # no usage: not known to be the limit
        (Answer("Paris, the", "length", completion_tokens=8), None, "truncation"),
        (Answer("I'm sorry, but I can't", "length", completion_tokens=8), 8, "refusal"),
    ],
)
def test_an_answer_stopped_by_the_clients_own_limit_is_not_truncated(
    answer: Answer, client_limit: int | None, reason: str | None
) -> None:
    assert escalation_reason(answer, CUT, None, client_limit) == reason


@pytest.mark.parametrize(
    ("text", "kept", "confidence"),
    [
        ("Paris.\nConfidence: 0.92", "Paris.", 0.92),
        ("Paris.\n\n**Confidence:** 0.4\n", "Paris.", 0.4),
        ("Paris.\nconfidence = 85%", "Paris.", 0.85),
        ("Paris.\nConfidence: 70", "Paris.", 0.7),
        ("Paris.\nConfidence: 1.0.", "Paris.", 1.0),
        ("Paris.", "Paris.", None),
        (
            "Confidence: 0.3 is what I would say about Paris.",
            "Confidence: 0.3 is what I would say about Paris.",
            None,
        ),
    ],
)
def test_split_confidence(text: str, kept: str, confidence: float | None) -> None:
    assert split_confidence(text) == (kept, confidence)


def _chat_answer(content: str, finish: str = "stop", logprobs: list[float] | None = None) -> bytes:
    lp = None if logprobs is None else {"content": [{"token": "x", "logprob": v} for v in logprobs]}
    choice = {"index": 0, "message": {"role": "assistant", "content": content},
              "logprobs": lp, "finish_reason": finish}  # fmt: skip
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    return json.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "small",
                       "choices": [choice], "usage": usage}).encode()  # fmt: skip


def test_read_answer_takes_text_reason_and_logprobs_of_chat_and_completions() -> None:
    chat = read_answer("chat", json.loads(_chat_answer("hi", "length", [-0.5, -1.5])))
    assert chat == Answer("hi", "length", None, (-0.5, -1.5), completion_tokens=2)
    assert chat.mean_logprob == -1.0
    text = {"choices": [{"text": "hi", "finish_reason": "stop",
                         "logprobs": {"token_logprobs": [-0.25, None, -0.75]}}]}  # fmt: skip
    assert read_answer("completions", text) == Answer("hi", "stop", None, (-0.25, -0.75))
    assert read_answer("chat", {"choices": []}) == Answer("", None)


def _request(body: dict[str, Any], kind: str = "chat") -> ParsedRequest:
    return parse_body(kind, json.dumps(body).encode(), cache_salt="salt-a")


CHAT = {"model": "auto", "messages": [{"role": "user", "content": "Capital of France?"}]}


def test_a_plain_alias_has_no_plan() -> None:
    assert plan_cascade(_request(CHAT), AliasEntry("auto", "small", "chat", ("p",))) is None


def test_the_first_attempt_is_unstreamed_and_asks_what_the_checks_need() -> None:
    alias = AliasEntry("auto", "small", "chat", ("small-pool",), ALL)
    request = _request({**CHAT, "stream": True, "stream_options": {"include_usage": True}})

    plan = plan_cascade(request, alias)

    assert plan is not None
    assert (plan.first.stream, plan.first.client_wants_usage) == (False, False)
    assert "stream" not in plan.first.body and "stream_options" not in plan.first.body
    assert plan.first.body["logprobs"] is True
    assert plan.first.body["messages"][0] == {"role": "system", "content": CONFIDENCE_INSTRUCTION}
    assert plan.first.cache_salt == "salt-a"
    assert (plan.first_alias.model, plan.first_alias.pools) == ("small", ("small-pool",))
    assert (plan.escalated_alias.model, plan.escalated_alias.pools) == ("large", ("big-pool",))
    assert plan.first_alias.cascade is None and plan.escalated_alias.cascade is None
    assert plan.request is request  # the large model gets the client's request unchanged


def test_the_confidence_instruction_joins_an_existing_system_message() -> None:
    body = {**CHAT, "messages": [{"role": "system", "content": "Be brief."}, *CHAT["messages"]]}
    plan = plan_cascade(_request(body), AliasEntry("a", "s", "chat", (), ALL))
    assert plan is not None
    assert plan.first.body["messages"][0]["content"] == f"Be brief.\n\n{CONFIDENCE_INSTRUCTION}"
    assert len(plan.first.body["messages"]) == 2


def test_completions_ask_token_logprobs_and_never_a_confidence() -> None:
    alias = AliasEntry("a", "s", "completion", (), ALL)
    plan = plan_cascade(_request({"model": "a", "prompt": "2+2="}, "completions"), alias)
    assert plan is not None
    assert plan.first.body["logprobs"] == 0 and plan.checks.min_confidence is None


def test_judge_keeps_a_good_answer_without_what_the_cascade_added() -> None:
    plan = plan_cascade(_request(CHAT), AliasEntry("a", "s", "chat", (), ALL))
    assert plan is not None

    verdict = judge(plan, _chat_answer("Paris.\nConfidence: 0.9", logprobs=[-0.1, -0.2]))

    assert not verdict.escalate
    choice = msgspec.json.decode(verdict.body)["choices"][0]
    assert choice["message"]["content"] == "Paris."
    assert choice["logprobs"] is None  # the client did not ask for them


def test_judge_keeps_logprobs_the_client_asked_for() -> None:
    checks = CascadeEntry("l", (), min_mean_logprob=-1.0)
    plan = plan_cascade(
        _request({**CHAT, "logprobs": True}), AliasEntry("a", "s", "chat", (), checks)
    )
    assert plan is not None
    verdict = judge(plan, _chat_answer("Paris.", logprobs=[-0.1]))
    assert msgspec.json.decode(verdict.body)["choices"][0]["logprobs"] is not None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (_chat_answer("Paris", "length", [-0.1]), "truncation"),
        (_chat_answer("Paris.\nConfidence: 0.2", logprobs=[-0.1]), "low_confidence"),
        (_chat_answer("Paris.\nConfidence: 0.9", logprobs=[-3.0]), "low_logprob"),
        (b"not json", "unreadable_answer"),
    ],
)
def test_judge_escalates_with_the_failed_check(payload: bytes, reason: str) -> None:
    plan = plan_cascade(_request(CHAT), AliasEntry("a", "s", "chat", (), ALL))
    assert plan is not None
    assert judge(plan, payload).reason == reason


@pytest.mark.parametrize(
    ("kind", "body", "completion_tokens", "reason"),
    [
        ("chat", {**CHAT, "max_tokens": 2}, 2, None),
        ("chat", {**CHAT, "max_completion_tokens": 2, "max_tokens": 50}, 2, None),
        ("chat", {**CHAT, "max_tokens": 50}, 2, "truncation"),  # cut by the small context
        ("chat", CHAT, 2, "truncation"),  # no limit of the client's: the engine's own
        ("completions", {"model": "a", "prompt": "Once"}, 16, None),  # the API's default 16
        ("completions", {"model": "a", "prompt": "Once", "max_tokens": 40}, 16, "truncation"),
    ],
)
def test_judge_escalates_a_truncation_only_short_of_the_clients_limit(
    kind: str, body: dict[str, Any], completion_tokens: int, reason: str | None
) -> None:
    alias = AliasEntry("a", "s", "chat" if kind == "chat" else "completion", (), CUT)
    plan = plan_cascade(_request(body, kind), alias)
    assert plan is not None
    choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None}
    if kind == "chat":
        choice["message"] = {"role": "assistant", "content": "Once upon"}
    else:
        choice["text"] = " upon a time"
    usage = {"prompt_tokens": 5, "completion_tokens": completion_tokens}
    answer = {"id": "c1", "model": "s", "choices": [choice], "usage": usage}
    assert judge(plan, json.dumps(answer).encode()).reason == reason


@pytest.mark.parametrize(
    ("request_id", "expected"),
    [("req-1", "req-1.escalated"), ("r" * 54, "r" * 54 + ".escalated")],
)
def test_attempt_request_ids_differ_from_the_request_id(request_id: str, expected: str) -> None:
    assert attempt_request_id(request_id, "escalated") == expected


def test_attempt_request_ids_stay_within_64_characters_and_unique() -> None:
    one, two = "a" * 60 + "bbbb", "a" * 60 + "cccc"
    ids = {attempt_request_id(one, "escalated"), attempt_request_id(two, "escalated")}
    assert len(ids) == 2 and all(len(i) <= 64 for i in ids)


def test_replay_chunks_rebuild_the_stream_of_a_chat_answer() -> None:
    document = json.loads(_chat_answer("Paris."))
    chunks = list(replay_chunks("chat", document, include_usage=True))
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "Paris."}, {}]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, "stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert [c for c in replay_chunks("chat", document, include_usage=False) if "usage" in c] == []


def test_replay_chunks_carry_the_answer_s_fingerprint_and_service_tier_on_every_chunk() -> None:
    document = {**json.loads(_chat_answer("Paris.")), "system_fingerprint": "fp_1"}
    document["service_tier"] = "default"
    for kind in ("chat", "completions"):
        chunks = list(replay_chunks(kind, document, include_usage=True))
        assert {(c["system_fingerprint"], c["service_tier"]) for c in chunks} == {
            ("fp_1", "default")
        }
    plain = json.loads(_chat_answer("Paris."))  # an answer without them: none is made up
    assert all("system_fingerprint" not in c for c in replay_chunks("chat", plain, True))


def test_replay_chunks_keep_the_tool_calls_and_reasoning_of_a_chat_answer() -> None:
    call = {"id": "chatcmpl-tool-1", "type": "function"}
    call["function"] = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    message = {"role": "assistant", "content": None, "reasoning_content": "It asks for weather."}
    document = {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "small",
        "choices": [{"index": 0, "message": {**message, "tool_calls": [call]},
                     "logprobs": None, "finish_reason": "tool_calls"}],
    }  # fmt: skip
    state = ChatCompletionStreamState()  # what the OpenAI SDK's stream helpers accumulate with
    for chunk in replay_chunks("chat", document, include_usage=False):
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    choice = state.get_final_completion().choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls] == [
        ("chatcmpl-tool-1", "get_weather", '{"city": "Paris"}')
    ]
    deltas = [c["choices"][0]["delta"] for c in replay_chunks("chat", document, False)]
    assert [d["reasoning_content"] for d in deltas if "tool_calls" in d] == ["It asks for weather."]
