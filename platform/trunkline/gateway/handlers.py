"""HTTP surface of the gateway: OpenAI-compatible routes over ``GatewayService``."""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Sequence

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from litestar.response import Stream
from prometheus_client import CollectorRegistry, generate_latest

from trunkline.auth.secrets import redacted
from trunkline.errors import (
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    TrunklineError,
    Unauthenticated,
)
from trunkline.gateway.cors import cors_config, cors_outside
from trunkline.gateway.endpoints import EngineMonitor
from trunkline.gateway.errors import encode_error
from trunkline.gateway.head import allowed_with_head, head_as_get
from trunkline.gateway.meter import CLIENT_CLOSED
from trunkline.gateway.options import options_with_id
from trunkline.gateway.pipeline import visible_aliases
from trunkline.gateway.request_metrics import gateway_request_metrics
from trunkline.gateway.service import GatewayService, Reply
from trunkline.gateway.shutdown import cut_at_shutdown
from trunkline.kit import logging as tlog
from trunkline.kit.asgi import unless_client_leaves
from trunkline.kit.body_timeout import BodyTimeout
from trunkline.kit.ids import new_request_id
from trunkline.kit.metrics_share import EXPOSITION_TYPE, SharedMetrics
from trunkline.kit.scrape_access import ScrapeAccess
from trunkline.kit.shutdown_delay import ShutdownDelay, closing_while_draining
from trunkline.snapshot import AliasEntry

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
JSON = "application/json"


def _service(state: State) -> GatewayService:
    service: GatewayService = state.gateway
    return service


def request_id_of(request: Request[object, object, State]) -> str:
    """The gateway's own id for the request, made once: the usage ledger's key, sent to the
    engine and returned as ``x-request-id``. Never the caller's: the ledger keeps one row per
    id, so a caller choosing it could have two requests metered as one, or another tenant's
    request not at all."""
    known = request.state.get("request_id")
    if isinstance(known, str):
        return known
    request.state.request_id = made = new_request_id()
    return made


def _id_headers(request: Request[object, object, State]) -> dict[str, str]:
    """``x-request-id``, the gateway's; and ``x-client-request-id``, the caller's own id (from
    ``x-client-request-id``, else ``x-request-id``) when well-formed, logged beside it."""
    headers = {"x-request-id": request_id_of(request)}
    for header in ("x-client-request-id", "x-request-id"):
        given = request.headers.get(header)
        if given and _REQUEST_ID.match(given):
            headers["x-client-request-id"] = given
            break
    return headers


def _credentials(request: Request[object, object, State]) -> str | None:
    """The ``Authorization`` header, or Azure OpenAI clients' ``api-key`` header as a bearer
    token when that is absent (``AzureOpenAI`` sends its key so); an empty ``api-key`` counts as
    none. Two of one kind, or both kinds naming different keys, are refused: serving one of
    them let a proxy in front that checks (or adds) the other decide whose key was served."""
    headers = request.headers
    authorization = headers.getall("authorization", [])
    # an empty api-key (a client's placeholder beside the key a proxy adds) names no key
    api_key = [value for value in headers.getall("api-key", []) if value.strip()]
    for name, given in (("Authorization", authorization), ("api-key", api_key)):
        if len(given) > 1:
            raise Unauthenticated(
                f"Send one {name} header with your API key; this request has {len(given)}.",
                reason="invalid_api_key",
            )
    if authorization and api_key and _bearer_token(authorization[0]) != api_key[0].strip():
        raise Unauthenticated(
            "Send one API key: this request's Authorization and api-key headers name two.",
            reason="invalid_api_key",
        )
    if authorization:
        return authorization[0]
    return f"Bearer {api_key[0]}" if api_key else None


