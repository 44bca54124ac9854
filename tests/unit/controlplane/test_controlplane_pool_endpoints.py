"""A pool's endpoints through the control-plane API: the addresses taken and refused, a password
never shown back, a URL listed twice or with a trailing slash, and rows stored before the checks."""

from __future__ import annotations

import logging
import uuid

import pytest
from cp_support import CATALOG, POOL, SERVER_SECRET, World, snapshot

from trunkline.models import Endpoint
from trunkline.snapshot.builder import build_snapshot


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://10.0.0.1:99999",  # no such port: the gateway answered 500 to every request
        "http://10.0.0.1:0",
        "http://[::1:8000",  # an IPv6 address not closed
        "http://:8000",  # no host
        "http://",
        {"url": "http://10.0.0.1:8000", "kv_events": "tcp://10.0.0.1:70000"},
    ],
)
def test_an_endpoint_no_client_can_connect_to_is_refused(
    world: World, endpoint: str | dict[str, str]
) -> None:
    response = world.client.put(
        "/api/v1/catalog/pools/h100-eu-west/endpoints",
        headers=world.admin.headers,
        json={"urls": ["http://10.0.0.2:8000", endpoint]},
    )
    assert response.status_code == 400, response.text
    expected = "urls[1]" if isinstance(endpoint, str) else "urls[1].kv_events"
    (error,) = response.json()["errors"]
    assert error["field"] == expected
    # Said in words: the pattern it quoted is some 300 characters of regular expression.
    assert "port from 1 to 65535" in error["message"] and "[0-9]" not in error["message"]


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.1:65535/v1", "https://vllm.example:443", "http://[::1]:8000", "http://a"],
)
def test_an_endpoint_of_any_usable_form_is_taken(world: World, url: str) -> None:
    path = "/api/v1/catalog/pools/h100-eu-west/endpoints"
    pool = world.admin.put(path, {"urls": [url]})
    assert [e["url"] for e in pool["endpoints"]] == [url]


def test_an_endpoint_stored_before_its_address_was_checked_is_left_out_of_the_snapshot(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Rows the API took before it refused such addresses: every gateway answered 500 to each
    request routed to ``http://10.0.0.1:99999`` (its connect raised), and its scraper logged
    a traceback at every tick. The builder leaves them out, and the addresses of KV events no
    subscriber can connect to, and says so."""
    pool = world.admin.put(
        CATALOG + "/pools/h100-eu-west/endpoints",
        {"urls": ["http://10.0.0.2:8000", "http://10.0.0.3:8000", "http://10.0.0.4:8000"]},
    )
    ids = {e["url"]: uuid.UUID(e["id"]) for e in pool["endpoints"]}
    good, bad, deaf = (ids[f"http://10.0.0.{n}:8000"] for n in (2, 3, 4))
    with world.runtime.session_factory() as session, session.begin():
        session.get_one(Endpoint, bad).url = "http://10.0.0.3:99999"
        session.get_one(Endpoint, deaf).kv_events = "tcp://10.0.0.4:70000"
    with world.runtime.session_factory() as session, caplog.at_level(logging.WARNING):
        built = build_snapshot(session, 1, cache_secret=SERVER_SECRET.encode())
    endpoints = {e.id: e for e in built.pools["h100-eu-west"].endpoints}
    assert set(endpoints) == {str(good), str(deaf)}
    assert (endpoints[str(deaf)].kv_events, endpoints[str(deaf)].kv_replay) == (None, None)
    said = caplog.text
    assert f"endpoint {bad} " in said and "not one a client can connect to" in said
    assert f"endpoint {deaf} " in said and "not one a subscriber can connect to" in said


def test_an_endpoints_password_is_never_shown_back_nor_taken_as_its_mask(world: World) -> None:
    admin = world.admin
    admin.post(CATALOG + "/pools", POOL)
    url = "http://proxy:s3cret@10.0.0.7:8000"
    pool = admin.put(CATALOG + "/pools/a100-eu/endpoints", {"urls": [url]})
    assert [e["url"] for e in pool["endpoints"]] == ["http://proxy:…@10.0.0.7:8000"]
    assert "s3cret" not in str(admin.get(CATALOG + "/pools/a100-eu"))
    assert "s3cret" not in str(admin.get(CATALOG + "/pools"))

    # Sent back as shown, the mask would replace the password: refused, nothing changed.
    shown = pool["endpoints"][0]["url"]
    problem = admin.put(CATALOG + "/pools/a100-eu/endpoints", {"urls": [shown]}, expect=400)
    assert "password" in problem["detail"]
    assert [e.url for e in snapshot(world.runtime).pools["a100-eu"].endpoints] == [url]


def test_an_endpoint_listed_twice_is_refused_not_merged_into_one(world: World) -> None:
    """The list kept one of the two without a word: here the last, so the engine's KV-event
    address given with the first was dropped, and precise prefix routing never heard of it."""
    admin = world.admin
    before = admin.put(
        CATALOG + "/pools/h100-eu-west/endpoints", {"urls": ["http://10.0.0.2:8000"]}
    )
    twice = [{"url": "http://10.0.0.7:8000", "kv_events": "tcp://10.0.0.7:5557"},
             "http://10.0.0.7:8000"]  # fmt: skip
    problem = admin.put(CATALOG + "/pools/h100-eu-west/endpoints", {"urls": twice}, expect=400)
    [error] = problem["errors"]
    assert error["field"] == "urls[1]" and "listed twice" in error["message"]
    assert admin.get(CATALOG + "/pools/h100-eu-west")["endpoints"] == before["endpoints"]


def test_an_endpoint_url_is_kept_without_its_trailing_slash(world: World) -> None:
    """``http://host:8000/`` was stored as given: the gateway asked the engine for
    ``//metrics`` and ``//v1/...``, which vLLM answers 404, so the endpoint was ejected and every
    request routed there answered 502. Listed with and without the slash, one engine was two."""
    admin = world.admin
    url = CATALOG + "/pools/h100-eu-west/endpoints"
    pool = admin.put(url, {"urls": ["http://10.0.0.7:8000/", "http://10.0.0.8:8000/vllm//"]})
    assert [e["url"] for e in pool["endpoints"]] == [
        "http://10.0.0.7:8000",
        "http://10.0.0.8:8000/vllm",
    ]
    twice = ["http://10.0.0.7:8000", "http://10.0.0.7:8000/"]
    problem = admin.put(url, {"urls": twice}, expect=400)
    [error] = problem["errors"]
    assert error["field"] == "urls[1]" and "listed twice" in error["message"]

    # A row stored with its slash before: the gateways get the URL they can join paths to.
    [first] = [e for e in pool["endpoints"] if e["url"] == "http://10.0.0.7:8000"]
    with world.runtime.session_factory() as session, session.begin():
        session.get_one(Endpoint, uuid.UUID(first["id"])).url = "http://10.0.0.7:8000/"
    served = {e.id: e.url for e in snapshot(world.runtime).pools["h100-eu-west"].endpoints}
    assert served[first["id"]] == "http://10.0.0.7:8000"
