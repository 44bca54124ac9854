"""Requests to the simulated vLLM server: checks and tokenization of decoded JSON bodies.

Pure functions. What they refuse, they refuse as vLLM does: HTTP 400 ``BadRequestError`` for
malformed or oversized requests, 404 ``NotFoundError`` for a model the server does not serve,
with vLLM's messages where the gateway or a client might match on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from trunkline.engines.openai_fields import (
    ApiError,
    Json,
    bad_request,
    invalid_field,
    json_object,
    read_flag,
    read_integer,
    read_number,
    read_optional,
    refused,
)
from trunkline.engines.requests import find_stop
from trunkline.engines.tokens import (
    VOCAB_SIZE,
    ChatMessage,
    apply_chat_template,
    detokenize,
    tokenize,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "ApiError",
    "EmbeddingParams",
    "GenerateParams",
    "ServedModel",
    "parse_chat",
    "parse_completion",
    "parse_embeddings",
]

DEFAULT_MAX_TOKENS = 16


@dataclass(frozen=True, slots=True)
class ServedModel:
    name: str
    max_model_len: int


@dataclass(frozen=True, slots=True)
class GenerateParams:
    prompt_tokens: list[int]
    max_tokens: int
    stream: bool = False
    include_usage: bool = False
    continuous_usage: bool = False
    """``stream_options.continuous_usage_stats`` with ``include_usage``: as vLLM, every chunk
    carries its choice's usage so far."""
    cache_salt: str | None = None
    seed: int | None = None
    ends_at_max: bool = False
    """A chat request with no maximum: vLLM generates until the model's end-of-sequence token;
    the simulated model's answer ends after :data:`DEFAULT_MAX_TOKENS` with ``stop``."""
    logprobs: int | None = None
    """Log-probabilities asked for (None: none): how many of the likeliest tokens each position
    lists, the generated one included (chat's ``top_logprobs``, completions' ``logprobs`` + 1,
    as vLLM counts them)."""
    n: int = 1
    """Answers per prompt."""
    more_prompts: tuple[tuple[list[int], int], ...] = ()
    """A completions list's other prompts, each with its own ``max_tokens`` (vLLM clamps it to
    what each prompt leaves of the context)."""
    echo: tuple[str, ...] | None = None
    """Completions' ``echo``: per prompt, its text, which each of its answers starts with."""
    stop: tuple[str, ...] = ()
    """Stop strings: an answer ends before the first it meets (``finish_reason`` stop, the
    string in ``stop_reason``)."""
    min_tokens: int = 0
    """Stop strings are looked for only past an answer's first ``min_tokens`` tokens."""
    include_stop: bool = False
    """``include_stop_str_in_output``: an answer ends with the stop string it met, not before
    it (and a stream holds nothing back)."""
    echo_only: bool = False
    """``echo`` with ``max_tokens`` 0 (scoring a prompt): as vLLM, one token is generated (and
    counted in the usage) but the answer is the prompt alone."""

    def answers(self) -> list[tuple[list[int], int]]:
        """(prompt, max_tokens) of every choice, in vLLM's order: each prompt's ``n`` answers."""
        prompts = [(self.prompt_tokens, self.max_tokens), *self.more_prompts]
        return [prompt for prompt in prompts for _ in range(self.n)]

    def cut_at_stop(self, generated: str, last_chars: int, tokens: int) -> tuple[str, str | None]:
        """An answer's whole text (``tokens`` of them, the last ``last_chars`` characters long)
        up to the stop string its last token completed, and that string (None: none)."""
        found = find_stop(generated, last_chars, self.stop) if tokens > self.min_tokens else None
        if found is None:
            return generated, None
        text, at = found
        return generated[: at + len(text) if self.include_stop else at], text

    def stop_held(self) -> int:
        """The characters a stream holds back, as vLLM does: what could begin a stop string
        it leaves out of the text."""
        if not self.stop or self.include_stop:
            return 0
        return max(len(text) for text in self.stop) - 1

    def answer_text(self, index: int, generated: str) -> str:
        """What choice ``index`` says, its echoed prompt first."""
        if self.echo is None:
            return generated
        return self.echo[index // self.n] + ("" if self.echo_only else generated)


MAX_N = 128
"""The most answers per prompt the simulator generates (vLLM sets no limit)."""


@dataclass(frozen=True, slots=True)
class EmbeddingParams:
    inputs: list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"


def _check_model(body: Json, served: ServedModel) -> None:
    model = body.get("model")
    if model is not None and model != served.name:
        raise ApiError(404, f"The model `{model}` does not exist.", param="model")


def _token_ids(value: object, name: str) -> list[int] | None:
    if not isinstance(value, list) or not all(
        isinstance(item, int) and not isinstance(item, bool) for item in value
    ):
        return None
    for item in value:
        if not 0 <= item < VOCAB_SIZE:
            raise bad_request(f"Token id {item} is out of vocabulary", name)
    return list(value)


def _check_prompt_length(tokens: list[int], served: ServedModel, *, text: bool) -> None:
    """Refuse a prompt over the context window, counted as vLLM counts it: a text prompt is
    tokenized only up to one token past the window ("at least" that many)."""
    limit = served.max_model_len
    if len(tokens) <= limit:
        return
    count = min(len(tokens), limit + 1) if text else len(tokens)
    qualifier = "at least " if count == limit + 1 else ""
    raise refused(
        f"This model's maximum context length is {limit} tokens. However, your prompt contains "
        f"{qualifier}{count} input tokens, which exceeds this limit even without any output "
        "tokens. Please reduce the length of the input prompt.",
        "input_tokens",
        count,
    )


def _max_tokens(
    body: Json, names: tuple[str, ...], prompt_len: int, served: ServedModel, *, echo: bool = False
) -> int:
    limit = served.max_model_len
    name = next((name for name in names if body.get(name) is not None), names[-1])
    requested = body.get(name)
    if requested is None:
        allowed = min(DEFAULT_MAX_TOKENS, limit - prompt_len)
    elif not isinstance(requested, int) or isinstance(requested, bool):
        raise bad_request("max_tokens must be an integer.", "max_tokens")
    elif requested == 0 and echo:
        return 1  # the prompt echoed alone; vLLM generates (and counts) one token all the same
    elif requested > limit:
        raise refused(
            f"{name}={requested} cannot be greater than max_model_len={limit}. Please request "
            "fewer output tokens.",
            name,
            requested,
        )
    else:  # vLLM clamps it to what the prompt leaves: a prompt filling the window leaves 0
        allowed = min(requested, limit - prompt_len)
    if allowed < 1:
        raise refused(f"max_tokens must be at least 1, got {allowed}.", "max_tokens", allowed)
    return allowed


def _check_sampling(body: Json) -> None:
    """vLLM's checks on the sampling parameters it validates (its messages and params)."""
    temperature = read_number(body, "temperature")
    if temperature is not None and not 0 <= temperature <= 2:
        rule = "must be non-negative" if temperature < 0 else "must be in [0, 2]"
        raise bad_request(
            f"temperature {rule}, got {temperature}. (parameter=temperature, value={temperature})",
            "temperature",
        )
    top_p = read_number(body, "top_p")
    if top_p is not None and not 0 < top_p <= 1:
        raise bad_request(
            f"top_p must be in (0, 1], got {top_p}. (parameter=top_p, value={top_p})", "top_p"
        )
    for name in ("presence_penalty", "frequency_penalty"):
        penalty = read_number(body, name)
        if penalty is not None and not -2 <= penalty <= 2:
            raise bad_request(f"{name} must be in [-2, 2], got {penalty}.")
    top_k = read_integer(body, "top_k")
    if top_k is not None and top_k < -1:  # -1 is vLLM's old spelling of 0 (disabled)
        raise bad_request(f"top_k must be 0 (disable), or at least 1, got {top_k}.")
    stop = body.get("stop")
    strings = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(strings, list) or not all(isinstance(item, str) for item in strings):
        raise invalid_field("stop", "string_type", "Input should be a valid string", stop)
    if len(strings) > MAX_STOP_STRINGS:
        message = f"List should have at most {MAX_STOP_STRINGS} items after validation, not "
        raise invalid_field("stop", "too_long", f"{message}{len(strings)}", stop)


MAX_STOP_STRINGS = 4
"""The most ``stop`` strings vLLM's request model takes (OpenAI's limit)."""

MAX_LOGPROBS = 20
"""vLLM's default ``--max-logprobs``."""


def _logprobs(body: Json, chat: bool) -> int | None:
    """How many of the likeliest tokens each answer position lists (None: no logprobs), with
    vLLM's checks: chat's ``logprobs`` (bool) and ``top_logprobs``, completions' ``logprobs``
    (the count of alternatives; the sampled token comes on top)."""
    if chat:
        wanted = read_flag(body, "logprobs")
        if isinstance(body.get("top_logprobs"), str):  # vLLM reads no number from a string here
            raise refused(
                "`top_logprobs` must be an integer.", "top_logprobs", body["top_logprobs"]
            )
        top = read_integer(body, "top_logprobs")
        if top is not None and top < -1:
            raise bad_request("`top_logprobs` must be a positive value or -1.", "top_logprobs")
        if top is not None and top != 0 and not wanted:
            raise bad_request(
                "when using `top_logprobs`, `logprobs` must be set to true.", "top_logprobs"
            )
        if not wanted:
            return None
        count = top or 0
    else:
        value = body.get("logprobs")
        if value is None:
            return None
        if not isinstance(value, int | float):  # a boolean is an integer to vLLM: false is 0
            raise refused("`logprobs` must be an integer.", "logprobs", value)
        count = read_integer(body, "logprobs") or 0
        if count < -1:
            raise bad_request("`logprobs` must be a positive value or -1.", "logprobs")
    requested = VOCAB_SIZE if count == -1 else count
    if requested > MAX_LOGPROBS:
        raise bad_request(
            f"Requested sample logprobs of {requested}, which is greater than max allowed: "
            f"{MAX_LOGPROBS}",
            "logprobs",
        )
    return requested if chat else requested + 1


def _generate_params(
    body: Json,
    prompts: list[list[int]],
    names: tuple[str, ...],
    served: ServedModel,
    *,
    ends_naturally: bool = False,
    chat: bool = False,
    echo: tuple[str, ...] | None = None,
) -> GenerateParams:
    stream = bool(read_flag(body, "stream"))
    options = read_optional(body, "stream_options", dict)
    if options and not stream:  # an empty object says nothing: vLLM lets it pass
        raise bad_request(
            "Stream options can only be defined when `stream=True`.", "stream_options"
        )
    n = body.get("n")
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool):
        raise invalid_field("n", "int_type", "Input should be a valid integer", n)
    if n < 1:
        raise bad_request(f"n must be at least 1, got {n}.", "n")
    if n > MAX_N:
        raise bad_request(f"The simulator generates at most {MAX_N} answers per prompt.", "n")
    _check_sampling(body)
    echoing = echo is not None
    limits = [_max_tokens(body, names, len(prompt), served, echo=echoing) for prompt in prompts]
    min_tokens = read_integer(body, "min_tokens")
    if min_tokens is not None and min_tokens > min(limits):
        raise bad_request(
            f"min_tokens must be less than or equal to max_tokens={min(limits)}, got {min_tokens}."
        )
    return GenerateParams(
        prompt_tokens=prompts[0],
        max_tokens=limits[0],
        n=n,
        more_prompts=tuple(zip(prompts[1:], limits[1:], strict=True)),
        stream=stream,
        include_usage=bool(options and options.get("include_usage")),
        continuous_usage=bool(
            options and options.get("include_usage") and options.get("continuous_usage_stats")
        ),
        cache_salt=read_optional(body, "cache_salt", str),
        seed=read_integer(body, "seed"),
        ends_at_max=ends_naturally and all(body.get(name) is None for name in names),
        logprobs=_logprobs(body, chat),
        echo=echo,
        echo_only=echoing and body.get("max_tokens") == 0,
        stop=_stop_strings(body),
        min_tokens=min_tokens or 0,
        include_stop=bool(read_flag(body, "include_stop_str_in_output")),
    )


