"""``trunkline quota show|set`` against the configured database, as a platform admin would."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from trunkline.billing.pricebook import BUNDLED
from trunkline.cli.main import main
from trunkline.kit.db import make_engine, make_sessionmaker
from trunkline.kit.migrate import upgrade
from trunkline.snapshot.builder import build_snapshot
from unit.controlplane.cp_support import SERVER_SECRET, TENANTS_DIR


@pytest.fixture
def configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    upgrade(url)
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", url)
    monkeypatch.setenv("TRUNKLINE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TRUNKLINE_SECURITY__KEY_HASH_SECRET", SERVER_SECRET)
    monkeypatch.delenv("TRUNKLINE_REDIS__URL", raising=False)
    assert main(["tenants", "apply", str(TENANTS_DIR)]) == 0
    capsys.readouterr()
    return url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else out, err


def snapshot_quotas(url: str) -> Any:
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            return build_snapshot(session, 0, cache_secret=b"test-secret").quotas
    finally:
        engine.dispose()


def test_set_changes_only_the_limits_named(
    capsys: pytest.CaptureFixture[str], configured: str
) -> None:
    code, out, _ = run(
        capsys, "quota", "set", "--tier", "gold", "--scope", "key",
        "--tokens-per-minute", "5000", "--requests-per-minute", "none",
    )  # fmt: skip
    assert code == 0
    assert out["key"] == {
        "requests_per_minute": None,
        "tokens_per_minute": 5000,
        "concurrent_requests": 128,
    }
    assert run(capsys, "quota", "show", "--tier", "gold")[1]["key"] == out["key"]


def test_tenant_overrides_are_set_and_inherited_again(
    capsys: pytest.CaptureFixture[str], configured: str
) -> None:
    args = ("quota", "set", "--tenant", "acme", "--scope", "tenant")
    code, out, _ = run(capsys, *args, "--cost-per-month", "12.5")
    assert code == 0 and out["limits"]["tenant"]["cost_per_month"] == 12.5
    assert out["currency"] == "USD", "the bundled price book's"
    assert out["usage"] is None, "no Redis: the counters live in the gateways"
    assert snapshot_quotas(configured).tenants[out["tenant_id"]].cost_per_month == 12_500_000_000

    code, out, _ = run(capsys, *args, "--cost-per-month", "inherit")
    assert out["overrides"]["tenant"] == {}
    assert snapshot_quotas(configured).tenants[out["tenant_id"]].cost_per_month is None


def test_the_usd_flag_works_until_the_price_book_moves_to_another_currency(
    capsys: pytest.CaptureFixture[str], configured: str, tmp_path: Path
) -> None:
    args = ("quota", "set", "--tenant", "acme", "--scope", "tenant")
    code, out, _ = run(capsys, *args, "--cost-per-month-usd", "12.5")
    assert code == 0 and out["overrides"]["tenant"] == {"cost_per_month": 12.5}
    euros = tmp_path / "eur.yaml"
    euros.write_text(BUNDLED.read_text().replace("currency: USD", "currency: EUR"))

    code, _, err = run(capsys, "billing", "prices", "apply", str(euros))
    assert code != 0 and "from USD to EUR" in err and "tenant acme, tenant scope: 12.5" in err
    assert main(["billing", "prices", "apply", str(euros), "--keep-budget-amounts"]) == 0
    assert capsys.readouterr().out == "added versions: 1\n"

    code, _, err = run(capsys, *args, "--cost-per-month-usd", "20")
    assert code == 2 and "the price book bills in EUR: give cost_per_month, in EUR" in err
    code, out, _ = run(capsys, *args, "--cost-per-month", "20")
    assert (out["currency"], out["overrides"]["tenant"]) == ("EUR", {"cost_per_month": 20})


@pytest.mark.parametrize(
    ("new", "old"), [("5", "inherit"), ("inherit", "5"), ("none", "5"), ("5", "5")]
)
def test_both_budget_flags_are_refused_whatever_their_values(
    capsys: pytest.CaptureFixture[str], configured: str, new: str, old: str
) -> None:
    """One's 'inherit' beside the other's number silently removed or set the budget."""
    args = ("quota", "set", "--tenant", "acme", "--scope", "tenant", "--cost-per-month", "1")
    assert run(capsys, *args)[0] == 0
    both = ("--cost-per-month", new, "--cost-per-month-usd", old)
    code, _, err = run(capsys, *args[:-2], *both)
    assert code == 2 and "not both" in err
    shown = run(capsys, "quota", "show", "--tenant", "acme")[1]
    assert shown["overrides"]["tenant"] == {"cost_per_month": 1}, "left as it was"


def test_a_key_gets_its_own_limits(capsys: pytest.CaptureFixture[str], configured: str) -> None:
    assert main(["keys", "create", "--tenant", "acme", "--project", "demo", "--name", "k"]) == 0
    key_id = capsys.readouterr().out.strip().split("_")[1]

    code, out, _ = run(capsys, "quota", "set", "--key", key_id, "--requests-per-minute", "3")

    assert code == 0 and out["limits"]["key"]["requests_per_minute"] == 3
    shown = run(capsys, "quota", "show", "--key", key_id)[1]
    assert shown["overrides"] == {"requests_per_minute": 3}
    assert snapshot_quotas(configured).keys[key_id].requests_per_minute == 3
    assert run(capsys, "quota", "show", "--tenant", "acme", "--key", key_id)[1] == shown
    # Named with another tenant, it is not found there (it showed acme's key).
    code, _, err = run(capsys, "quota", "show", "--tenant", "globex", "--key", key_id)
    assert code == 2 and "not found" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["quota", "set", "--tier", "gold", "--tokens-per-day", "9"], "--scope is required"),
        (
            ["quota", "set", "--tier", "gold", "--scope", "key", "--tokens-per-day", "x"],
            "--tokens-per-day: expected a number",  # the flag as typed
        ),
        (["quota", "set", "--tier", "gold", "--scope", "key", "--tokens-per-day", "-1"], ">= 0"),
        (["quota", "show", "--tenant", "nope"], "not found"),
        (["quota", "show"], "--tier, --tenant or --key"),
        # Two targets, or a scope a key does not have: one of them would be silently ignored.
        (["quota", "show", "--tier", "gold", "--tenant", "acme"], "drop --tenant and --key"),
        (
            [
                "quota",
                "set",
                "--tier",
                "gold",
                "--tenant",
                "acme",
                "--scope",
                "key",
                "--tokens-per-day",
                "9",
            ],
            "--tier, --tenant or --key",
        ),
        (
            ["quota", "set", "--key", "abc", "--scope", "tenant", "--tokens-per-day", "9"],
            "a key has one scope",
        ),
    ],
)
def test_mistakes_are_explained(
    capsys: pytest.CaptureFixture[str], configured: str, argv: list[str], message: str
) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err


def test_a_limit_out_of_range_names_its_option(
    capsys: pytest.CaptureFixture[str], configured: str
) -> None:
    """It named the request body's field (`$.tokens_per_minute`), which nobody typed."""
    argv = ["quota", "set", "--tier", "gold", "--scope", "tenant", "--tokens-per-minute", "-5"]
    assert run(capsys, *argv)[::2] == (2, "error: Expected int >= 0 - at --tokens-per-minute\n")


def test_usage_redis_does_not_give_is_said_to_be_missing(
    capsys: pytest.CaptureFixture[str], configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With Redis down, "usage": null was all it showed, as in embedded mode where there is no
    usage to read: an operator took the tenant for one that had used nothing."""
    with socket.socket() as refusing:  # bound, not listening: a connection is refused
        refusing.bind(("127.0.0.1", 0))
        port = refusing.getsockname()[1]
        monkeypatch.setenv("TRUNKLINE_REDIS__URL", f"redis://:s3cret@127.0.0.1:{port}/0")
        code, out, err = run(capsys, "quota", "show", "--tenant", "acme")
    assert code == 0 and out["usage"] is None and out["limits"]["tenant"]
    [line] = err.splitlines()
    assert line.startswith("warning: usage is not shown: quota store un")
    assert "s3cret" not in line
