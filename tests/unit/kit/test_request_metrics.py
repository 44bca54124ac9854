"""The shared request metrics: labels a caller cannot grow (a made-up method, a path that
matched no route), and every answer counted once, the router's own too."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from trunkline.kit.request_metrics import RequestMetrics, method_of, route_template


def http(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path}


def test_made_up_methods_and_unmatched_paths_share_one_label() -> None:
    assert [method_of(http(m, "/")) for m in ("GET", "PATCH", "BREW", "get")] == [  # type: ignore[arg-type]
        "GET", "PATCH", "other", "other",
    ]  # fmt: skip
    assert route_template({**http("GET", "/api/v1/x/123"), "path_template": "/api/v1/x/{id}"}) == (  # type: ignore[arg-type]
        "/api/v1/x/{id}"
    )
    assert route_template(http("GET", "/api/v1/nope/123")) == "other"  # type: ignore[arg-type]


async def test_each_answer_is_counted_by_the_template_the_router_matched() -> None:
    registry = CollectorRegistry()
    metrics = RequestMetrics(
        registry, route_of=route_template, uncounted=frozenset({"/metrics"}),
        prefix="t", by_method=True, first_byte=False,
    )  # fmt: skip

    async def router(scope: Any, _receive: Any, send: Any) -> None:
        if scope["path"].startswith("/things/"):
            scope["path_template"] = "/things/{id}"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def discard(_message: Any) -> None:
        pass

    app = metrics.wrap(router)
    for method, path in [("GET", "/things/1"), ("GET", "/things/2"), ("X1", "/a"), ("X2", "/b")]:
        await app(http(method, path), None, discard)  # type: ignore[arg-type]
    for served_as_metrics in ("/metrics", "/metrics/", "//metrics"):  # as the router serves
        await app(http("GET", served_as_metrics), None, discard)  # type: ignore[arg-type]
    assert registry.get_sample_value(
        "t_requests_total", {"route": "/things/{id}", "method": "GET", "status": "200"}
    ) == 2  # fmt: skip
    assert registry.get_sample_value(
        "t_requests_total", {"route": "other", "method": "other", "status": "200"}
    ) == 2  # fmt: skip
    samples = [s for f in registry.collect() for s in f.samples if s.name == "t_requests_total"]
    assert len(samples) == 2  # /metrics not counted
