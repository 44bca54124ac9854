"""Per-request policy before the proxy: parse and check the body, entitle the caller.

Pure functions over the snapshot; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from trunkline.errors import Forbidden, InvalidRequest, NotFound
from trunkline.gateway.authn import Principal
from trunkline.gateway.routing.candidates import placed_away
from trunkline.kit.collector import collector_paused
from trunkline.quota.estimate import chat_conversations, completion_field, completion_maximum
from trunkline.snapshot import AliasEntry, Snapshot

_json_decoder = msgspec.json.Decoder()
MAX_N = 128
"""The most answers (``n``) one request may ask for, as OpenAI allows."""

# endpoint kind -> (required field, alias kinds it may call)
_REQUIRED = {"chat": "messages", "completions": "prompt", "embeddings": "input"}
_ENCODINGS = (None, "float", "base64")
"""The embeddings ``encoding_format`` values whose answers are JSON (OpenAI's)."""
_MODEL_KINDS = {
    "chat": frozenset({"chat"}),
    "completions": frozenset({"chat", "completion"}),
    "embeddings": frozenset({"embedding"}),
}


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    kind: str
    body: dict[str, Any]
    alias: str
    stream: bool
    client_wants_usage: bool
    cache_salt: str | None = None
    """The tenant's prefix-cache salt (``TenantEntry.cache_salt``), set after authentication."""


def parse_body(
    kind: str, raw: bytes, *, cache_salt: str | None = None, deployment: str | None = None
) -> ParsedRequest:
    """The checked request; ``cache_salt`` is the caller's tenant's (``TenantEntry``). A
    ``deployment`` (an Azure OpenAI path's) is the model, whatever the body names, as Azure
    takes it."""
    if not raw.strip():
        raise InvalidRequest(
            "The request body is empty; expected a JSON object.", reason="invalid_json"
        )
    try:
        body = _decode_json(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request: {exc}", reason="invalid_json"
        ) from None
    except RecursionError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request: it nests too deeply.",
            reason="invalid_json",
        ) from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", reason="invalid_json")
    if deployment is not None:
        body["model"] = deployment
    model = body.get("model")
    if model is None:
        raise InvalidRequest(
            "you must provide a model parameter", param="model", reason="missing_required_parameter"
        )
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "'model' must be a non-empty string", param="model", reason="invalid_type"
        )
    _check_payload(kind, body)
    stream = body.get("stream")
    if stream is None:  # absent or null, as OpenAI and vLLM take it: not streamed
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream", reason="invalid_type")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest(
            "'stream_options' must be an object", param="stream_options", reason="invalid_type"
        )
    include_usage = options.get("include_usage") if options else None
    if include_usage is not None and not isinstance(include_usage, bool):
        # As 'stream': taken for false, "yes" lost the client its usage chunk without a word.
        raise InvalidRequest(
            "'stream_options.include_usage' must be a boolean",
            param="stream_options.include_usage",
            reason="invalid_type",
        )
    wants_usage = include_usage is True
    return ParsedRequest(
        kind, body, model, stream and kind != "embeddings", wants_usage, cache_salt
    )


def _decode_json(raw: bytes) -> Any:
    """``raw`` decoded with Python's cyclic garbage collector paused. Otherwise it traverses the
    half-built body again and again as its containers are allocated: a 4 MiB body of small
    nested arrays, which any key holder may send, held the event loop 0.76 s, 0.20 s without.
    A decoded JSON document holds no cycles, so there is nothing for the collector to find."""
    with collector_paused():
        return _json_decoder.decode(raw)


