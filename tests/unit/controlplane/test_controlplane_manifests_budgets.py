"""Cost budgets in manifests: ``cost_per_month`` is an amount of the price book's currency; the
deprecated ``cost_per_month_usd`` is refused beside it (``tenants validate``) and, pointing at
its line, while the price book is in another currency (``validate --currency``, ``apply``)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from cp_support import SERVER_SECRET
from sqlalchemy import select

from trunkline.apps.runtime import Runtime
from trunkline.billing.pricebook import BUNDLED, PriceBook, load_price_book_file
from trunkline.billing.pricebook_store import apply_price_book
from trunkline.cli.main import main
from trunkline.errors import InvalidRequest
from trunkline.models import Tier
from trunkline.tenancy.manifests import ManifestError, apply_manifests, load_manifests

TIER = "kind: Tier\nname: t\npriority: 5\nttft_slo_ms: 1000\nquota:\n  tenant:\n"
OLD = TIER + "    cost_per_month_usd: 5\n"  # the budget on line 7
BOTH = TIER + "    cost_per_month: 5\n    cost_per_month_usd: 5\n"  # the old name on line 8
IN_EUR = "cost_per_month_usd is a budget in US dollars, but the price book bills in EUR: "
IN_EUR += "give cost_per_month, in EUR"


def issues(tmp_path: Path, text: str, currency: str | None = None) -> list[str]:
    (tmp_path / "t.yaml").write_text(text)
    try:
        load_manifests(tmp_path, currency)
    except ManifestError as exc:
        return [str(issue) for issue in exc.issues]
    return []


@pytest.mark.parametrize(
    ("text", "currency", "found"),
    [
        (TIER + "    cost_per_month: 5\n", "EUR", []),
        (OLD, None, []),  # the currency is not known: apply judges it
        (OLD, "USD", []),
        (OLD, "EUR", ["t.yaml:7: Tier t: quota.tenant.cost_per_month_usd: " + IN_EUR]),
        (
            BOTH,
            None,
            [
                "t.yaml:8: Tier t: quota.tenant.cost_per_month_usd: "
                "give cost_per_month or its deprecated alias cost_per_month_usd, not both"
            ],
        ),
    ],
)
def test_validate_judges_the_old_budget_name(
    tmp_path: Path, text: str, currency: str | None, found: list[str]
) -> None:
    assert issues(tmp_path, text, currency) == [f"{tmp_path}/{issue}" for issue in found]


def in_euros(runtime: Runtime) -> None:
    bundled = load_price_book_file(BUNDLED)
    book = PriceBook([msgspec.structs.replace(v, currency="EUR") for v in bundled.versions])
    with runtime.session_factory() as session, session.begin():
        apply_price_book(session, book)


def test_apply_refuses_the_old_name_with_a_euro_price_book_at_its_line(
    runtime: Runtime, tmp_path: Path
) -> None:
    in_euros(runtime)
    (tmp_path / "t.yaml").write_text(OLD)

    with pytest.raises(InvalidRequest) as refused:
        apply_manifests(runtime.session_factory, tmp_path)

    assert refused.value.message == f"{tmp_path / 't.yaml'}:7: Tier t: {IN_EUR}"
    assert refused.value.param == "quota.tenant.cost_per_month_usd"
    with runtime.session_factory() as session:
        assert session.scalars(select(Tier).where(Tier.name == "t")).first() is None


def test_the_cli_reports_it_as_a_manifest_issue(
    runtime: Runtime,
    sqlite_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", sqlite_url)
    monkeypatch.setenv("TRUNKLINE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TRUNKLINE_SECURITY__KEY_HASH_SECRET", SERVER_SECRET)
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "t.yaml").write_text(OLD)
    issue = f"{manifests / 't.yaml'}:7: Tier t: quota.tenant.cost_per_month_usd: {IN_EUR}"

    assert main(["tenants", "validate", str(manifests), "--currency", "eur"]) == 1
    assert issue in capsys.readouterr().err
    in_euros(runtime)
    assert main(["tenants", "apply", str(manifests)]) == 1
    assert issue in capsys.readouterr().err


@pytest.mark.parametrize("currency", ["usd1", "EURO", "$", ""])
def test_validate_refuses_a_currency_that_is_no_iso_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], currency: str
) -> None:
    """It was taken: a typo of USD ("usd1") called every cost_per_month_usd a budget in
    another currency, and one of EUR ("EURO") passed those the price book would refuse."""
    (tmp_path / "t.yaml").write_text(OLD)
    with pytest.raises(SystemExit) as exited:
        main(["tenants", "validate", str(tmp_path), "--currency", currency])
    assert exited.value.code == 2
    assert "argument --currency: not an ISO 4217 currency code" in capsys.readouterr().err
