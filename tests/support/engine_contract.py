"""What real vLLM and the simulated engine must do alike: request bodies the integration tests
send to vLLM through the gateway and the unit tests to the simulated engine, and the KV-event
replay both answer."""

from __future__ import annotations

from typing import Any

from trunkline.engines.kv_events import (
    REPLAY_END,
    BlockStored,
    KvEventMessage,
    decode_kv_event_message,
)

REFUSED: list[tuple[dict[str, Any], str | None, str]] = [
    # (fields replacing a chat body's, the error's param, a part of its message), as vLLM 0.32
    # answers
    ({"temperature": -1}, "temperature", "temperature must be non-negative, got -1.0."),
    ({"temperature": 3.5}, "temperature", "temperature must be in [0, 2], got 3.5."),
    ({"temperature": "hot"}, "body.temperature", "Input should be a valid number"),
    ({"temperature": [1]}, "body.temperature", "Input should be a valid number"),
    ({"top_p": 0}, "top_p", "top_p must be in (0, 1], got 0.0."),
    ({"top_p": 1.5}, "top_p", "top_p must be in (0, 1], got 1.5."),
    ({"presence_penalty": 3}, None, "presence_penalty must be in [-2, 2], got 3.0."),
    ({"frequency_penalty": -3}, None, "frequency_penalty must be in [-2, 2], got -3.0."),
    ({"frequency_penalty": "x"}, "body.frequency_penalty", "Input should be a valid number"),
    ({"top_k": -5}, None, "top_k must be 0 (disable), or at least 1, got -5."),
    ({"top_k": 2.5}, "body.top_k", "Input should be a valid integer"),
    ({"stop": 5}, "body.stop", "Input should be a valid string"),
    ({"stop": ["a", 5]}, "body.stop", "Input should be a valid string"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "body.stop", "List should have at most 4 items"),
    ({"max_tokens": 2, "min_tokens": 3}, None, "min_tokens must be less than or equal to"),
    ({"top_logprobs": 2}, "top_logprobs", "`logprobs` must be set to true"),
    ({"logprobs": True, "top_logprobs": -2}, "top_logprobs", "must be a positive value or -1"),
    ({"logprobs": True, "top_logprobs": 21}, "logprobs", "greater than max allowed: 20"),
    ({"logprobs": "maybe"}, "body.logprobs", "Input should be a valid boolean"),
    ({"logprobs": True, "top_logprobs": "2"}, "top_logprobs", "`top_logprobs` must be an integer"),
    (
        {"messages": [{"role": "user", "content": None}]},
        "body.messages.0.ChatCompletionDeveloperMessageParam.content",
        "Input should be a valid string",
    ),
]

ACCEPTED: list[dict[str, Any]] = [
    # vLLM's request model is lax: numeric strings and booleans are numbers
    {"temperature": "0.5"},
    {"top_p": "1"},
    {"temperature": True},
    {"top_k": "3"},
    {"top_k": -1},
    {"top_k": 0},
    {"presence_penalty": -2},
    {"stop": "x"},
    {"stop": ["x", "y"]},
    {"stop": ["a", "b", "c", "d"]},
    {"min_tokens": 2},
    {"stream_options": {}},  # not streamed: vLLM refuses only stream options that say something
    {"seed": "3"},
    {"seed": 3.0},
    {"logprobs": True},
    {"logprobs": False, "top_logprobs": 0},
    {"logprobs": True, "top_logprobs": 20},
    {"logprobs": "yes"},  # a boolean read laxly: "yes", "true", 1...
    {"logprobs": True, "top_logprobs": 2.0},
    # an assistant turn with no content (a tool call's), and a role vLLM does not know
    {"messages": [{"role": "assistant", "content": None}, {"role": "user", "content": "hi"}]},
    {"messages": [{"role": "wizard", "content": "hi"}]},
]


COMPLETION_REFUSED: list[tuple[dict[str, Any], str, str]] = [
    # (fields replacing a completions body's, the error's param, a part of its message), as
    # vLLM 0.32 answers a model without fill-in-the-middle rendering
    ({"suffix": ""}, "suffix", "suffix is only supported for models with FIM completion"),
    ({"suffix": 5}, "body.suffix", "Input should be a valid string"),
    ({"logprobs": "2"}, "logprobs", "`logprobs` must be an integer. (parameter=logprobs"),
    ({"echo": "maybe"}, "body.echo", "Input should be a valid boolean"),
]

COMPLETION_ACCEPTED: list[dict[str, Any]] = [{"echo": "yes"}, {"echo": 1}, {"echo": "false"}]

