"""Time to first token and per output token by tier: what an operator reads to see whether a
tier gets its SLOs, with no label that grows with tenants, keys or models."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from tests.unit.gateway.conftest import Harness
from tests.unit.gateway.test_gateway import CHAT, _ready
from tests.unit.gateway.test_gateway import auth as auth_headers
from tests.unit.gateway.test_gateway_aborted_answers import _ENGINE_DEAD, _stream_ending
from tests.unit.gateway.test_gateway_cascade import CHAT as CASCADE
from tests.unit.gateway.test_gateway_cascade import _gateway as cascade_gateway
from tests.unit.gateway.test_gateway_cascade import small_engine


def _tier_samples(gw: Harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = gw.client.get("/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("trunkline_tier_")
    }


def test_a_streamed_answer_counts_its_ttft_and_tpot_under_its_tier_a_plain_one_does_not(
    make_gateway,  # type: ignore[no-untyped-def]
) -> None:
    """Before, the only first-byte histogram was by route: gold's and bronze's first tokens in
    one, so nobody could tell whether gold met its SLO."""
    gw, key = _ready(make_gateway)
    stream = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    with gw.client.stream(
        "POST", "/v1/chat/completions", json=stream, headers=auth_headers(key)
    ) as response:
        assert response.status_code == 200
        response.read()
    assert gw.client.post("/v1/chat/completions", json=CHAT, headers=auth_headers(key)).is_success

    samples = _tier_samples(gw)
    gold = (("tier", "gold"),)
    assert samples[("trunkline_tier_ttft_seconds_count", gold)] == 1  # the stream's only
    assert samples[("trunkline_tier_tpot_seconds_count", gold)] == 1
    assert samples[("trunkline_tier_ttft_seconds_sum", gold)] > 0
    labels = {name for (_, pairs) in samples for name, _ in pairs}
    assert labels == {"tier", "le"}


def test_each_bundled_tiers_slos_are_bucket_bounds(make_gateway) -> None:  # type: ignore[no-untyped-def]
    # The share of a tier's requests within its SLO is read from the bucket at the SLO.
    gw, key = _ready(make_gateway)
    stream = {**CHAT, "stream": True}
    with gw.client.stream("POST", "/v1/chat/completions", json=stream, headers=auth_headers(key)):
        pass
    bounds: dict[str, set[float]] = {"ttft": set(), "tpot": set()}
    for (name, labels), _ in _tier_samples(gw).items():
        if name.endswith("_bucket"):
            bounds[name.split("_")[2]].add(float(dict(labels)["le"]))
    tiers = list(
        yaml.safe_load_all(
            (Path(__file__).resolve().parents[3] / "tenants" / "tiers.yaml").read_text()
        )
    )
    assert {t["ttft_slo_ms"] / 1000 for t in tiers} <= bounds["ttft"]
    assert {t["itl_slo_ms"] / 1000 for t in tiers if t.get("itl_slo_ms")} <= bounds["tpot"]


def test_the_time_per_output_token_is_of_one_answer_when_several_are_asked_for(
    make_gateway,  # type: ignore[no-untyped-def]
) -> None:
    # The engine generates n answers side by side: 3 tokens counted over n=3 is one token
    # each, no time between tokens to count.
    gw, key = _ready(make_gateway)
    stream = {**CHAT, "stream": True, "n": 3}
    with gw.client.stream("POST", "/v1/chat/completions", json=stream, headers=auth_headers(key)):
        pass
    samples = _tier_samples(gw)
    gold = (("tier", "gold"),)
    assert samples[("trunkline_tier_ttft_seconds_count", gold)] == 1
    assert samples.get(("trunkline_tier_tpot_seconds_count", gold), 0) == 0


def test_the_time_per_output_token_is_of_one_answer_when_several_prompts_are_sent(
    make_gateway,  # type: ignore[no-untyped-def]
) -> None:
    # /v1/completions generates one answer per prompt of a list, side by side: 3 tokens over
    # 3 prompts is one token each, no time between tokens to count (counted as one answer of
    # 3 tokens, every batch of prompts made the tier's decode look that many times faster).
    gw, key = _ready(make_gateway)
    batch = {
        "model": "llama",
        "prompt": ["one", "two", "three"],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with gw.client.stream(
        "POST", "/v1/completions", json=batch, headers=auth_headers(key)
    ) as response:
        assert response.status_code == 200
        response.read()
    samples = _tier_samples(gw)
    gold = (("tier", "gold"),)
    assert samples[("trunkline_tier_ttft_seconds_count", gold)] == 1
    assert samples.get(("trunkline_tier_tpot_seconds_count", gold), 0) == 0


def test_a_cascades_kept_answer_counts_its_replays_first_token(make_gateway) -> None:  # type: ignore[no-untyped-def]
    """A streaming client of a cascading alias gets its first token when the small model's
    whole answer is in (the first attempt runs unstreamed, then is replayed): such requests,
    most of a cascade's, were counted nowhere, and gold's TTFT looked met without them."""
    gw, key = cascade_gateway(make_gateway, small_engine("Paris."))
    stream = {**CASCADE, "stream": True}
    with gw.client.stream(
        "POST", "/v1/chat/completions", json=stream, headers=auth_headers(key)
    ) as response:
        assert response.headers["x-trunkline-cascade"] == "first"
        response.read()
    [small] = gw.drain_usage()

    samples = _tier_samples(gw)
    gold = (("tier", "gold"),)
    assert samples[("trunkline_tier_ttft_seconds_count", gold)] == 1
    assert samples[("trunkline_tier_ttft_seconds_sum", gold)] >= small.latency_ms / 1000
    # Its tokens came all at once: no time between them to count.
    assert samples.get(("trunkline_tier_tpot_seconds_count", gold), 0) == 0


def test_an_escalated_streams_first_token_counts_from_the_small_attempt(make_gateway) -> None:  # type: ignore[no-untyped-def]
    """An escalated stream's first token comes after the small model's whole answer and the
    large model's first token: it counted the large attempt's alone."""
    gw, key = cascade_gateway(make_gateway, small_engine("Paris, the", finish="length"))
    stream = {**CASCADE, "stream": True}
    with gw.client.stream(
        "POST", "/v1/chat/completions", json=stream, headers=auth_headers(key)
    ) as response:
        assert response.headers["x-trunkline-cascade"] == "escalated"
        response.read()
    small, large = gw.drain_usage()
    assert large.ttft_ms is not None

    samples = _tier_samples(gw)
    gold = (("tier", "gold"),)
    assert samples[("trunkline_tier_ttft_seconds_count", gold)] == 1
    waited_s = (small.latency_ms + large.ttft_ms) / 1000
    assert samples[("trunkline_tier_ttft_seconds_sum", gold)] >= waited_s


@pytest.mark.parametrize("last", [_ENGINE_DEAD, None], ids=["engine-dead", "done-alone"])
def test_a_stream_no_engine_sent_a_first_event_of_counts_no_first_token(
    make_gateway,  # type: ignore[no-untyped-def]
    last: bytes | None,
) -> None:
    """Every engine gave up before its first event (vLLM stopping: an error event, or [DONE]
    alone): the client got a 502 and no token, but the bytes of the last engine's refusal
    were counted as the tier's first token, a fast one."""
    gw, key = _ready(make_gateway, _stream_ending(last, events_before=0))
    stream = {**CHAT, "stream": True}
    response = gw.client.post("/v1/chat/completions", json=stream, headers=auth_headers(key))
    assert response.status_code == 502
    [record] = gw.drain_usage()
    assert record.status == 502  # metered, as a failure

    samples = _tier_samples(gw)
    assert samples.get(("trunkline_tier_ttft_seconds_count", (("tier", "gold"),)), 0) == 0