def _stop_strings(body: Json) -> tuple[str, ...]:
    """The request's stop strings (checked by :func:`_check_sampling`); empty ones mean none."""
    stop = body.get("stop")
    strings = [] if stop is None else [stop] if isinstance(stop, str) else stop
    return tuple(text for text in strings if text)


def _message_text(message: object, index: int) -> ChatMessage:
    param = f"messages[{index}]"
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise bad_request(f"{param} must be an object with a string 'role'.", param)
    content = message.get("content")
    if content is None and message["role"] != "assistant":
        raise invalid_field(
            f"messages.{index}.ChatCompletionDeveloperMessageParam.content",
            "string_type",
            "Input should be a valid string",
            content,
        )
    if content is None or isinstance(content, str):
        return ChatMessage(message["role"], content or "")
    if isinstance(content, list):
        texts = [part.get("text") for part in content if isinstance(part, dict)]
        if len(texts) == len(content) and all(isinstance(text, str) for text in texts):
            return ChatMessage(message["role"], "\n".join(str(text) for text in texts))
    raise bad_request(f"{param}.content must be a string or a list of text parts.", param)


def parse_chat(body: object, served: ServedModel) -> GenerateParams:
    """Check a ``/v1/chat/completions`` body and apply the chat template."""
    request = json_object(body)
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("Field required: 'messages' must be a non-empty list.", "messages")
    _check_model(request, served)
    prompt = apply_chat_template(
        _message_text(message, index) for index, message in enumerate(messages)
    )
    _check_prompt_length(prompt, served, text=True)
    # Without a maximum, a chat answer ends at the model's end-of-sequence token (completions
    # keep OpenAI's legacy default of 16 tokens, cut with "length", as vLLM does).
    names = ("max_completion_tokens", "max_tokens")
    return _generate_params(request, [prompt], names, served, ends_naturally=True, chat=True)


