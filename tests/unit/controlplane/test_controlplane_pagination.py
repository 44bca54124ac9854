"""Paged listings: ``limit`` and ``after``, the ``Link`` to the next page, and what no cursor
lets a caller see."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import msgspec
import pytest
from cp_support import SERVER_SECRET, World

from trunkline.cli.main import main

T = "/api/v1/tenants"

LISTINGS = {
    "tenants": (T, "slug"),
    "members": (T + "/{acme}/members", "email"),
    "projects": (T + "/{acme}/projects", "name"),
    "keys": (T + "/{acme}/keys", "key_id"),
    "entitlements": (T + "/{acme}/entitlements", "alias"),
    "available models": ("/api/v1/models", "alias"),
    "catalog models": ("/api/v1/catalog/models", "name"),
    "catalog aliases": ("/api/v1/catalog/aliases", "alias"),
    "pools": ("/api/v1/catalog/pools", "name"),
}
"""Every paged listing: its path and the field that names a row."""


@pytest.fixture
def crowded(world: World) -> World:
    """The example world with at least two rows in every listing of acme and the catalog."""
    acme, admin = world.tenant("acme"), world.api("acme-admin")
    for name in ("billing", "zeta"):
        admin.post(f"{T}/{acme}/projects", {"name": name})
    admin.post(f"{T}/{acme}/members", {"email": "ops@acme.example", "role": "developer"})
    world.admin.post("/api/v1/catalog/aliases", {"alias": "fast", "model": "llama-3.1-8b-instruct"})
    world.admin.put(f"{T}/{acme}/entitlements/fast")
    project = world.project("acme", "demo")
    batch = {"keys": [{"project_id": project, "name": f"k{i}"} for i in range(3)]}
    admin.post(f"{T}/{acme}/keys/batch", batch)
    world.create_key("acme-dev", "acme", "demo", name="the developer's")
    return world


def path_of(world: World, listing: str) -> str:
    return LISTINGS[listing][0].format(acme=world.tenant("acme"))


def names(rows: list[dict[str, Any]], listing: str) -> list[str]:
    return [row[LISTINGS[listing][1]] for row in rows]


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


@pytest.mark.parametrize("limit", [1, 2, 1000])
@pytest.mark.parametrize("listing", LISTINGS)
def test_pages_are_disjoint_and_together_the_whole_listing_in_order(
    crowded: World, listing: str, limit: int
) -> None:
    path = path_of(crowded, listing)
    whole = crowded.admin.get(path, params={"limit": 1000})
    pages = crowded.admin.pages(path, limit=limit)

    assert len(whole) >= 2
    assert [row for page in pages for row in page] == whole
    assert all(len(page) == limit for page in pages[:-1])
    assert 1 <= len(pages[-1]) <= limit  # no empty last page: the link stops with the rows
    if listing != "keys":  # keys come oldest first
        assert names(whole, listing) == sorted(names(whole, listing))


@pytest.mark.parametrize("listing", LISTINGS)
def test_a_full_last_page_has_no_link_to_an_empty_one(crowded: World, listing: str) -> None:
    path = path_of(crowded, listing)
    count = len(crowded.admin.get(path, params={"limit": 1000}))

    assert crowded.admin.page(path, limit=count)[1] is None
    assert crowded.admin.page(path, limit=count - 1)[1] is not None


def test_the_same_cursor_gives_the_same_page(crowded: World) -> None:
    path = path_of(crowded, "keys")
    _first, following = crowded.admin.page(path, limit=2)
    assert following is not None

    assert crowded.admin.page(following) == crowded.admin.page(following)


@pytest.fixture
def many_keys(world: World) -> World:
    """The example world with 101 keys in acme: a page and one more."""
    acme, project = world.tenant("acme"), world.project("acme", "demo")
    batch = {"keys": [{"project_id": project, "name": f"k{i}"} for i in range(101)]}
    world.admin.post(f"{T}/{acme}/keys/batch", batch)
    return world


def test_without_a_limit_a_page_holds_100_rows(many_keys: World) -> None:
    world, acme = many_keys, many_keys.tenant("acme")
    first, following = world.admin.page(f"{T}/{acme}/keys")

    assert len(first) == 100 and following is not None
    assert query(following)["limit"] == ["100"]
    rest, last = world.admin.page(following)
    assert (len(rest), last) == (1, None)
    assert len(world.admin.get(f"{T}/{acme}/keys", params={"limit": 1000})) == 101


def test_the_cli_reading_the_database_lists_every_key(
    many_keys: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = many_keys.runtime.settings
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", settings.database.url)
    monkeypatch.setenv("TRUNKLINE_STATE_DIR", str(settings.state_dir))
    monkeypatch.setenv("TRUNKLINE_SECURITY__KEY_HASH_SECRET", SERVER_SECRET)

    assert main(["keys", "list", "--tenant", "acme"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.startswith("KEY_ID") and len(lines) == 101


def test_the_next_link_keeps_the_other_query_parameters(crowded: World) -> None:
    acme = crowded.tenant("acme")
    other = crowded.admin.post(f"{T}/{acme}/projects", {"name": "other"})["id"]
    in_other = [crowded.create_key("acme-admin", "acme", "other")["key"]["key_id"] for _ in "ab"]
    _rows, following = crowded.admin.page(f"{T}/{acme}/keys", limit=1, project_id=other)

    assert following is not None
    assert query(following)["project_id"] == [other]
    pages = crowded.admin.pages(f"{T}/{acme}/keys", limit=1, project_id=other)
    assert [names(page, "keys") for page in pages] == [[key] for key in in_other]


def test_the_next_link_holds_behind_a_proxy_that_strips_a_path_prefix(crowded: World) -> None:
    """The link was a path (``/api/v1/tenants?…``): called through a proxy serving the control
    plane under ``/cp``, the client followed it to a URL without the prefix."""
    called = "https://edge.example/cp/api/v1/tenants"
    response = crowded.admin.client.get(T, headers=crowded.admin.headers, params={"limit": 1})
    link = response.links["next"]["url"]
    assert link.startswith("?") and query(link)["limit"] == ["1"]
    assert urljoin(called, link).startswith(f"{called}?limit=1&after=")


def test_rows_written_between_pages_behind_the_cursor_neither_repeat_nor_skip(
    crowded: World,
) -> None:
    acme, admin = crowded.tenant("acme"), crowded.api("acme-admin")
    path = f"{T}/{acme}/projects"
    first, following = admin.page(path, limit=2)
    assert names(first, "projects") == ["billing", "demo"] and following is not None

    admin.post(path, {"name": "alpha"})  # behind the cursor
    admin.post(path, {"name": "cobalt"})  # behind it too
    admin.post(path, {"name": "omega"})  # ahead
    admin.delete(f"{path}/{first[-1]['id']}")  # the row the cursor names
    rest = [row for page in admin.pages(following) for row in page]

    assert names(rest, "projects") == ["omega", "zeta"]


def test_keys_created_between_pages_come_on_a_later_page_once(crowded: World) -> None:
    path = path_of(crowded, "keys")
    first, following = crowded.admin.page(path, limit=2)
    created = crowded.create_key("acme-admin", "acme", "demo", name="late")["key"]["key_id"]
    assert following is not None

    rest = [row for page in crowded.admin.pages(following) for row in page]

    assert names(first + rest, "keys") == names(crowded.admin.get(path), "keys")
    assert names(rest, "keys")[-1] == created


def _cursor(*parts: object) -> str:
    """A cursor as a client could forge one: the API's encoding of any JSON."""
    return base64.urlsafe_b64encode(msgspec.json.encode(list(parts))).decode().rstrip("=")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "2.5"}, "limit"),
        ({"after": "not a cursor!"}, "after"),
        ({"after": base64.urlsafe_b64encode(b"{not json").decode()}, "after"),
        ({"after": _cursor()}, "after"),
        ({"after": _cursor("keys")}, "after"),
        ({"after": _cursor("keys", "2026-12-01T00:00:00Z")}, "after"),
        ({"after": _cursor("keys", "yesterday", "KeyId")}, "after"),
        ({"after": _cursor("keys", "2026-12-01T00:00:00", "KeyId")}, "after"),  # no offset
        ({"after": _cursor("keys", "9999-12-31T23:59:59-12:00", "KeyId")}, "after"),
        ({"after": _cursor("keys", "2026-12-01T00:00:00Z", "Key\x00Id")}, "after"),
        ({"after": _cursor("keys", "2026-12-01T00:00:00Z", 7)}, "after"),
        ({"after": _cursor("tenants", "acme")}, "after"),  # another listing's
        ({"after": "A" * 1025}, "after"),
    ],
)
def test_a_bad_limit_or_cursor_is_a_problem_naming_it(
    world: World, params: dict[str, str], field: str
) -> None:
    problem = world.admin.get(f"{T}/{world.tenant('acme')}/keys", 400, params=params)

    assert problem["code"] == "invalid_request"
    assert [error["field"] for error in problem["errors"]] == [field]


@pytest.mark.parametrize("listing", LISTINGS)
def test_every_listing_refuses_another_listings_cursor(crowded: World, listing: str) -> None:
    path = path_of(crowded, listing)
    other = "keys" if listing != "keys" else "tenants"
    foreign = crowded.admin.cursors(path_of(crowded, other))[0]
    own = crowded.admin.cursors(path)[0]

    problem = crowded.admin.get(path, 400, params={"after": foreign})

    assert problem["errors"][0]["field"] == "after"
    assert "another listing" in problem["detail"]
    assert crowded.admin.get(path, params={"after": own})  # the rows after its first