def _check_payload(kind: str, body: dict[str, Any]) -> None:
    field = _REQUIRED[kind]
    value = body.get(field)
    if kind == "embeddings" and value is None and body.get("messages") is not None:
        # vLLM's chat embeddings: a conversation (or a list of them) its template renders.
        if chat_conversations(kind, body) is None:
            raise InvalidRequest(
                "'messages' must be a non-empty array of messages (objects with a string "
                "'role'), or an array of such arrays",
                param="messages",
                reason="invalid_type",
            )
        value = body["messages"]
    if value is None:
        raise InvalidRequest(
            f"Missing required parameter: '{field}'.",
            param=field,
            reason="missing_required_parameter",
        )
    if kind == "chat":
        if not isinstance(value, list) or not value:
            raise InvalidRequest(
                "'messages' must be a non-empty array", param="messages", reason="invalid_type"
            )
        for index, message in enumerate(value):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise InvalidRequest(
                    f"messages[{index}] must be an object with a string 'role'",
                    param=f"messages[{index}]",
                    reason="invalid_type",
                )
    elif not isinstance(value, str | list) or (isinstance(value, list) and not value):
        raise InvalidRequest(
            f"'{field}' must be a string or a non-empty array", param=field, reason="invalid_type"
        )
    if kind == "embeddings" and body.get("encoding_format") not in _ENCODINGS:
        # vLLM also answers "bytes" and "bytes_only": raw floats, usage in a header or none.
        # Not JSON, the answer was a 502 counted against the engine's health: any key holder
        # could have healthy engines ejected.
        raise InvalidRequest(
            "'encoding_format' must be 'float' or 'base64'",
            param="encoding_format",
            reason="invalid_value",
        )
    # Legacy completions score a prompt with ``echo`` and ``max_tokens`` 0 (the prompt's
    # log-probabilities, nothing generated), which vLLM takes.
    least = 0 if kind == "completions" and body.get("echo") is True else 1
    for name in ("max_tokens", "max_completion_tokens"):
        limit = body.get(name)
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < least
        ):
            raise InvalidRequest(
                f"'{name}' must be a positive integer", param=name, reason="invalid_value"
            )
    choices = body.get("n")
    if choices is not None and (
        isinstance(choices, bool) or not isinstance(choices, int) or not 1 <= choices <= MAX_N
    ):
        # Checked strictly: vLLM would read "8" or 8.0 as eight answers, and the quota
        # reservation, which multiplies by n, must count what the engine generates.
        raise InvalidRequest(
            f"'n' must be an integer from 1 to {MAX_N}", param="n", reason="invalid_value"
        )


def entitle(snapshot: Snapshot, principal: Principal, request: ParsedRequest) -> AliasEntry:
    """The alias the caller may use for this request, or a clear refusal."""
    alias = callable_alias(snapshot, principal, request.alias)
    key_allowed = principal.key.allowed_aliases
    if alias is None:
        # An alias the tenant is not entitled to answers as one that does not exist, so a key
        # cannot list other tenants' private models by their refusals (OpenAI answers alike).
        raise NotFound(
            f"The model '{request.alias}' does not exist or you do not have access to it.",
            param="model",
            reason="model_not_found",
        )
    if key_allowed is not None and alias.alias not in key_allowed:
        raise Forbidden(
            f"Your API key is not allowed to use the model '{request.alias}'.",
            param="model",
            reason="model_not_allowed",
        )
    if alias.kind not in _MODEL_KINDS[request.kind]:
        raise InvalidRequest(
            f"The model '{request.alias}' does not support this endpoint.",
            param="model",
            reason="model_not_supported",
        )
    if not reachable(snapshot, alias, principal):
        raise Forbidden(
            f"The model '{request.alias}' has no pool in your tenant's regions that serves "
            f"your tier ({principal.tier.name}).",
            param="model",
            reason="no_pool_for_tenant",
        )
    return alias


def callable_alias(snapshot: Snapshot, principal: Principal, name: str) -> AliasEntry | None:
    """What ``name`` calls for this caller: an alias its tenant is entitled to, else the served
    name of a model that one of those (not a cascade) serves, since answers carry the served
    name as OpenAI's carry a dated model id, and a client may call back the name it was
    answered with. Of several such aliases, the first by name the key may use and placement
    leaves the caller a pool of. None: nothing the tenant may use (unknown names alike)."""
    allowed = principal.tenant.aliases
    alias = snapshot.aliases.get(name)
    if alias is not None and name in allowed:
        return alias
    # Not an alias of the tenant's (another tenant's may bear the name): a served name of one.
    serving = [
        entry
        for entry in (snapshot.aliases.get(a) for a in sorted(allowed))
        if entry is not None and entry.cascade is None and entry.model == name
    ]
    key_allowed = principal.key.allowed_aliases

    def preference(entry: AliasEntry) -> tuple[bool, bool]:
        narrowed = key_allowed is not None and entry.alias not in key_allowed
        return narrowed, not reachable(snapshot, entry, principal)

    return min(serving, key=preference, default=None)