def _prompts(value: object, name: str, served: ServedModel) -> list[list[int]]:
    """A completions ``prompt``: a text, token ids, or a list of either (one answer each)."""
    if isinstance(value, str) or _token_ids(value, name) is not None:
        items: list[object] = [value]
    elif isinstance(value, list) and value and all(isinstance(v, str | list) for v in value):
        items = list(value)
    else:
        raise bad_request(
            f"'{name}' must be a string, a list of token ids, or a non-empty list of either.",
            name,
        )
    prompts = []
    for item in items:
        tokens = tokenize(item) if isinstance(item, str) else _token_ids(item, name)
        if tokens is None:
            raise bad_request(
                f"Every item of '{name}' must be a string or a list of token ids.", name
            )
        if not tokens:
            raise bad_request("The prompt must not be empty.", name)
        _check_prompt_length(tokens, served, text=isinstance(item, str))
        prompts.append(tokens)
    return prompts


def parse_completion(body: object, served: ServedModel) -> GenerateParams:
    """Check a ``/v1/completions`` body and tokenize its prompt."""
    request = json_object(body)
    if request.get("prompt") is None:
        raise bad_request("Field required: 'prompt'.", "prompt")
    _check_model(request, served)
    suffix = request.get("suffix")
    if suffix is not None and not isinstance(suffix, str):
        raise invalid_field("suffix", "string_type", "Input should be a valid string", suffix)
    if suffix is not None:  # the simulated model, like the tests' real one, has no FIM template
        raise bad_request(
            "suffix is only supported for models with FIM completion rendering", "suffix"
        )
    prompts = _prompts(request["prompt"], "prompt", served)
    echo = None
    if read_flag(request, "echo"):
        raw = request["prompt"]
        items = [raw] if isinstance(raw, str) or _token_ids(raw, "prompt") is not None else raw
        echo = tuple(i if isinstance(i, str) else detokenize(i) for i in items)
    return _generate_params(request, prompts, ("max_tokens",), served, echo=echo)


