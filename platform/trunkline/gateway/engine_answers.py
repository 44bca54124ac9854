"""Read what engines answer: the usage of a plain answer, and a stream's events one by one as
they are relayed (usage noted, the usage-only chunk held or dropped, an answer the engine gave up
told from one it finished), with the gateway's own error event that ends a stream."""

from __future__ import annotations

import enum
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import msgspec

from trunkline.errors import UpstreamError
from trunkline.gateway.errors import engine_error
from trunkline.metering.schemas import Count

MAX_ANSWER_BYTES = 256 << 20
"""The most of an engine's answer the gateway holds at once: a plain answer whole, or one event
of a stream. The largest an engine means to send: embeddings of 2,048 inputs (OpenAI's most) of
a 4,096-dimension model, about 177 MiB as vLLM writes floats (22 bytes each); the first event of
a completion streamed with ``echo`` and ``logprobs``, about 16 MB for a long prompt. More, from
a broken engine or what fronts it, grew the gateway's memory, which every tenant's requests
share, without bound; the answer ends as the gateway's error instead (``AnswerTooLarge``)."""

_DONE_EVENT = b"data: [DONE]"
_DONE = _DONE_EVENT + b"\n\n"
_FINISH_REASON = b'"finish_reason":'
_FINISH_REASON_LEN = len(_FINISH_REASON)


class NotAStream(httpx.RemoteProtocolError):
    """A streamed request was answered 200 without an event stream: what fronts the engine sent
    a whole answer or an error page. Nothing has reached the client, so the next endpoint is
    tried, as when an engine fails before its first event."""


class AnswerTooLarge(UpstreamError):
    """The engine's answer (a plain one whole, or one event of a stream) passed
    ``MAX_ANSWER_BYTES``. Not the engine's failure: another endpoint would answer the same, so
    none is tried, and its health is not counted against it. Nor is the same request worth
    sending again: ``x-should-retry: false`` keeps the OpenAI SDKs, which retry a 5xx twice
    by themselves, from having the engine generate it three times."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"The model endpoint's {what} was larger than the gateway relays "
            f"({MAX_ANSWER_BYTES >> 20} MiB); ask for less (max_tokens, n, logprobs, echo).",
            reason="upstream_error",
            extra={"headers": {"x-should-retry": "false"}},
        )


async def read_whole(response: httpx.Response) -> bytes:
    """A plain answer's body, read whole (into ``response.content``) and no further than
    ``MAX_ANSWER_BYTES``: one sent without end was read, and held, for ever."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_ANSWER_BYTES:
        raise AnswerTooLarge("answer")
    if isinstance(response.stream, httpx.AsyncByteStream):  # not read yet
        response.stream = _Capped(response.stream)
    return await response.aread()


class _Capped(httpx.AsyncByteStream):
    """A body that raises ``AnswerTooLarge`` once past ``MAX_ANSWER_BYTES``."""

    def __init__(self, stream: httpx.AsyncByteStream) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for piece in self._stream:
            size += len(piece)
            if size > MAX_ANSWER_BYTES:
                raise AnswerTooLarge("answer")
            yield piece

    async def aclose(self) -> None:
        await self._stream.aclose()


class EngineGaveUp(httpx.HTTPError):
    """The engine ended a stream unfinished: an event said it aborted or failed the request,
    or ``[DONE]`` came before any ``finish_reason``."""


class _Details(msgspec.Struct):
    cached_tokens: Count | None = None


class _Usage(msgspec.Struct):
    """An engine's usage block. Counts no engine can mean (negative: tokens off the tenant's
    quota and bill; past the ledger's integer) fail to decode, and the answer is taken as one
    without usage: the prompt at the quota's estimate, no completion counted."""

    prompt_tokens: Count = 0
    completion_tokens: Count | None = 0
    prompt_tokens_details: _Details | None = None


class _WithUsage(msgspec.Struct):
    usage: _Usage | None = None
    choices: list[msgspec.Raw] | None = None


_usage_decoder = msgspec.json.Decoder(_WithUsage)


class _Choice(msgspec.Struct):
    index: int = 0


_choice_decoder = msgspec.json.Decoder(_Choice)


class _ErrorInfo(msgspec.Struct):
    code: int | str | None = None


class _ErrorEvent(msgspec.Struct):
    error: _ErrorInfo


_error_event_decoder = msgspec.json.Decoder(_ErrorEvent)


