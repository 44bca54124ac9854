"""Map Trunkline errors to OpenAI's error shape, once, for the whole gateway."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from trunkline import errors
from trunkline.auth.secrets import redacted

# code -> (HTTP status, OpenAI error type). OpenAI types every client error but a 429
# ``invalid_request_error``, a bad key (401), a model refused (403) or unknown (404) too: there
# is no ``authentication_error``, ``permission_error`` or ``not_found_error`` in its API.
_STATUS: dict[str, tuple[int, str]] = {
    errors.InvalidRequest.code: (400, "invalid_request_error"),
    errors.PayloadTooLarge.code: (413, "invalid_request_error"),
    errors.RequestTimeout.code: (408, "invalid_request_error"),
    errors.ClientClosed.code: (499, "invalid_request_error"),  # nobody reads it
    errors.MethodNotAllowed.code: (405, "invalid_request_error"),
    errors.UnsupportedMediaType.code: (415, "invalid_request_error"),
    errors.Unauthenticated.code: (401, "invalid_request_error"),
    errors.Forbidden.code: (403, "invalid_request_error"),
    errors.NotFound.code: (404, "invalid_request_error"),
    errors.Conflict.code: (409, "invalid_request_error"),
    errors.RateLimited.code: (429, "rate_limit_error"),
    errors.QuotaExhausted.code: (429, "insufficient_quota"),
    errors.SloUnattainable.code: (503, "server_error"),
    errors.Unavailable.code: (503, "server_error"),
    errors.UpstreamError.code: (502, "server_error"),
    errors.UpstreamUnavailable.code: (503, "server_error"),
    errors.UpstreamTimeout.code: (504, "server_error"),
}


class OpenAIError(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(msgspec.Struct):
    error: OpenAIError


def status_and_body(exc: errors.TrunklineError) -> tuple[int, OpenAIErrorBody]:
    status, kind = _STATUS.get(exc.code, (500, "server_error"))
    # ``reason`` carries the OpenAI-level code (e.g. invalid_api_key, model_not_found).
    message = exc.message if status < 500 or exc.code != "internal_error" else "internal error"
    # a key sent where a name goes (the model, the URL) is repeated with its secret cut
    message = redacted(message)
    return status, OpenAIErrorBody(OpenAIError(message, kind, exc.param, exc.reason or exc.code))


def encode_error(exc: errors.TrunklineError) -> tuple[int, bytes]:
    status, body = status_and_body(exc)
    return status, msgspec.json.encode(body)


_CONTEXT_LENGTH = re.compile(
    r"maximum (context|model) length|greater than max_model_len"
    r"|max_tokens must be at least 1, got (0|-)",
    re.IGNORECASE,
)
"""vLLM's words for a prompt over ``max_model_len`` (both wordings of its versions), for an
answer maximum over it, and (0.32) for a prompt that leaves no room for an answer: vLLM clamps
the maximum to what the prompt leaves, and refuses 0. A client's own maximum under 1 never
reaches an engine (``pipeline._check_payload`` refuses it)."""
_ENGINE_TYPES = {429: "rate_limit_error"}
"""OpenAI's error type per engine status; any other 4xx is an ``invalid_request_error``."""


def engine_error(status: int, payload: bytes) -> bytes:
    """An engine's 4xx answer in OpenAI's shape: vLLM writes ``"type": "BadRequestError"`` and
    an integer ``code`` (older versions put the fields at the top level). Its message and
    ``param`` are kept; ``type`` is OpenAI's for the status, and ``code`` OpenAI's
    ``context_length_exceeded`` for a prompt over the context, else the engine's string code,
    else none."""
    try:
        document: Any = msgspec.json.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        document = None
    fields = document.get("error", document) if isinstance(document, dict) else None
    if not isinstance(fields, dict):
        fields = {"message": payload.decode("utf-8", "replace")[:1000] or f"HTTP {status}"}
    # FastAPI's own validation errors (a 422 before vLLM's handlers run) say it in "detail".
    said = fields.get("message") or fields.get("detail")
    if said and not isinstance(said, str):
        said = msgspec.json.encode(said).decode()[:1000]
    message = str(said or f"The model endpoint refused the request ({status}).")
    param, code = fields.get("param"), fields.get("code")
    if _CONTEXT_LENGTH.search(message):
        code = "context_length_exceeded"
    kind = _ENGINE_TYPES.get(status, "invalid_request_error")
    error = OpenAIError(
        message,
        kind,
        param if isinstance(param, str) else None,
        code if isinstance(code, str) else None,
    )
    return msgspec.json.encode(OpenAIErrorBody(error))
