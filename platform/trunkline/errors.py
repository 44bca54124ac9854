"""The one error tree of Trunkline.

Domain code raises these; each application maps ``code`` to its transport once
(the gateway to OpenAI's error JSON, the control plane to RFC 9457 problem
details). Nothing here knows about HTTP.

    TrunklineError                   internal_error
    ├── InvalidRequest               invalid_request
    │   ├── PayloadTooLarge          payload_too_large
    │   ├── RequestTimeout           request_timeout
    │   └── ClientClosed             client_closed
    ├── Unauthenticated              unauthenticated
    ├── Forbidden                    forbidden
    ├── NotFound                     not_found
    ├── Conflict                     conflict
    ├── RateLimited                  rate_limited
    ├── QuotaExhausted               quota_exhausted
    ├── SloUnattainable              slo_unattainable
    ├── UpstreamError                upstream_error
    │   └── UpstreamUnavailable      upstream_unavailable
    └── ConfigurationError           configuration_error
"""

from __future__ import annotations

from typing import Any, ClassVar


class TrunklineError(Exception):
    """Root of every error Trunkline raises on purpose."""

    code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        reason: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.reason = reason
        self.extra = extra or {}


class InvalidRequest(TrunklineError):
    code = "invalid_request"


class PayloadTooLarge(InvalidRequest):
    code = "payload_too_large"


class RequestTimeout(InvalidRequest):
    """The request's body did not arrive in time."""

    code = "request_timeout"


class ClientClosed(InvalidRequest):
    """The client closed its connection before its request's body was whole: nobody is left
    to answer (each app's 499, "the client left"; nothing to log as a failure)."""

    code = "client_closed"


class MethodNotAllowed(InvalidRequest):
    code = "method_not_allowed"


class UnsupportedMediaType(InvalidRequest):
    """A request's body is of a media type (``Content-Type``) the route does not read."""

    code = "unsupported_media_type"


class Unauthenticated(TrunklineError):
    code = "unauthenticated"


class Forbidden(TrunklineError):
    code = "forbidden"


class NotFound(TrunklineError):
    code = "not_found"


class Conflict(TrunklineError):
    code = "conflict"


class RateLimited(TrunklineError):
    code = "rate_limited"


class QuotaExhausted(TrunklineError):
    code = "quota_exhausted"


class SloUnattainable(TrunklineError):
    code = "slo_unattainable"


class Unavailable(TrunklineError):
    """Trunkline itself cannot serve yet or right now (no configuration loaded, its database
    away): try again shortly."""

    code = "unavailable"


class UpstreamError(TrunklineError):
    code = "upstream_error"


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    """A plain request's engine did not answer within the read timeout: it may still be
    generating, so the request is neither sent again nor worth the client's retry."""

    code = "upstream_timeout"


class ConfigurationError(TrunklineError):
    code = "configuration_error"
