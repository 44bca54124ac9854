"""The gateway failing over among engines: retry before the first byte, what counts against an
endpoint, outlier ejection, and what reaches the client when every endpoint failed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from tests.unit.gateway.engines_support import (
    CHAT,
    NO_PROBES,
    STREAM,
    Gateway,
    Handler,
    failing_on,
)
from tests.unit.gateway.upstreams import chat_any


def _503(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503, text="overloaded")


def _refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused", request=request)


def _no_such_model(request: httpx.Request) -> httpx.Response:
    """vLLM started with another ``--served-model-name`` than the catalog's."""
    error = {"message": "The model `m` does not exist.", "type": "NotFoundError", "code": 404}
    return httpx.Response(404, json={"error": error})


def _wants_a_key(request: httpx.Request) -> httpx.Response:
    """vLLM started with ``--api-key`` the gateway does not send."""
    return httpx.Response(401, json={"error": "Unauthorized"})


@pytest.mark.parametrize(
    "failure", [_503, _refused, _no_such_model, _wants_a_key],
    ids=["5xx", "refused", "wrong-model-name", "engine-api-key"],
)  # fmt: skip
def test_a_failing_endpoint_is_retried_elsewhere_then_ejected(
    engine_gateway: Callable[..., Gateway], failure: Handler
) -> None:
    gw = engine_gateway(failing_on("engine-1", failure))

    statuses = [gw.chat().status_code for _ in range(12)]

    assert statuses == [200] * 12  # no client saw the failures
    hosts = gw.hosts()
    assert hosts.count("engine-1") == 3  # three consecutive failures, then never again
    assert hosts[-6:].count("engine-1") == 0
    assert gw.service.engines.ejections("e1") == 1
    endpoints = {record.endpoint for _id, record in gw.usage.read(100)}
    assert endpoints == {"http://engine-2", "http://engine-3"}
    # Operators see it on the gateway's own /metrics.
    metrics = gw.client.get("/metrics").text
    assert 'trunkline_endpoint_ejections_total{endpoint="e1"} 1.0' in metrics
    assert 'trunkline_endpoint_failures_total{endpoint="e1",kind="request"} 3.0' in metrics
    assert 'trunkline_endpoint_in_service{endpoint="e1"} 0.0' in metrics


def test_an_ejected_endpoints_share_goes_to_every_other_endpoint_alike(
    engine_gateway: Callable[..., Gateway],
) -> None:
    """Round-robin over three engines, engine-1 ejected: engine-2, next along the ring, took
    engine-1's turns as well as its own, twice engine-3's requests."""
    gw = engine_gateway(failing_on("engine-1", _503))
    while not gw.service.engines.ejections("e1"):
        assert gw.chat().status_code == 200
    before = len(gw.hosts())

    for _ in range(12):
        assert gw.chat().status_code == 200

    after = gw.hosts()[before:]
    assert (after.count("engine-2"), after.count("engine-3")) == (6, 6)


class _ClosedUnderTheRequest:
    """engine-1 closed the pooled connection the gateway reused (vLLM's server drops
    keep-alive connections idle for 5 s) ``times`` times, then answers."""

    def __init__(self, error: type[httpx.TransportError], times: int) -> None:
        self.error, self.times = error, times

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "engine-1" and self.times:
            self.times -= 1
            raise self.error("Server disconnected without sending a response.", request=request)
        return chat_any(request)


@pytest.mark.parametrize("error", [httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError])
@pytest.mark.parametrize("streamed", [False, True])
def test_a_connection_the_engine_closed_as_it_was_reused_is_replaced_not_failed_over(
    engine_gateway: Callable[..., Gateway], error: type[httpx.TransportError], streamed: bool
) -> None:
    gw = engine_gateway(_ClosedUnderTheRequest(error, times=1))

    response = gw.chat({**CHAT, "stream": streamed})

    assert response.status_code == 200 and '"content"' in response.text
    assert gw.hosts() == ["engine-1", "engine-1"]  # sent once more, to the same engine
    [e1] = [h for h in gw.service.engines.health_report() if h.endpoint == "e1"]
    assert e1.request_failures == 0  # the engine did nothing wrong