COMPLETION_LOGPROBS: list[tuple[dict[str, Any], int]] = [
    # (fields, how many tokens each position lists): vLLM's request model reads a boolean
    # `logprobs` as an integer, so false lists the sampled token alone
    ({"logprobs": True}, 2),
    ({"logprobs": False}, 1),
    ({"logprobs": 2.0}, 3),
    ({"suffix": None, "logprobs": None}, 0),
]


def check_completion_logprobs(choice: dict[str, Any], listed: int) -> None:
    """A completion choice for a :data:`COMPLETION_LOGPROBS` case: no logprobs (0), or at each
    position the sampled token and at most ``listed`` tokens in all (the sampled one may also
    be one of the likeliest)."""
    logprobs = choice["logprobs"]
    if not listed:
        assert logprobs is None, choice
        return
    for token, top in zip(logprobs["tokens"], logprobs["top_logprobs"], strict=True):
        assert token in top and len(top) <= listed, logprobs
    if listed == 1:
        assert all(len(top) == 1 for top in logprobs["top_logprobs"]), logprobs


CHAT_MESSAGE_FIELDS = frozenset(
    {"role", "content", "refusal", "annotations", "audio", "function_call", "reasoning"}
)
"""The fields of a plain (no tool call) chat answer's ``message``, as vLLM 0.32 writes them:
its reasoning as ``reasoning``, an empty ``tool_calls`` left out."""


STOP_CASES: list[tuple[str, dict[str, Any]]] = [
    # (endpoint, request fields): a stop string the answer meets (a space, in nearly every
    # answer of 40 tokens, the random model's too); the answer ends before it
    ("chat", {"messages": [{"role": "user", "content": "hi there"}], "stop": " "}),
    ("completions", {"prompt": "hi there", "stop": ["zzzz", " "]}),
]
STOP_MAX_TOKENS = 40


def check_stopped(choice_text: str, finish_reason: str, stop_reason: object, tokens: int) -> None:
    """An answer of a :data:`STOP_CASES` case, as vLLM 0.32 ends it: its text up to the stop
    string, which it leaves out, ``finish_reason`` stop naming the string in ``stop_reason``,
    and only the tokens generated up to it counted."""
    assert " " not in choice_text, choice_text
    assert (finish_reason, stop_reason) == ("stop", " ")
    assert 1 <= tokens < STOP_MAX_TOKENS


def context_window_cases(max_model_len: int) -> list[tuple[str, dict[str, Any], str | None]]:
    """Answer maximums against the model's context window ``max_model_len``, as vLLM 0.32
    takes them: (endpoint, request fields, the refused param or None when served). A maximum
    over the window is refused, naming the field the client used; one within it is clamped to
    what the prompt leaves (check it with :func:`check_context_answer`)."""
    window = max_model_len
    hi = [{"role": "user", "content": "hi there"}]
    return [
        ("chat", {"messages": hi, "max_tokens": window + 1}, "max_tokens"),
        ("chat", {"messages": hi, "max_completion_tokens": window + 1}, "max_completion_tokens"),
        ("completions", {"prompt": "hi there", "max_tokens": window + 1}, "max_tokens"),
        ("chat", {"messages": hi, "max_tokens": window, "temperature": 0}, None),
        # a prompt of token ids leaving 8 tokens, asking 100
        ("completions", {"prompt": [7] * (window - 8), "max_tokens": 100}, None),
    ]


def prompt_window_cases(max_model_len: int) -> list[tuple[str, dict[str, Any], str, str]]:
    """Prompts that leave no room for an answer in the context window ``max_model_len``, as
    vLLM 0.32 refuses them: (endpoint, request fields, the error's param, a part of its
    message). A prompt over the window is counted (a text prompt only up to one token past it,
    "at least"); one filling it exactly leaves ``max_tokens`` 0."""
    window = max_model_len
    words = [{"role": "user", "content": "hello " * (window + 1)}]
    return [
        ("completions", {"prompt": [7] * (window + 5)}, "input_tokens", f"contains {window + 5} "),
        ("chat", {"messages": words}, "input_tokens", f"contains at least {window + 1} input"),
        ("completions", {"prompt": [7] * window, "max_tokens": 1}, "max_tokens", "got 0."),
        ("completions", {"prompt": [7] * window}, "max_tokens", "max_tokens must be at least 1"),
    ]


def check_prompt_window_refusal(
    status: int, body: dict[str, Any], param: str, message: str, max_model_len: int
) -> None:
    """The answer to a :func:`prompt_window_cases` case."""
    assert status == 400, body
    error = body["error"]
    assert (error["param"], error["code"], error["type"]) == (param, 400, "BadRequestError")
    assert message in error["message"], error
    if param == "input_tokens":  # what the gateway reads as context_length_exceeded
        assert f"maximum context length is {max_model_len} tokens" in error["message"], error