def parse_embeddings(body: object, served: ServedModel) -> EmbeddingParams:
    """Check a ``/v1/embeddings`` body and tokenize every input."""
    request = json_object(body)
    raw = request.get("input")
    if raw is None or raw == [] or raw == "":
        raise bad_request("Field required: 'input' must be non-empty.", "input")
    _check_model(request, served)
    if request.get("dimensions") is not None:
        raise bad_request(
            f'Model "{served.name}" does not support matryoshka representation, '
            "changing output dimensions will lead to poor results.",
            "dimensions",
        )
    encoding: Literal["float", "base64"]
    match request.get("encoding_format"):
        case None | "float":
            encoding = "float"
        case "base64":
            encoding = "base64"
        case _:
            raise bad_request("encoding_format must be 'float' or 'base64'.", "encoding_format")
    if isinstance(raw, str) or _token_ids(raw, "input") is not None:
        items: list[object] = [raw]
    elif isinstance(raw, list):
        items = list(raw)
    else:
        raise bad_request("'input' must be a string, a list of strings or token id lists.", "input")
    inputs: list[list[int]] = []
    for item in items:
        tokens = tokenize(item) if isinstance(item, str) else _token_ids(item, "input")
        if not tokens:
            raise bad_request("Every input must be a non-empty string or token id list.", "input")
        if len(tokens) > served.max_model_len:
            raise bad_request(
                f"This model's maximum context length is {served.max_model_len} tokens. However,"
                f" you requested {len(tokens)} tokens in the input for embedding generation. "
                "Please reduce the length of the input.",
                "input",
            )
        inputs.append(tokens)
    return EmbeddingParams(inputs=inputs, encoding_format=encoding)
