"""Helpers shared by the control-plane unit and integration tests (no fixtures here).

A ``World`` is a migrated database with ``tenants/`` applied, a control-plane app
over it, and access tokens for a platform admin and the example tenants' members.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

from litestar.testing import TestClient
from pydantic import SecretStr

from trunkline.apps.runtime import Runtime, build_runtime
from trunkline.auth.service import admin_token, ensure_user, issue_access_token
from trunkline.cli.main import main
from trunkline.kit.db import transaction
from trunkline.kit.migrate import upgrade
from trunkline.settings import DatabaseSettings, SecuritySettings, Settings
from trunkline.snapshot import Snapshot, read_snapshot
from trunkline.tenancy.manifests import apply_manifests

SERVER_SECRET = "control-plane-tests-key-hash-secret-0123456789"
REPO = Path(__file__).resolve().parents[3]
TENANTS_DIR = REPO / "tenants"
PLATFORM_ADMIN = "root@platform.example"
CATALOG = "/api/v1/catalog"
POOL = {"name": "a100-eu", "model": "llama-3.1-8b-instruct", "flavor": "h100", "region": "eu-west"}
"""A pool of the bundled catalog's model and flavor, in a region no bundled pool serves."""


def make_settings(url: str, state_dir: Path, *, dev_login: bool = True) -> Settings:
    return Settings(
        state_dir=state_dir,
        database=DatabaseSettings(url=url),
        security=SecuritySettings(key_hash_secret=SecretStr(SERVER_SECRET), dev_login=dev_login),
    )


def make_runtime(url: str, state_dir: Path, *, dev_login: bool = True) -> Runtime:
    """Migrate ``url`` and build a runtime with an in-memory snapshot store."""
    upgrade(url)
    return build_runtime(make_settings(url, state_dir, dev_login=dev_login))


def token_for(runtime: Runtime, email: str) -> str:
    with transaction(runtime.session_factory) as session:
        user = ensure_user(session, email)
        return issue_access_token(session, runtime.server_secret, user).access_token


def snapshot(runtime: Runtime) -> Snapshot:
    assert runtime.memory_store is not None
    current = asyncio.run(read_snapshot(runtime.memory_store))
    assert current is not None, "nothing published yet"
    return current