MULTI_ANSWER_CASES: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = [
    # (endpoint, request fields, the same prompts one request each): n answers per prompt, a
    # list of prompts answered each, as vLLM 0.32 answers them (ignore_eos: every answer is
    # max_tokens long, so the counts are exact)
    (
        "chat",
        {"messages": [{"role": "user", "content": "hi there"}], "n": 3},
        [{"messages": [{"role": "user", "content": "hi there"}]}],
    ),
    (
        "completions",
        {"prompt": ["a b", "c d e f"], "n": 2},
        [{"prompt": "a b"}, {"prompt": "c d e f"}],
    ),
    ("completions", {"prompt": [[5, 6, 7], [8, 9]]}, [{"prompt": [5, 6, 7]}, {"prompt": [8, 9]}]),
]
ANSWER_TOKENS = 3
"""Each answer's length in the multi-answer cases (``max_tokens`` with ``ignore_eos``)."""


def check_multi_answer(
    kind: str, fields: dict[str, Any], full: dict[str, Any], alone: list[dict[str, Any]]
) -> None:
    """A multi-answer response against the same prompts asked one request each (``alone``):
    one choice per prompt and answer, indexed in order; each prompt counted once in usage."""
    answers = len(alone) * fields.get("n", 1)
    assert [choice["index"] for choice in full["choices"]] == list(range(answers))
    assert {choice["finish_reason"] for choice in full["choices"]} == {"length"}
    usage = full["usage"]
    assert usage["prompt_tokens"] == sum(a["usage"]["prompt_tokens"] for a in alone), usage
    assert usage["completion_tokens"] == answers * ANSWER_TOKENS, usage


def check_multi_answer_stream(kind: str, fields: dict[str, Any], events: list[Any]) -> None:
    """The stream of a multi-answer request: each choice's chunks, a chat choice's first
    naming its role, and one usage chunk counting every answer's tokens."""
    answers = (len(fields["prompt"]) if kind == "completions" else 1) * fields.get("n", 1)
    *chunks, last = events
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == answers * ANSWER_TOKENS
    by_index: dict[int, list[dict[str, Any]]] = {}
    for chunk in chunks:
        (choice,) = chunk["choices"]
        by_index.setdefault(choice["index"], []).append(choice)
    assert sorted(by_index) == list(range(answers))
    for choices in by_index.values():
        if kind == "chat":
            assert choices[0]["delta"] == {"role": "assistant", "content": ""}
            choices = choices[1:]
        # vLLM may hold back a token that ends inside a UTF-8 character: at most one chunk each
        assert 1 <= len(choices) <= ANSWER_TOKENS, choices
        assert choices[-1]["finish_reason"] == "length"


CONTINUOUS_USAGE_CASES: list[tuple[str, dict[str, Any]]] = [
    # (endpoint, request fields): streams whose client asked for usage in every chunk
    # (stream_options.continuous_usage_stats), which the gateway passes on when the client also
    # asked for include_usage; answers of ANSWER_TOKENS tokens (ignore_eos)
    ("chat", {"messages": [{"role": "user", "content": "hi there"}]}),
    ("chat", {"messages": [{"role": "user", "content": "hi there"}], "n": 2}),
    ("completions", {"prompt": ["a b", "c d e f"]}),
]


def check_continuous_usage(kind: str, events: list[Any], *, include_usage: bool) -> None:
    """With ``include_usage``, as vLLM 0.32 streams ``continuous_usage_stats``: every chunk
    carries its choice's usage so far (its prompt, the tokens sent; a chat role chunk 0), and
    the stream ends with the usage of the whole request; without it, no chunk has usage."""
    if not include_usage:
        assert all("usage" not in event for event in events), events
        return
    *chunks, last = events
    assert last["choices"] == [] and last["usage"]["completion_tokens"] > 0, last
    by_index: dict[int, list[dict[str, Any]]] = {}
    for chunk in chunks:
        (choice,) = chunk["choices"]
        by_index.setdefault(choice["index"], []).append(chunk["usage"])
    for usages in by_index.values():
        counts = [usage["completion_tokens"] for usage in usages]
        assert counts == sorted(counts) and counts[-1] == ANSWER_TOKENS, usages
        assert (counts[0] == 0) is (kind == "chat"), usages  # a chat answer's role chunk
        assert len({usage["prompt_tokens"] for usage in usages}) == 1, usages
        for usage in usages:
            assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert last["usage"]["completion_tokens"] == ANSWER_TOKENS * len(by_index), last