def test_a_request_sent_once_more_that_fails_again_moves_on_and_counts_once(
    engine_gateway: Callable[..., Gateway],
) -> None:
    gw = engine_gateway(_ClosedUnderTheRequest(httpx.ReadError, times=2))

    response = gw.chat()

    assert response.status_code == 200
    assert gw.hosts() == ["engine-1", "engine-1", "engine-2"]
    [e1] = [h for h in gw.service.engines.health_report() if h.endpoint == "e1"]
    assert e1.request_failures == 1


def test_every_endpoint_ejected_still_tries_them_all(
    engine_gateway: Callable[..., Gateway],
) -> None:
    broken = True

    def handler(request: httpx.Request) -> httpx.Response:
        return _refused(request) if broken else chat_any(request)

    gw = engine_gateway(handler)
    for _ in range(3):
        assert gw.chat().status_code == 503
    assert not any(gw.service.engines.in_service(e) for e in ("e1", "e2", "e3"))
    broken = False
    assert gw.chat().status_code == 200  # fail open: ejected endpoints are still tried


def test_5xx_on_the_last_endpoint_is_a_502(engine_gateway: Callable[..., Gateway]) -> None:
    gw = engine_gateway(_503)
    response = gw.chat()
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert len(gw.hosts()) == 3  # every endpoint was tried once


def _html_page(request: httpx.Request) -> httpx.Response:
    """What a misconfigured proxy in front of an engine answers: a 200 that is no answer."""
    return httpx.Response(200, text="<html>Sign in</html>", headers={"content-type": "text/html"})


def test_a_200_that_is_not_json_is_a_502_not_relayed_as_an_answer(
    engine_gateway: Callable[..., Gateway],
) -> None:
    gw = engine_gateway(_html_page)
    response = gw.chat()
    assert response.status_code == 502
    assert response.json()["error"]["message"] == "The model endpoint's answer was not JSON."
    batch = gw.usage.read(10)
    assert [(record.status, record.error_code) for _id, record in batch] == [
        (502, "upstream_error")
    ]


def test_a_json_answer_whose_usage_is_not_vllm_s_is_still_relayed(
    engine_gateway: Callable[..., Gateway],
) -> None:
    """An OpenAI-compatible server sending ``"prompt_tokens": null``: an answer, not a 502."""

    def odd_usage(request: httpx.Request) -> httpx.Response:
        answer = json.loads(chat_any(request).content)
        answer["usage"] = {"prompt_tokens": None, "completion_tokens": "3"}
        return httpx.Response(200, json=answer)

    response = engine_gateway(odd_usage).chat()
    assert response.status_code == 200 and response.json()["choices"]


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -40, "completion_tokens": -100},  # would come off quota and bill
        {"prompt_tokens": 12, "completion_tokens": 3_000_000_000},  # past the ledger's integer
    ],
)
def test_an_engine_s_impossible_token_counts_are_not_taken(
    engine_gateway: Callable[..., Gateway], usage: dict[str, Any]
) -> None:
    """A usage block no engine can mean is taken as none: the prompt is charged at the
    estimate the quota reserved, as for an answer without usage, and nothing else."""

    answers = [usage, None]  # then the same request answered without usage

    def impossible(request: httpx.Request) -> httpx.Response:
        answer = json.loads(chat_any(request).content)
        answer["usage"] = answers.pop(0)
        return httpx.Response(200, json=answer)

    gw = engine_gateway(impossible)
    assert [gw.chat().status_code for _ in range(2)] == [200, 200]
    taken, without = (record for _id, record in gw.usage.read(10))
    assert (taken.prompt_tokens, taken.completion_tokens) == (without.prompt_tokens, 0)
    assert taken.prompt_tokens > 0


def test_a_stream_answered_200_without_events_moves_to_the_next_endpoint(
    engine_gateway: Callable[..., Gateway],
) -> None:
    gw = engine_gateway(failing_on("engine-1", _html_page))
    bodies = [gw.chat(STREAM) for _ in range(3)]  # round-robin: one of them starts on engine-1
    assert [b.status_code for b in bodies] == [200, 200, 200]
    assert all(b.text.rstrip().endswith("data: [DONE]") and "<html>" not in b.text for b in bodies)
    assert "engine-1" in gw.hosts() and len(gw.hosts()) == 4  # engine-1 once, then elsewhere


@pytest.mark.parametrize(("failure", "status"), [(_no_such_model, 502), (_wants_a_key, 502)])
def test_an_endpoint_set_up_wrong_is_a_502_not_an_answer_about_the_clients_key_or_model(
    engine_gateway: Callable[..., Gateway], failure: Handler, status: int
) -> None:
    response = engine_gateway(failure).chat()
    assert response.status_code == status
    assert response.json()["error"]["code"] == "upstream_error"