class Api:
    """A test client speaking as one caller; every call states the status it expects."""

    def __init__(self, client: TestClient[Any], token: str | None = None) -> None:
        self.client = client
        self.headers = {} if token is None else {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        response = self.client.request(method, path, headers=self.headers, **kwargs)
        assert response.status_code == expect, (method, path, response.status_code, response.text)
        if response.status_code == 204 or not response.content:
            return None
        if response.status_code >= 400:
            assert response.headers["content-type"].startswith("application/problem+json")
        return response.json()

    def get(self, path: str, expect: int = 200, **kwargs: Any) -> Any:
        return self.call("GET", path, expect, **kwargs)

    def post(self, path: str, json: Any = None, expect: int = 201, **kwargs: Any) -> Any:
        return self.call("POST", path, expect, json=json, **kwargs)

    def patch(self, path: str, json: Any, expect: int = 200) -> Any:
        return self.call("PATCH", path, expect, json=json)

    def put(self, path: str, json: Any = None, expect: int = 200) -> Any:
        return self.call("PUT", path, expect, json=json)

    def delete(self, path: str, expect: int = 204) -> Any:
        return self.call("DELETE", path, expect)

    def page(self, url: str, **params: Any) -> tuple[list[Any], str | None]:
        """One page of a listing and the URL of the next (its ``Link: rel="next"``), if any."""
        response = self.client.get(url, headers=self.headers, params=params or None)
        assert response.status_code == 200, (url, response.status_code, response.text)
        following = response.links.get("next")  # a reference, resolved against the URL called
        return response.json(), None if following is None else urljoin(url, following["url"])

    def walk(self, url: str, **params: Any) -> list[tuple[list[Any], str | None]]:
        """Every page of a listing from ``url`` (with ``params``) on, each with the URL of the
        page after it, following the next links to the last page."""
        walked, seen = [self.page(url, **params)], {url}
        while (following := walked[-1][1]) is not None:
            assert following not in seen, f"the link goes back to {following}"
            seen.add(following)
            walked.append(self.page(following))
        return walked

    def pages(self, url: str, **params: Any) -> list[list[Any]]:
        """:meth:`walk`'s pages, without the links."""
        return [rows for rows, _following in self.walk(url, **params)]

    def cursors(self, url: str) -> list[str]:
        """The cursor of each next link in ``url``'s listing, walked a row at a time."""
        walked = self.walk(url, limit=1)
        return [parse_qs(urlsplit(link).query)["after"][0] for _rows, link in walked if link]


@dataclass
class World:
    runtime: Runtime
    client: TestClient[Any]
    tokens: dict[str, str]
    tenants: dict[str, str] = field(default_factory=dict)
    """slug -> tenant id"""

    def api(self, who: str | None) -> Api:
        return Api(self.client, None if who is None else self.tokens[who])

    @property
    def admin(self) -> Api:
        return self.api("root")

    def tenant(self, slug: str) -> str:
        return self.tenants[slug]

    def project(self, slug: str, name: str) -> str:
        projects = self.admin.get(f"/api/v1/tenants/{self.tenant(slug)}/projects")
        return str(next(p["id"] for p in projects if p["name"] == name))

    def user_id(self, slug: str, email: str) -> str:
        members = self.admin.get(f"/api/v1/tenants/{self.tenant(slug)}/members")
        return str(next(m["user_id"] for m in members if m["email"] == email))

    def create_key(self, who: str, slug: str, project: str, **body: Any) -> dict[str, Any]:
        body = {"project_id": self.project(slug, project), "name": "key", **body}
        created: dict[str, Any] = self.api(who).post(
            f"/api/v1/tenants/{self.tenant(slug)}/keys", body
        )
        return created


MEMBERS = {
    "acme-admin": "admin@acme.example",
    "acme-dev": "dev@acme.example",
    "globex-admin": "admin@globex.example",
    "outsider": "nobody@elsewhere.example",
}


def build_world(runtime: Runtime, client: TestClient[Any]) -> World:
    """Apply ``tenants/``, add a developer to globex, and mint a token per caller."""
    apply_manifests(runtime.session_factory, TENANTS_DIR, publish=runtime.publish)
    with transaction(runtime.session_factory) as session:
        root = admin_token(session, runtime.server_secret, PLATFORM_ADMIN).access_token
    tokens = {"root": root} | {who: token_for(runtime, email) for who, email in MEMBERS.items()}
    world = World(runtime, client, tokens)
    world.tenants = {t["slug"]: t["id"] for t in world.admin.get("/api/v1/tenants")}
    globex = world.tenant("globex")
    world.api("globex-admin").post(
        f"/api/v1/tenants/{globex}/members", {"email": "dev@globex.example", "role": "developer"}
    )
    world.tokens["globex-dev"] = token_for(runtime, "dev@globex.example")
    return world


PROBLEM_FIELDS = {"type", "title", "status", "detail", "instance", "code"}


def problem_of(response: Any, status: int) -> dict[str, Any]:
    """``response``'s RFC 9457 problem detail, asserting its status and shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body.keys() >= PROBLEM_FIELDS
    assert body["status"] == status
    assert body["type"] == f"urn:trunkline:problem:{body['code']}"
    return body


def random_id() -> str:
    return str(uuid.uuid4())


def cli_environment(tmp_path: Path, monkeypatch: Any) -> str:
    """The environment a CLI user sets: a migrated SQLite database and a key-hash secret; its
    URL."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade(url)
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", url)
    monkeypatch.setenv("TRUNKLINE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TRUNKLINE_SECURITY__KEY_HASH_SECRET", SERVER_SECRET)
    return url


def run_cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """``trunkline argv``: its exit code, standard output and standard error."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


EXTRA = """\
kind: Model
name: llama-3.2-1b-instruct
context_length: 131072
---
kind: Pool
name: small-eu
model: llama-3.2-1b-instruct
flavor: l40s
region: eu-west
cost_per_hour: 0.55
capacity: 6
tokens_per_s: 5200
max_prompt_tokens: 4096
endpoints:
  - {url: "http://10.0.0.7:8000", kv_events: "tcp://10.0.0.7:5557", kv_replay: "tcp://10.0.0.7:5558"}
  - http://10.0.0.8:8000
---
kind: Cascade
name: llama-auto
model: llama-3.2-1b-instruct
escalate_to: llama-3.1-8b-instruct
checks: {truncation: true, refusal: false, min_mean_logprob: -1.2}
---
kind: Tenant
slug: shared-co
name: Shared Co
tier: bronze
cache_isolated: false
models: [llama-auto]
"""
"""A model, a pool with KV-event endpoints, a cascade and a tenant sharing its cache, added to the
bundled manifests."""