@dataclass
class Tally:
    """What one request used, filled in as the response goes by."""

    started: float = field(default_factory=time.perf_counter)
    first_byte: float | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    chunks: int = 0
    usage_seen: bool = False
    answers_per_prompt: int = 1
    """``n``: choices ``0 .. n - 1`` answer the first prompt, ``n ..`` the next."""
    so_far: dict[int, int] = field(default_factory=dict)
    """Per choice, the completion tokens its last chunk's usage counted (vLLM's
    ``continuous_usage_stats``): its own tokens so far, until the response's usage comes."""
    prompts_so_far: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Per prompt, the prompt and cached tokens its choices' last usage counted."""
    cached_so_far: int = 0
    """The sum of :attr:`prompts_so_far`'s cached tokens, before the miscount guard."""
    finished: bool = False
    """A stream's event had a ``finish_reason`` (or an error blaming the request): the engine
    ended the answer, rather than gave it up."""

    def take_usage(self, usage: _Usage, choice: int | None = None) -> None:
        """Note the response's usage, or (``choice``) the usage so far of one of its choices,
        which counts that choice's tokens alone: the response's so far is then every choice's
        tokens and each prompt once (a stream cut short is billed all it sent)."""
        self.usage_seen = True
        completion, prompt, cached = (
            usage.completion_tokens or 0,
            usage.prompt_tokens,
            _cached(usage),
        )
        if choice is None:
            self.so_far.clear()
            self.prompts_so_far.clear()
            self.completion_tokens, self.prompt_tokens = completion, prompt
        else:
            if not self.so_far:  # the first choice's (or one after the response's usage)
                self.completion_tokens = self.prompt_tokens = self.cached_so_far = 0
            # Each chunk moves the totals by what it changed, in constant time: a stream of a
            # thousand prompts is a thousand choices, each chunk of which is one choice's.
            self.completion_tokens += completion - self.so_far.get(choice, 0)
            self.so_far[choice] = completion
            at = choice // self.answers_per_prompt
            before = self.prompts_so_far.get(at, (0, 0))
            self.prompts_so_far[at] = (prompt, cached)
            self.prompt_tokens += prompt - before[0]
            self.cached_so_far += cached - before[1]
            cached = self.cached_so_far
        self.cached_tokens = min(max(cached, 0), self.prompt_tokens)  # an engine's miscount

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_byte is None else (self.first_byte - self.started) * 1000


def _cached(usage: _Usage) -> int:
    details = usage.prompt_tokens_details
    return (details.cached_tokens or 0) if details else 0


def read_usage(body: bytes, tally: Tally) -> bool:
    """Take the usage block of a non-streamed JSON response, if it has one; False when the body
    is not a JSON object at all (not an engine's answer: an HTML page of what fronts it)."""
    try:
        parsed = _usage_decoder.decode(body)
    except msgspec.ValidationError:  # JSON, but its usage is not vLLM's: an answer all the same
        return _is_json_object(body)
    except msgspec.DecodeError:
        return False
    if parsed.usage is not None:
        tally.take_usage(parsed.usage)
    return True


def _is_json_object(body: bytes) -> bool:
    try:
        return isinstance(msgspec.json.decode(body), dict)
    except msgspec.DecodeError:
        return False


def is_event_stream(response: httpx.Response) -> bool:
    """Whether ``response`` is the server-sent events a streamed request must get (vLLM's
    ``text/event-stream``), not a whole answer or an error page sent with 200."""
    kind: str = response.headers.get("content-type", "")
    return kind.split(";")[0].strip().lower() == "text/event-stream"


async def relay_events(
    response: httpx.Response, tally: Tally, *, keep_usage_chunk: bool
) -> AsyncIterator[bytes]:
    """Yield whole SSE events as they arrive; note usage; drop the usage-only chunk
    when the client did not ask for it. Raises httpx errors if the engine dies, and
    :class:`EngineGaveUp` where it ends the stream unfinished (what came before still goes
    out): vLLM stopping on SIGTERM ends what it runs with ``finish_reason: "abort"``, an error
    event (its engine core died) or ``[DONE]`` alone (docs/real-vllm.md); so is a stream
    closed with neither a finish nor ``[DONE]``. A usage-only chunk
    goes out with what follows it, so a stream that ends unfinished before its first token
    has sent nothing yet."""
    frames, held = _Frames(), b""
    async for piece in response.aiter_raw():
        if tally.first_byte is None:
            tally.first_byte = time.perf_counter()
        events = frames.feed(piece)
        if not events:
            continue
        out = bytearray()
        for event in events:
            verdict = _verdict(event, tally, keep_usage_chunk)
            if verdict is _REFUSED:
                event, verdict = _in_openai_shape(event), _SEND
            if verdict is _SEND:
                if held:
                    out += held
                    held = b""
                out += event
                out += b"\n\n"
            elif verdict is _HOLD:
                held += event + b"\n\n"
            elif verdict is _GAVE_UP:
                if out:
                    yield bytes(out)
                raise EngineGaveUp("the engine ended the stream unfinished")
        if out:
            yield bytes(out)
    rest = frames.rest()
    if not tally.finished and not _finishes(rest, tally):
        # Closed without a finish or [DONE] (a proxy ending its body where the engine broke
        # off): unfinished as [DONE] alone is, not an answer that came whole.
        raise EngineGaveUp("the engine's stream ended unfinished")
    if held or rest.strip():
        yield held + rest


def _finishes(tail: bytes, tally: Tally) -> bool:
    """Whether the stream's last bytes, an event its end cut short of its blank line, finish
    it (noted on ``tally``)."""
    event = tail.strip()
    return bool(event) and _verdict(event, tally, True) is not _GAVE_UP and tally.finished