def check_context(request: ParsedRequest, alias: AliasEntry) -> None:
    """Refuse an answer maximum over the model's context window, as vLLM does (``max_tokens=N
    cannot be greater than max_model_len``), before any quota is reserved for it: reserved, it
    would be refused as over a budget (a 429 that clients retry) instead of as a bad request.
    A maximum within the window is the engine's to clamp to what the prompt leaves."""
    limit = alias.context_length
    asked = completion_maximum(request.kind, request.body)
    if limit is None or asked is None or asked <= limit:
        return
    name = completion_field(request.kind, request.body)
    raise InvalidRequest(
        f"'{name}' is too large: {asked}. The model '{request.alias}' has a context window of "
        f"{limit} tokens, prompt and answer together; request at most {limit}.",
        param=name,
        reason="context_length_exceeded",
    )


def visible_aliases(snapshot: Snapshot, principal: Principal) -> list[AliasEntry]:
    allowed = principal.tenant.aliases
    if principal.key.allowed_aliases is not None:
        allowed = allowed & principal.key.allowed_aliases
    aliases = (snapshot.aliases[name] for name in sorted(allowed) if name in snapshot.aliases)
    return [alias for alias in aliases if reachable(snapshot, alias, principal)]


def reachable(snapshot: Snapshot, alias: AliasEntry, principal: Principal) -> bool:
    """Whether placement leaves the caller a pool of the alias (see ``placed_away``)."""
    return not placed_away(snapshot, alias, principal.tenant, principal.tier)


ENGINE_CONTROLS = (
    "cache_salt", "priority", "kv_transfer_params", "ec_transfer_params", "kv_cache_report_mode"
)  # fmt: skip
"""vLLM request fields that act on other tenants' work, which the gateway never passes on from a
client: the prefix-cache salt (another tenant's salt reads its cached prompts), the scheduling
``priority`` (on an engine run with ``--scheduling-policy priority``, a bronze caller would
jump gold's queue; tiers are the gateway's to enforce), ``kv_transfer_params`` (in a
prefill/decode split, they name the remote KV blocks an engine loads) and its encoder-cache
twin ``ec_transfer_params``; also taken out of ``vllm_xargs``, which vLLM reads them from, as
is ``kv_cache_report_mode`` (read there only): ``"full"`` has vLLM 0.32 publish a
``BlockStored`` event again for every cached block a request reuses, a flood on the KV-event
stream every gateway's prefix index reads (past ZMQ's queue, other tenants' events are lost)."""


def upstream_body(request: ParsedRequest, served_model: str) -> dict[str, Any]:
    """The body sent to the engine: the served model name, usage forced on streams (in their
    last chunk only, unless the client asked for more), none of the client's
    :data:`ENGINE_CONTROLS`, and the tenant's prefix-cache salt (none when the tenant shares
    the cache), so no client can pick the salt of another tenant's cached prompts."""
    body = dict(request.body)
    body["model"] = served_model
    for field in ENGINE_CONTROLS:
        body.pop(field, None)
    extras = body.get("vllm_xargs")
    if isinstance(extras, dict) and not extras.keys().isdisjoint(ENGINE_CONTROLS):
        # vLLM copies these into the sampling parameters' extra_args, where its v1 request
        # reads kv_transfer_params too: the same controls by another door.
        body["vllm_xargs"] = {k: v for k, v in extras.items() if k not in ENGINE_CONTROLS}
    if request.cache_salt is not None:  # embeddings too: vLLM caches causal models' prefixes
        body["cache_salt"] = request.cache_salt
    if request.stream:
        options = dict(body.get("stream_options") or {})
        if not request.client_wants_usage:
            # vLLM puts usage in every chunk for ``continuous_usage_stats`` only with
            # ``include_usage``: forced on for metering, it gave such a client usage it had not
            # asked for in every chunk (the gateway drops only the last, usage-only, one).
            options.pop("continuous_usage_stats", None)
        options["include_usage"] = True
        body["stream_options"] = options
    return body
