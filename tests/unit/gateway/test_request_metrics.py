"""The gateway's request metrics: every answer counted once by route and status, with its time
to first byte and to last, and no label that grows with tenants, keys or models."""

from __future__ import annotations

from pathlib import Path

import yaml
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from tests.unit.gateway.conftest import Harness
from tests.unit.gateway.test_gateway import CHAT, _ready
from tests.unit.gateway.test_gateway import auth as auth_headers

from trunkline.gateway.request_metrics import route_of


def _samples(gw: Harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = gw.client.get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("trunkline_request")
    }


def test_each_answer_is_counted_once_by_route_and_status(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gw, key = _ready(make_gateway)
    auth = auth_headers(key)
    assert gw.client.post("/v1/chat/completions", json=CHAT, headers=auth).status_code == 200
    streamed = gw.client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth)
    assert streamed.status_code == 200
    assert gw.client.post("/v1/chat/completions", json=CHAT).status_code == 401
    assert gw.client.get("/v1/models/nope", headers=auth).status_code == 404
    assert gw.client.get("/v1/nope", headers=auth).status_code == 404  # the router's own
    assert gw.client.get("/v1/chat/completions", headers=auth).status_code == 405
    gw.client.get("/health")
    assert gw.client.get("/livez").json() == {"status": "ok"}
    samples = _samples(gw)
    counts = {
        labels: value
        for (name, labels), value in samples.items()
        if name == "trunkline_requests_total"
    }
    chat = "/v1/chat/completions"
    assert counts == {
        (("route", chat), ("status", "200")): 2,
        (("route", chat), ("status", "401")): 1,
        (("route", chat), ("status", "405")): 1,
        (("route", "/v1/models/{model}"), ("status", "404")): 1,
        (("route", "other"), ("status", "404")): 1,
    }
    first = samples[("trunkline_request_first_byte_seconds_count", (("route", chat),))]
    whole = samples[("trunkline_request_duration_seconds_count", (("route", chat),))]
    assert first == whole == 4  # every answer counted is timed, the router's 405 too


def test_routes_are_templates_and_health_and_metrics_are_not_counted() -> None:
    assert route_of("/v1/models/meta-llama/Llama-3.1-8B") == "/v1/models/{model}"
    assert route_of("/v1/chat/completions/") == "/v1/chat/completions"
    assert route_of("/v1/responses") == "other"
    deployed = "/openai/deployments/{deployment}/chat/completions"
    assert route_of("/openai/deployments/llama/chat/completions") == deployed
    assert route_of("/openai/deployments/meta-llama/llama/chat/completions") == deployed
    assert route_of("/openai/deployments/llama/responses") == "other"
    assert route_of("/health") is None and route_of("/metrics") is None


def test_the_metrics_page_says_its_format_and_charset_once(make_gateway) -> None:  # type: ignore[no-untyped-def]
    gw, _key = _ready(make_gateway)
    kind = gw.client.get("/metrics").headers["content-type"]
    assert kind == CONTENT_TYPE_LATEST  # "text/plain; version=…; charset=utf-8"


def test_time_to_first_byte_has_a_bucket_at_each_bundled_tiers_ttft_slo(make_gateway) -> None:  # type: ignore[no-untyped-def]
    # A dashboard reads the share of requests within a tier's SLO from the bucket at it
    # (rate(…_bucket{le="2.0"}) / rate(…_count)); between two buckets it can only guess.
    gw, key = _ready(make_gateway)
    assert gw.client.post("/v1/chat/completions", json=CHAT, headers=auth_headers(key)).is_success
    bounds = {
        float(dict(labels)["le"])
        for (name, labels), _value in _samples(gw).items()
        if name == "trunkline_request_first_byte_seconds_bucket"
    }
    tiers = (Path(__file__).resolve().parents[3] / "tenants" / "tiers.yaml").read_text()
    slos = {tier["ttft_slo_ms"] / 1000 for tier in yaml.safe_load_all(tiers)}
    assert slos and slos <= bounds, f"no bucket at {sorted(slos - bounds)} s"