class _Frames:
    """Whole SSE events cut from the pieces a stream arrives in, each byte joined and searched
    for the blank line that ends its event once: the piece holding an event's end joins those
    before it. An event arriving in many pieces was searched and copied again at each (vLLM's
    first event of a completion streamed with ``echo`` and ``logprobs`` carries the whole
    prompt's log-probabilities: 16 MB in 64 kB pieces held the event loop 2-6 s)."""

    __slots__ = ("_newline", "_pending", "_size")

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._size = 0
        self._newline = False
        """The pending bytes end with a newline (an event's end may span two pieces)."""

    def feed(self, piece: bytes) -> list[bytes]:
        """The events ``piece`` ends (none while an event is still arriving)."""
        if b"\n\n" not in piece and not (self._newline and piece[:1] == b"\n"):
            if piece:
                self._pending.append(piece)
                self._size += len(piece)
                self._newline = piece[-1:] == b"\n"
                if self._size > MAX_ANSWER_BYTES:  # an event not ended yet
                    raise AnswerTooLarge("stream event")
            return []
        self._pending.append(piece)
        *events, rest = b"".join(self._pending).split(b"\n\n")
        if any(len(event) > MAX_ANSWER_BYTES for event in events):
            raise AnswerTooLarge("stream event")
        self._pending = [rest] if rest else []
        self._size = len(rest)
        self._newline = rest[-1:] == b"\n"
        return events

    def rest(self) -> bytes:
        """What came after the last whole event."""
        return b"".join(self._pending)


class _Verdict(enum.Enum):
    SEND = enum.auto()
    HOLD = enum.auto()
    """Sent with the next event sent: if the stream turns out unfinished, it never is."""
    DROP = enum.auto()
    GAVE_UP = enum.auto()
    REFUSED = enum.auto()
    """The engine's error event blaming the request (a 4xx): sent, in OpenAI's shape."""


_SEND, _HOLD, _GAVE_UP, _REFUSED = _Verdict.SEND, _Verdict.HOLD, _Verdict.GAVE_UP, _Verdict.REFUSED


def _verdict(event: bytes, tally: Tally, keep_usage_chunk: bool) -> _Verdict:
    """What to do with one event (noting its usage and finish on ``tally``)."""
    if event == _DONE_EVENT:
        return _Verdict.SEND if tally.finished else _Verdict.GAVE_UP
    if not event.startswith(b"data: {"):
        return _Verdict.SEND
    tally.chunks += 1
    at = event.rfind(_FINISH_REASON)  # from the end, where vLLM writes it
    if at >= 0:
        at += _FINISH_REASON_LEN
        if not event.startswith(b"null", at):  # most are (written without a space)
            reason = _finish_reason(event, at)
            if reason == b"abort":
                return _Verdict.GAVE_UP
            tally.finished = tally.finished or reason is not None
    elif event.startswith(b'data: {"error"'):
        if _refusal_status(event) is None:
            return _Verdict.GAVE_UP
        tally.finished = True  # by the request's fault: the client reads why
        return _Verdict.REFUSED
    if b'"usage":{' not in event and b'"usage": {' not in event:
        return _Verdict.SEND
    try:
        parsed = _usage_decoder.decode(event[6:])
    except msgspec.DecodeError:
        return _Verdict.SEND
    if parsed.usage is None:
        return _Verdict.SEND
    if not parsed.choices:
        tally.take_usage(parsed.usage)
        return _Verdict.HOLD if keep_usage_chunk else _Verdict.DROP
    # A choice's chunk with usage: vLLM's continuous_usage_stats, that choice's so far.
    tally.take_usage(parsed.usage, _choice_index(parsed.choices[0]))
    return _Verdict.SEND


def _choice_index(choice: msgspec.Raw) -> int:
    try:
        return _choice_decoder.decode(choice).index
    except msgspec.DecodeError:
        return 0


def _finish_reason(event: bytes, at: int) -> bytes | None:
    """The ``finish_reason`` string whose value starts at ``at`` (``length``, ``abort``...),
    None if it is none. A quote inside generated text is escaped, so no text matches."""
    value = event[at : at + 24].lstrip()
    end = value.find(b'"', 1)
    return value[1:end] if value.startswith(b'"') and end > 0 else None


def _refusal_status(event: bytes) -> int | None:
    """The 4xx ``code`` of an error event blaming the request; None when it is the engine's
    failure: vLLM sends one (``"code": 500``) to the streams it runs when its engine core
    died."""
    try:
        code = _error_event_decoder.decode(event[6:]).error.code
    except msgspec.DecodeError:
        return None
    return code if isinstance(code, int) and 400 <= code < 500 else None


def _in_openai_shape(event: bytes) -> bytes:
    """An engine's error event blaming the request as OpenAI words one, as the engine's 4xx
    answers are (:func:`engine_error`): vLLM's ``"type": "BadRequestError"`` and integer
    ``code`` reached clients that read ``type`` and ``code`` as OpenAI's."""
    return b"data: " + engine_error(_refusal_status(event) or 400, event[6:])


def error_event(message: str, code: str, *, kind: str = "server_error") -> bytes:
    """The event that ends a stream in error (OpenAI's error shape), then ``[DONE]``."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return b"data: " + msgspec.json.encode(body) + b"\n\n" + _DONE