def _bearer_token(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else authorization


async def _serve(
    kind: str, request: Request[object, object, State], deployment: str | None = None
) -> Response[bytes]:
    started = time.perf_counter()
    service = _service(request.app.state)
    ids = _id_headers(request)
    request_id = ids["x-request-id"]
    principal = service.authenticate(_credentials(request))
    token = tlog.bind(
        request_id=request_id,
        client_request_id=ids.get("x-client-request-id"),
        tenant=principal.tenant.slug,
        key_id=principal.key.key_id,
    )
    try:
        raw = await request.body()  # within body_timeout_s of the headers (``_late_body``)
        # A non-streamed answer comes only once it is whole: a client that left meanwhile has
        # it cancelled (the engine's call closed, so the engine aborts) and metered as 499,
        # not generated and billed in full. A stream's reply comes at its first event; from
        # there the response itself watches the connection.
        work = service.handle(kind, raw, principal, request_id, deployment)
        reply = await unless_client_leaves(work, request.receive)
        if reply is None:
            log.info("client disconnected before its answer")
            reply = Reply(CLIENT_CLOSED, b"", None, {})  # nobody is left to read it
        elif reply.events is not None:  # relayed once this returns: its lines name it too
            reply = dataclasses.replace(reply, events=tlog.Carried(reply.events, tlog.current()))
    except (TrunklineError, HTTPException):
        raise
    except Exception as exc:  # logged here, where its line names the request (error_handler's
        # would not: the request's log context is reset by then)
        log.exception(_UNHANDLED)
        raise TrunklineError("The gateway failed to handle the request.") from exc
    finally:
        tlog.reset(token)
    # As OpenAI's: how long the answer took to start (a stream's first event), for clients and
    # tools that log it.
    ids["openai-processing-ms"] = str(round((time.perf_counter() - started) * 1000))
    return _to_response(reply, ids)


def _to_response(reply: Reply, ids: dict[str, str]) -> Response[bytes]:
    headers = {**reply.headers, **ids}
    if reply.events is not None:
        headers["cache-control"] = "no-cache"
        headers["x-accel-buffering"] = "no"
        return Stream(reply.events, media_type="text/event-stream", headers=headers)  # type: ignore[return-value]
    return Response(reply.body, status_code=reply.status, media_type=JSON, headers=headers)


@post("/v1/chat/completions", status_code=200)
async def chat_completions(request: Request[object, object, State]) -> Response[bytes]:
    return await _serve("chat", request)


@post("/v1/completions", status_code=200)
async def completions(request: Request[object, object, State]) -> Response[bytes]:
    return await _serve("completions", request)


@post("/v1/embeddings", status_code=200)
async def embeddings(request: Request[object, object, State]) -> Response[bytes]:
    return await _serve("embeddings", request)


_DEPLOYMENTS = ("/openai/deployments", "/v1/deployments")
"""Where Azure OpenAI clients send a model's requests: ``AzureOpenAI(azure_endpoint=…)`` under
``/openai``, ``AzureOpenAI(base_url=…/v1)`` under the base URL; the deployment is the model."""
_DEPLOYMENT_KINDS = (("/chat/completions", "chat"), ("/completions", "completions"),
                     ("/embeddings", "embeddings"))  # fmt: skip


@post([f"{prefix}/{{route:path}}" for prefix in _DEPLOYMENTS], status_code=200)
async def azure_deployments(
    request: Request[object, object, State], route: FromPath[str]
) -> Response[bytes]:
    """``{deployment}/chat/completions``, ``/completions`` or ``/embeddings``. The deployment is
    an alias, which may hold ``/`` (``meta-llama/llama-3.1-8b``) and reaches us unescaped (the
    Azure client writes it into the path as it is): so the path is cut at its endpoint, not
    matched segment by segment (an alias with ``/`` was an unknown URL)."""
    path = route.removeprefix("/")
    for suffix, kind in _DEPLOYMENT_KINDS:
        deployment = path[: -len(suffix)]
        if path.endswith(suffix) and deployment and "" not in deployment.split("/"):
            return await _serve(kind, request, deployment)
    raise _unknown_url(request)


@get(["/v1/models", "/openai/models"])
async def list_models(request: Request[object, object, State]) -> Response[bytes]:
    models = _visible_models(request)
    body = msgspec.json.encode({"object": "list", "data": list(models.values())})
    return Response(body, media_type=JSON, headers=_id_headers(request))


@get(["/v1/models/{model:path}", "/openai/models/{model:path}"])
async def retrieve_model(
    request: Request[object, object, State], model: FromPath[str]
) -> Response[bytes]:
    """One model the caller may use; any other (another tenant's, or none) is "not found"."""
    name = model.removeprefix("/")
    found = _visible_models(request).get(name)
    if found is None:
        raise NotFound(
            f"The model '{name}' does not exist or you do not have access to it.",
            param="model",
            reason="model_not_found",
        )
    body = msgspec.json.encode(found)
    return Response(body, media_type=JSON, headers=_id_headers(request))


def _visible_models(request: Request[object, object, State]) -> dict[str, dict[str, object]]:
    """The caller's models in OpenAI's shape, by id (authenticating the caller)."""
    service = _service(request.app.state)
    principal = service.authenticate(_credentials(request))
    snapshot = service.holder.current
    return {a.alias: _model_entry(a) for a in visible_aliases(snapshot, principal)}


def _model_entry(alias: AliasEntry) -> dict[str, object]:
    """One model as OpenAI lists it, with vLLM's ``max_model_len`` where the catalog knows
    the context (a cascade's: the longer of its two models', where a prompt over the small
    one's goes; none where the large one's is not known, as what the alias takes is not)."""
    entry: dict[str, object] = {
        "id": alias.alias, "object": "model", "created": alias.created, "owned_by": "trunkline"
    }  # fmt: skip
    contexts = [alias.context_length]
    if alias.cascade is not None:
        contexts.append(alias.cascade.context_length)
    if None not in contexts:
        entry["max_model_len"] = max(length for length in contexts if length is not None)
    return entry


def _engines(monitor: EngineMonitor | None) -> dict[str, object]:
    """Engine state at a glance: ejected endpoints, the oldest scrape, per endpoint that
    publishes KV events, whether its subscription is live and how many events it applied, and
    the endpoints whose engine's KV block size is not their pool's (prefix routing matches none
    of their cache), and those whose scrapes find no engine metrics (their load is unknown)."""
    if monitor is None:
        return {}
    state = monitor.state
    loads = state.loads()
    ages = [load.age_s for load in loads.values() if load.age_s != float("inf")]
    kv = monitor.kv_subscriber
    return {
        "endpoints": len(loads),
        # Not routed to: ejected, or half-open until its probe answers (else a hung engine
        # flapped in and out of this list between its ejections).
        "ejected": sorted(key for key in loads if not state.routable(key)),
        "oldest_scrape_s": round(max(ages), 3) if ages else None,
        "kv_events": kv.summary() if kv is not None else {},
        "block_size_mismatches": [sizes._asdict() for sizes in monitor.block_sizes.mismatches()],
        "without_metrics": [
            {"endpoint": h.endpoint, "reason": h.without_metrics}
            for h in state.health_report()
            if h.without_metrics is not None
        ],
    }


def _scrape_access(request: Request[object, object, State]) -> ScrapeAccess:
    access: ScrapeAccess = request.app.state.scrape_access
    return access


@get("/health", include_in_schema=False)
async def health(request: Request[object, object, State]) -> Response[bytes]:
    """Readiness: 200 once a configuration is loaded. Its details (engines, endpoints) go only
    to a caller with the scrape token; a probe without it gets the status alone."""
    holder = _service(request.app.state).holder
    delay: ShutdownDelay | None = request.app.state.get("shutdown_delay")
    if delay is not None and delay.draining:  # SIGTERM: out of the load balancers, serving on
        return Response(b'{"status":"draining"}', status_code=503, media_type=JSON)
    ok = holder.current.version > 0
    status = {"status": "ok" if ok else "starting"}
    code = 200 if ok else 503
    if not _scrape_access(request).allows(request.headers.getall("authorization", [])):
        return Response(msgspec.json.encode(status), status_code=code, media_type=JSON)
    body = msgspec.json.encode(
        {
            **status,
            "snapshot_version": holder.current.version,
            "snapshot_age_s": round(time.time() - holder.current.published_at, 3) if ok else None,
            "snapshot_store_reachable": holder.reachable,
            "snapshot_checked_age_s": (
                None
                if holder.checked_at is None
                else round(time.monotonic() - holder.checked_at, 3)
            ),
            "quota_store": "degraded" if _service(request.app.state).quota.degraded else "ok",
            "engines": _engines(request.app.state.engines),
        }
    )
    return Response(body, status_code=code, media_type=JSON)


_SERVED = (
    "This gateway serves POST /v1/chat/completions, /v1/completions and /v1/embeddings, "
    "and GET /v1/models."
)


@get("/livez", include_in_schema=False)
async def livez() -> Response[bytes]:
    """Liveness: the process answers, configuration loaded or not (``/health`` is 503 until
    one is: as a liveness probe it would restart a gateway waiting for its control plane)."""
    return Response(b'{"status":"ok"}', media_type=JSON)


def _http_error(
    exc: HTTPException, max_body_bytes: int | None, request: Request[object, object, State]
) -> TrunklineError:
    if exc.status_code == 413:
        limit = f" ({max_body_bytes:,} bytes)" if max_body_bytes else ""
        return PayloadTooLarge(
            f"The request body is larger than this gateway accepts{limit}.",
            reason="request_too_large",
        )
    if exc.status_code == 404:
        return _unknown_url(request)
    if exc.status_code == 405:
        allow = next((v for k, v in (exc.headers or {}).items() if k.lower() == "allow"), None)
        return MethodNotAllowed(
            "Method not allowed on this path.",
            reason="method_not_allowed",
            extra={"headers": {"allow": allowed_with_head(allow)}} if allow else None,
        )
    return InvalidRequest(str(exc.detail), reason="invalid_request")


def _unknown_url(request: Request[object, object, State]) -> NotFound:
    path = redacted(request.url.path)  # a base URL with the key in it
    shown = path if len(path) <= 120 else f"{path[:120]}…"
    return NotFound(
        f"Unknown request URL: {request.method} {shown}. {_SERVED}", reason="unknown_url"
    )


_UNHANDLED = "unhandled error in the gateway"


def error_handler(request: Request[object, object, State], exc: Exception) -> Response[bytes]:
    if isinstance(exc, HTTPException):
        exc = _http_error(exc, request.app.state.get("max_body_bytes"), request)
    if not isinstance(exc, TrunklineError):
        log.exception(_UNHANDLED)
        exc = TrunklineError("The gateway failed to handle the request.")
    status, body = encode_error(exc)
    headers = _id_headers(request)
    carried = exc.extra.get("headers")  # rate-limit headers and when to retry
    if isinstance(carried, dict):
        headers.update(carried)
    if status == 503:
        headers.setdefault("retry-after", "1")
    elif isinstance(exc, RequestTimeout):  # RFC 9110: the rest of its body is not read
        headers["connection"] = "close"
    return Response(body, status_code=status, media_type=JSON, headers=headers)


@get("/metrics", include_in_schema=False)
async def metrics(request: Request[object, object, State]) -> Response[bytes]:
    _scrape_access(request).check(request.headers.getall("authorization", []))
    shared: SharedMetrics | None = request.app.state.shared_metrics
    if shared is not None:  # every worker's
        return Response(await shared.exposition(), media_type=EXPOSITION_TYPE)
    registry: CollectorRegistry = request.app.state.metrics
    return Response(generate_latest(registry), media_type=EXPOSITION_TYPE)


ROUTES = [
    chat_completions,
    completions,
    embeddings,
    azure_deployments,
    list_models,
    retrieve_model,
    health,
    livez,
    metrics,
]


def build_app(
    service: GatewayService,
    *,
    max_body_bytes: int,
    lifespan: list[object],
    metrics: CollectorRegistry | None = None,
    shared_metrics: SharedMetrics | None = None,
    engines: EngineMonitor | None = None,
    body_timeout_s: float | None = None,
    cors_origins: Sequence[str] = (),
    scrape_access: ScrapeAccess | None = None,
    shutdown_delay: ShutdownDelay | None = None,
) -> Litestar:
    registry = metrics or CollectorRegistry()
    cors = cors_config(cors_origins)
    state = {
        "gateway": service,
        "metrics": registry,
        "shared_metrics": shared_metrics,
        "engines": engines,
        "max_body_bytes": max_body_bytes,
        "scrape_access": scrape_access or ScrapeAccess.open(),
        "shutdown_delay": shutdown_delay,
    }
    app = Litestar(
        route_handlers=ROUTES,
        state=State(state),
        exception_handlers={Exception: error_handler},
        request_max_body_size=max_body_bytes,
        lifespan=lifespan,  # type: ignore[arg-type]
        openapi_config=None,
        logging_config=None,
        debug=False,
        cors_config=cors,
    )
    late_body = BodyTimeout(body_timeout_s, _late_body, registry)
    # Around the router: its own answers (an unknown path, a wrong method) are counted too.
    inner = late_body.wrap(head_as_get(options_with_id(app.asgi_handler)))
    app.asgi_handler = gateway_request_metrics(registry).wrap(
        cors_outside(cut_at_shutdown(inner), cors)
    )
    if shutdown_delay is not None:
        app.asgi_handler = closing_while_draining(app.asgi_handler, shutdown_delay)
    return app


def _late_body(_timeout_s: float) -> RequestTimeout:
    return RequestTimeout(
        "The request body did not arrive in time; send it whole, faster.",
        reason="request_timeout",
    )
