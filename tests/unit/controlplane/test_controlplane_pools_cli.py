"""``trunkline pools``, ``trunkline catalog`` and ``trunkline tenants cache-isolation`` against the
configured database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cp_support import TENANTS_DIR, cli_environment, run_cli
from sqlalchemy import select

from trunkline.cli.main import main
from trunkline.kit.db import make_engine, make_sessionmaker
from trunkline.models import Model, ModelAlias
from trunkline.snapshot.builder import build_snapshot


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = cli_environment(tmp_path, monkeypatch)
    assert main(["tenants", "apply", str(TENANTS_DIR)]) == 0
    return url


run = run_cli


def published(url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            return build_snapshot(session, 0, cache_secret=b"test-secret")
    finally:
        engine.dispose()


def test_pools_create_update_set_endpoints_show_and_list(
    capsys: pytest.CaptureFixture[str], configured: str
) -> None:
    capsys.readouterr()
    code, out, _ = run(
        capsys, "pools", "create", "h100-eu-2", "--model", "llama-3.1-8b-instruct",
        "--flavor", "h100", "--region", "eu-west", "--capacity", "4", "--tokens-per-s", "2400",
        "--cost-per-hour", "2.9", "--burst",
    )  # fmt: skip
    assert code == 0
    created = json.loads(out)
    assert (created["cost_per_hour"], created["capacity"], created["burst"]) == (2.9, 4, True)

    code, out, _ = run(capsys, "pools", "update", "h100-eu-2", "--cost-per-hour", "flavor")
    assert (code, json.loads(out)["cost_per_hour"]) == (0, 3.5)
    code, out, _ = run(capsys, "pools", "update", "h100-eu-2", "--min-prompt-tokens", "2048")
    assert (code, json.loads(out)["min_prompt_tokens"]) == (0, 2048)
    code, out, _ = run(capsys, "pools", "update", "h100-eu-2", "--max-num-batched-tokens", "2048")
    assert (code, json.loads(out)["max_num_batched_tokens"]) == (0, 2048)
    code, out, _ = run(capsys, "pools", "update", "h100-eu-2", "--tiers", "silver, gold")
    assert (code, json.loads(out)["tiers"]) == (0, ["gold", "silver"])
    code, out, _ = run(
        capsys, "pools", "set-endpoints", "h100-eu-2",
        "http://10.0.0.7:8000=tcp://10.0.0.7:5557,tcp://10.0.0.7:5558", "http://10.0.0.8:8000",
    )  # fmt: skip
    assert code == 0
    assert [(e["kv_events"], e["kv_replay"]) for e in json.loads(out)["endpoints"]] == [
        ("tcp://10.0.0.7:5557", "tcp://10.0.0.7:5558"),
        (None, None),
    ]

    pool = published(configured).pools["h100-eu-2"]
    assert (pool.capacity, pool.tokens_per_s, pool.cost_per_hour, pool.burst) == (
        4, 2400.0, 3.5, True,
    )  # fmt: skip
    assert (pool.min_prompt_tokens, pool.max_prompt_tokens) == (2048, None)
    assert pool.tiers == ("gold", "silver")
    assert pool.max_num_batched_tokens == 2048
    assert json.loads(run(capsys, "pools", "show", "h100-eu-2")[1])["name"] == "h100-eu-2"
    code, out, _ = run(capsys, "pools", "list")
    lines = out.splitlines()
    assert lines[0].split() == [
        "NAME", "MODEL", "FLAVOR", "REGION", "BURST", "$/H", "CAPACITY", "TOK/S", "PROMPTS",
        "TIERS", "ENDPOINTS",
    ]  # fmt: skip
    assert lines[2].split() == [
        "h100-eu-2", "llama-3.1-8b-instruct", "h100", "eu-west", "yes", "3.50", "4", "2400",
        "2048-", "gold,silver", "2",
    ]  # fmt: skip
    assert lines[1].split()[-3:-1] == ["any", "*"]  # any prompt length, every tier
    code, out, _ = run(capsys, "pools", "update", "h100-eu-2", "--every-tier")
    assert (code, json.loads(out)["tiers"]) == (0, None)


def test_pools_bad_input_is_an_error_naming_the_option(
    capsys: pytest.CaptureFixture[str], configured: str
) -> None:
    capsys.readouterr()
    code, _, err = run(capsys, "pools", "update", "h100-eu-west", "--capacity", "-3")
    assert code == 2 and "--capacity" in err
    code, _, err = run(capsys, "pools", "update", "h100-eu-west", "--min-prompt-tokens", "-1")
    assert (code, err) == (2, "error: Expected int >= 0 - at --min-prompt-tokens\n")
    code, _, err = run(capsys, "pools", "update", "h100-eu-west", "--tokens-per-s", "fast")
    assert code == 2 and err.endswith(" - at --tokens-per-s\n")
    code, _, err = run(
        capsys, "pools", "create", "H100 EU", "--model", "llama-3.1-8b-instruct",
        "--flavor", "h100", "--region", "eu-west",
    )  # fmt: skip
    assert code == 2 and err.endswith(" - at the pool name\n")
    code, _, err = run(capsys, "pools", "update", "h100-eu-west", "--max-prompt-tokens", "0")
    assert code == 2 and "max_prompt_tokens (0) must exceed min_prompt_tokens (0)" in err
    code, _, err = run(capsys, "pools", "update", "h100-eu-west", "--tiers", "platinum")
    assert (code, err) == (2, "error: unknown tier 'platinum'\n")
    code, _, err = run(capsys, "pools", "show", "nope")
    assert (code, err) == (2, "error: pool 'nope' not found\n")
    code, _, err = run(capsys, "pools", "set-endpoints", "h100-eu-west", "http://a:1=http://b")
    assert code == 2
    assert err.startswith("error: endpoint 'http://a:1=http://b': its events address: ")
    for wrong in ("tcp://b:2,http://c", "tcp://b:2,tcp://c:3,tcp://d:4", "tcp://b:2,"):
        argument = f"http://a:1={wrong}"
        code, _, err = run(capsys, "pools", "set-endpoints", "h100-eu-west", argument)
        assert code == 2
        assert err.startswith(f"error: endpoint {argument!r}: its replay address: ")
    code, _, err = run(capsys, "pools", "set-endpoints", "h100-eu-west", "http://a:1=tcp://b")
    assert code == 2 and "its events address" in err  # no port
    code, _, err = run(capsys, "pools", "set-endpoints", "h100-eu-west", "not-a-url")
    assert code == 2 and err.startswith("error: endpoint 'not-a-url': its URL: ")
    assert "--" not in err  # no option to point at: the endpoints are arguments
    # A forgotten argument no longer takes every endpoint out of service.
    assert run(capsys, "pools", "set-endpoints", "h100-eu-west", "http://10.0.0.9:8000")[0] == 0
    code, _, err = run(capsys, "pools", "set-endpoints", "h100-eu-west")
    assert (code, err) == (
        2,
        "error: give the pool's endpoints, or --none to remove every endpoint\n",
    )
    assert "http://10.0.0.9:8000" in run(capsys, "pools", "show", "h100-eu-west")[1]
    code, _, err = run(capsys, "pools", "set-endpoints", "h100-eu-west", "http://a:1", "--none")
    assert (code, err) == (2, "error: give endpoints or --none, not both\n")
    code, out, _ = run(capsys, "pools", "set-endpoints", "h100-eu-west", "--none")
    assert code == 0 and '"url"' not in out


def test_an_endpoint_refused_by_the_cli_is_named_without_its_password(
    capsys: pytest.CaptureFixture[str], configured: str
) -> None:
    """The error named the argument whole, password and all, into the terminal or a CI log,
    where every answer and change report shows it as ``…``."""
    capsys.readouterr()
    argument = "http://proxy:s3cret-pw@10.0.0.9:8000=tcp://10.0.0.9"  # the events address: no port
    code, _, err = run(capsys, "pools", "set-endpoints", "h100-eu-west", argument)
    assert code == 2
    assert err.startswith("error: endpoint 'http://proxy:…@10.0.0.9:8000=tcp://10.0.0.9': ")
    assert "s3cret-pw" not in err


def test_tenants_cache_isolation_off_and_on(
    capsys: pytest.CaptureFixture[str], configured: str
) -> None:
    capsys.readouterr()
    assert run(capsys, "tenants", "cache-isolation", "acme", "off")[:2] == (
        0,
        "tenant acme: the shared prefix cache\n",
    )
    acme = next(t for t in published(configured).tenants.values() if t.slug == "acme")
    assert acme.cache_salt is None
    assert run(capsys, "tenants", "cache-isolation", "acme", "on")[0] == 0
    acme = next(t for t in published(configured).tenants.values() if t.slug == "acme")
    assert acme.cache_salt is not None


def test_an_endpoint_no_client_can_connect_to_is_said_in_words(
    capsys: pytest.CaptureFixture[str], configured: str
) -> None:
    code, _, err = run(capsys, "pools", "set-endpoints", "h100-eu-west", "http://10.0.0.1:99999")
    assert code == 2 and err == (
        "error: endpoint 'http://10.0.0.1:99999': its URL: Expected `str` of an http:// or "
        "https:// URL with a host (an IPv6 address in brackets) and, if it gives one, a port "
        "from 1 to 65535\n"
    )


def _store_as_an_older_version_did(url: str, model: str, alias: str) -> None:
    """A model and an alias named as no URL of the API reaches them (trailing or doubled
    ``/``): taken before 2026-12-07, they are still in upgraded databases."""
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session, session.begin():
            row = Model(name=model, kind="chat", context_length=8192)
            session.add(row)
            session.flush()
            session.add(ModelAlias(alias=alias, model_id=row.id))
            good = session.scalars(select(Model).where(Model.name == "llama-3.1-8b-instruct"))
            session.add(ModelAlias(alias=alias + "/x//", model_id=good.one().id))
    finally:
        engine.dispose()


def test_a_model_or_alias_named_as_no_url_reaches_is_deleted_from_the_command_line(
    capsys: pytest.CaptureFixture[str], configured: str
) -> None:
    """``/catalog/models/org/model/`` reaches ``org/model`` (the router drops the trailing
    ``/``, even sent as ``%2F``): the command line, which names no URL, is the way out."""
    _store_as_an_older_version_did(configured, "org/model/", "org//model")
    assert {"org//model", "org//model/x//"} <= set(published(configured).aliases)  # served
    capsys.readouterr()
    code, _, err = run(capsys, "catalog", "delete-alias", "org//model/x//")
    assert (code, err) == (0, "")
    code, _, err = run(capsys, "catalog", "delete-model", "org/model/")
    assert (code, err) == (0, "")
    aliases = published(configured).aliases
    assert not [a for a in aliases if a.startswith("org/")]  # its own alias went with it
    code, _, err = run(capsys, "catalog", "delete-model", "org/model/")
    assert code == 2 and "model 'org/model/' not found" in err
    code, _, err = run(capsys, "catalog", "delete-model", "llama-3.1-8b-instruct")
    assert code == 2 and "served by pools" in err  # the API's refusals, as they say them