def test_a_pool_shedding_load_as_a_whole_takes_each_request_twice_at_most(
    engine_gateway: Callable[..., Gateway],
) -> None:
    gw = engine_gateway(lambda request: httpx.Response(429, headers={"retry-after": "1"}))
    response = gw.chat()
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert len(gw.hosts()) == 2  # of three endpoints


def test_an_endpoint_shedding_load_sends_the_request_on_and_is_not_ejected(
    engine_gateway: Callable[..., Gateway],
) -> None:
    """A 429 answers at once and made the shedding engine look idlest: most requests went
    there and got the 429 while the others were idle."""
    gw = engine_gateway(
        failing_on("engine-1", lambda request: httpx.Response(429, headers={"retry-after": "1"}))
    )
    assert [gw.chat().status_code for _ in range(6)] == [200] * 6
    assert gw.hosts().count("engine-1") == 2  # tried in its turn, then the next endpoint
    assert gw.service.engines.ejections("e1") == 0
    assert {record.endpoint for _id, record in gw.usage.read(100)} == {
        "http://engine-2", "http://engine-3",
    }  # fmt: skip


@pytest.mark.parametrize("request_body", [CHAT, STREAM], ids=["plain", "stream"])
def test_a_full_connection_pool_is_the_gateways_own_503_after_one_wait(
    engine_gateway: Callable[..., Gateway], request_body: dict[str, Any]
) -> None:
    """Every connection to the engines in use (``__MAX_CONNECTIONS``, held by long streams):
    httpx waits for one (the pool timeout), then raises ``PoolTimeout``. The request waited so
    once per endpoint, though the pool is one for them all (300 s each, by default), and was
    then told "No model endpoint could take the request" while every engine was idle."""

    def pool_full(request: httpx.Request) -> httpx.Response:
        raise httpx.PoolTimeout("no connection free in the pool", request=request)

    gw = engine_gateway(pool_full)
    response = gw.chat(request_body)

    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    error = response.json()["error"]
    assert error["code"] == "gateway_busy"
    assert "gateway" in error["message"] and "connections" in error["message"]
    assert len(gw.hosts()) == 1  # waited once: any other endpoint waits on the same pool
    assert all(gw.service.engines.routable(e) for e in ("e1", "e2", "e3"))
    [(_id, record)] = gw.usage.read(10)
    assert (record.status, record.error_code, record.endpoint) == (503, "gateway_busy", None)


@pytest.mark.parametrize(("status", "expected"), [(429, 429), (503, 502)])
def test_the_engines_retry_after_reaches_the_client(
    engine_gateway: Callable[..., Gateway], status: int, expected: int
) -> None:
    gw = engine_gateway(lambda request: httpx.Response(status, headers={"retry-after": "9"}))
    response = gw.chat()
    assert response.status_code == expected
    assert response.headers["retry-after"] == "9"


def test_a_stream_an_idle_engine_never_started_moves_to_the_next_endpoint(
    engine_gateway: Callable[..., Gateway],
) -> None:
    """engine-1 sends a stream's head, then nothing, while its page says it runs nothing: the
    request waited for the read timeout (300 s), and half of the requests with it."""

    async def silence() -> AsyncIterator[bytes]:
        await asyncio.sleep(3600)
        yield b""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "engine-1":
            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, content=silence()
            )
        return chat_any(request)

    idle = b"vllm:num_requests_running 0\nvllm:num_requests_waiting 0\n"
    engines = NO_PROBES.model_copy(update={"lost_stream_s": 0.5})
    gw = engine_gateway(
        handler, engines=engines, scrape=lambda request: httpx.Response(200, content=idle)
    )
    bodies = [gw.chat(STREAM) for _ in range(3)]  # round-robin: one starts on engine-1

    assert [b.status_code for b in bodies] == [200] * 3
    assert all(b.text.rstrip().endswith("data: [DONE]") for b in bodies)
    assert gw.hosts().count("engine-1") == 1
    [health] = [h for h in gw.service.engines.health_report() if h.endpoint == "e1"]
    assert health.request_failures == 1
    assert {record.endpoint for _id, record in gw.usage.read(10)} <= {
        "http://engine-2", "http://engine-3",
    }  # fmt: skip