ECHO_CASES: list[dict[str, Any]] = [
    # completions' echo, as vLLM 0.32 answers it: each answer starts with its prompt; with
    # max_tokens 0 the answer is the prompt alone, though one token is generated and counted
    {"prompt": "The capital of France is Paris", "max_tokens": 0},
    {"prompt": ["Hello there", "The capital"], "max_tokens": 0},
    {"prompt": "The capital of France is Paris", "max_tokens": ANSWER_TOKENS, "ignore_eos": True},
]


def check_echo(fields: dict[str, Any], full: dict[str, Any]) -> None:
    """Each choice is its prompt, then (unless max_tokens is 0) what was generated."""
    prompts = fields["prompt"] if isinstance(fields["prompt"], list) else [fields["prompt"]]
    generated = fields["max_tokens"] or 1  # 0: one token all the same, not shown
    assert [choice["index"] for choice in full["choices"]] == list(range(len(prompts)))
    for prompt, choice in zip(prompts, full["choices"], strict=True):
        assert choice["text"].startswith(prompt), choice
        assert (choice["text"] == prompt) is (fields["max_tokens"] == 0), choice
        assert choice["finish_reason"] == "length"
    assert full["usage"]["completion_tokens"] == generated * len(prompts), full["usage"]


def check_echo_stream(fields: dict[str, Any], events: list[Any]) -> None:
    """A streamed echo: each choice's texts joined read as :func:`check_echo`'s."""
    texts: dict[int, str] = {}
    for event in events:
        for choice in event["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    prompts = fields["prompt"] if isinstance(fields["prompt"], list) else [fields["prompt"]]
    for index, prompt in enumerate(prompts):
        assert texts[index].startswith(prompt), texts
        assert (texts[index] == prompt) is (fields["max_tokens"] == 0), texts


CONTEXT_REFUSAL = "cannot be greater than max_model_len"
"""What vLLM's refusal of an answer maximum over the context window says."""


def check_context_answer(
    status: int, body: dict[str, Any], param: str | None, max_model_len: int
) -> None:
    """The answer to a :func:`context_window_cases` case: refused naming ``param``, or (None)
    served within the window, prompt and answer together."""
    if param is None:
        assert status == 200, body
        usage = body["usage"]
        assert 0 < usage["completion_tokens"] <= max_model_len - usage["prompt_tokens"], usage
        return
    assert status == 400, body
    error = body["error"]
    assert (error["param"], error["code"]) == (param, 400)
    assert f"{param}={max_model_len + 1} {CONTEXT_REFUSAL}={max_model_len}" in error["message"]


def token_logprobs(kind: str, logprobs: list[dict[str, Any]]) -> list[tuple[float, list[float]]]:
    """Per generated token, its logprob and those of the likeliest tokens listed with it, read
    from a choice's ``logprobs`` (a list: one per chunk of a stream), checking vLLM's shape
    for ``kind`` ("chat" or "completion") on the way."""
    out: list[tuple[float, list[float]]] = []
    for part in logprobs:
        if kind == "chat":
            assert set(part) == {"content"}, part
            for entry in part["content"]:
                assert isinstance(entry["token"], str) and isinstance(entry["bytes"], list)
                top = [alternative["logprob"] for alternative in entry["top_logprobs"]]
                out.append((entry["logprob"], top))
        else:
            assert set(part) == {"text_offset", "token_logprobs", "tokens", "top_logprobs"}
            assert len({len(column) for column in part.values()}) == 1, part
            offsets = part["text_offset"]
            assert offsets == sorted(offsets), part
            for token, logprob, top in zip(
                part["tokens"], part["token_logprobs"], part["top_logprobs"], strict=True
            ):
                assert top[token] == logprob, part  # the sampled token is listed too
                out.append((logprob, list(top.values())))
    return out


def replay(address: str, start: int, timeout_s: float = 30.0) -> list[KvEventMessage]:
    """Ask a KV-event publisher's replay socket (vLLM's ``replay_endpoint``) for every message
    it keeps from ``start`` on, as vLLM's protocol has it; fails unless the end marker comes."""
    import zmq

    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RCVHWM, 0)
    try:
        dealer.connect(address)
        dealer.send_multipart([b"", start.to_bytes(8, "big")])
        messages = []
        while True:
            assert dealer.poll(int(timeout_s * 1000)), f"no end of the replay from {address}"
            frames = dealer.recv_multipart()
            if frames[2] == REPLAY_END:
                return messages
            messages.append(decode_kv_event_message(frames[1:]))
    finally:
        dealer.close()
        context.term()


def replayed_prompt_blocks(messages: list[KvEventMessage]) -> list[int]:
    """The token ids of the blocks the replayed messages say were stored, in order, after
    checking the messages come in sequence order without a gap."""
    seqs = [m.seq for m in messages]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    return [
        t for m in messages for e in m.events if isinstance(e, BlockStored) for t in e.token_ids
    ]
