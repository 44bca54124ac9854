"""Reading one field of a request body as vLLM 0.32's OpenAI server reads it, and refusing it
in vLLM's error shape: :class:`ApiError` (400 ``BadRequestError``, 404 ``NotFoundError``, or
its request model's validation error), with vLLM's messages where a client might match on
them. Used by ``openai_requests``."""

from __future__ import annotations

from typing import Any

__all__ = [
    "ApiError",
    "Json",
    "bad_request",
    "invalid_field",
    "json_object",
    "read_flag",
    "read_integer",
    "read_number",
    "read_optional",
    "refused",
]

Json = dict[str, Any]


class ApiError(Exception):
    """A request the server refuses, rendered in vLLM's error shape."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, kind: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.kind = kind
        """vLLM's error ``type`` when not the status's usual one (its request-model validation
        says ``Bad Request``)."""

    def body(self) -> Json:
        kind = self.kind or {404: "NotFoundError"}.get(self.status, "BadRequestError")
        return {
            "error": {
                "message": self.message,
                "type": kind,
                "param": self.param,
                "code": self.status,
            }
        }


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


def json_object(body: object) -> Json:
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def read_optional(body: Json, name: str, kind: type) -> Any:
    value = body.get(name)
    # bool is an int subclass; JSON true is never a valid integer here.
    if value is not None and (
        not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool)
    ):
        raise bad_request(f"Invalid type for '{name}'.", name)
    return value


_TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "f", "no", "n", "off"})


def read_flag(body: Json, name: str) -> bool | None:
    """A boolean field as vLLM's request model reads it: laxly, so 0, 1, "yes", "off"... pass;
    anything else is its validation error."""
    value = body.get(name)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    message = "Input should be a valid boolean, unable to interpret input"
    raise invalid_field(name, "bool_parsing", message, value)


def refused(message: str, param: str, value: object = None) -> ApiError:
    """vLLM's refusal by one of its own checks, which names the parameter (and its value)."""
    shown = param if value is None else f"{param}, value={value}"
    return bad_request(f"{message} (parameter={shown})", param)


def invalid_field(name: str, kind: str, msg: str, value: object) -> ApiError:
    """vLLM's request-model (pydantic) validation error for one field."""
    shown = f"<list of {len(value)} items>" if isinstance(value, list) else value
    detail = {"type": kind, "loc": f"body.{name}", "msg": msg, "input": shown}
    return ApiError(
        400, f"1 validation error:\n  {detail}", param=f"body.{name}", kind="Bad Request"
    )


def read_number(body: Json, name: str) -> float | None:
    """A float field as vLLM's request model reads it: lax, so numeric strings and booleans
    pass; anything else is its validation error."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, list | dict):
        raise invalid_field(name, "float_type", "Input should be a valid number", value)
    try:
        return float(value)
    except (TypeError, ValueError):
        message = "Input should be a valid number, unable to parse string as a number"
        raise invalid_field(name, "float_parsing", message, value) from None


def read_integer(body: Json, name: str) -> int | None:
    """An int field read as laxly: ``"3"`` and ``3.0`` pass, ``2.5`` and ``"x"`` do not."""
    value = read_number(body, name)
    if value is None:
        return None
    if not value.is_integer():
        message = "Input should be a valid integer, got a number with a fractional part"
        raise invalid_field(name, "int_from_float", message, body[name])
    return int(value)
