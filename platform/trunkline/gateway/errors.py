"""Map Trunkline errors to OpenAI's error shape, once, for the whole gateway."""

from __future__ import annotations

import msgspec

from trunkline import errors

# code -> (HTTP status, OpenAI error type)
_STATUS: dict[str, tuple[int, str]] = {
    errors.InvalidRequest.code: (400, "invalid_request_error"),
    errors.PayloadTooLarge.code: (413, "invalid_request_error"),
    errors.MethodNotAllowed.code: (405, "invalid_request_error"),
    errors.Unauthenticated.code: (401, "authentication_error"),
    errors.Forbidden.code: (403, "permission_error"),
    errors.NotFound.code: (404, "not_found_error"),
    errors.Conflict.code: (409, "invalid_request_error"),
    errors.RateLimited.code: (429, "rate_limit_error"),
    errors.QuotaExhausted.code: (429, "insufficient_quota"),
    errors.SloUnattainable.code: (503, "server_error"),
    errors.UpstreamError.code: (502, "server_error"),
    errors.UpstreamUnavailable.code: (503, "server_error"),
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
    return status, OpenAIErrorBody(OpenAIError(message, kind, exc.param, exc.reason or exc.code))


def encode_error(exc: errors.TrunklineError) -> tuple[int, bytes]:
    status, body = status_and_body(exc)
    return status, msgspec.json.encode(body)
