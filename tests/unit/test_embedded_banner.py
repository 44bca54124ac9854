"""What ``trunkline up`` prints once it serves: where everything is, and never a secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from trunkline.apps.embedded import DemoKey, banner
from trunkline.settings import load_settings


def test_the_banner_names_a_postgresql_database_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``trunkline up`` on PostgreSQL printed the URL whole, password included, and called it
    SQLite."""
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", "postgresql+psycopg://trunkline:s3cr3t@db/tl")
    printed = banner(load_settings(), DemoKey("abc", "tlk_abc_def"), [])
    assert "s3cr3t" not in printed
    assert "SQLite" not in printed
    assert "postgresql+psycopg://trunkline:***@db/tl" in printed


def test_the_banner_names_the_sqlite_file_it_serves(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    printed = banner(load_settings(), DemoKey("abc", "tlk_abc_def"), ["http://127.0.0.1:1"])
    assert f"SQLite at {tmp_path / '.trunkline' / 'trunkline.db'}" in printed


def test_the_banner_says_where_the_metrics_are(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On loopback they need nothing; off it the banner names the tokens, never their values."""
    monkeypatch.chdir(tmp_path)
    printed = banner(load_settings(), DemoKey("abc", "tlk_abc_def"), [])
    assert "http://127.0.0.1:8080/metrics, http://127.0.0.1:8081/metrics" in printed
    assert "METRICS_TOKEN" not in printed
    monkeypatch.setenv("TRUNKLINE_GATEWAY__HOST", "192.0.2.10")
    monkeypatch.setenv("TRUNKLINE_GATEWAY__METRICS_TOKEN", "s3cr3t-scrape-token-of-some-length")
    printed = banner(load_settings(), DemoKey("abc", "tlk_abc_def"), [])
    assert "http://192.0.2.10:8080/metrics" in printed
    assert "TRUNKLINE_GATEWAY__METRICS_TOKEN" in printed
    assert "s3cr3t" not in printed


def test_the_banner_writes_an_ipv6_address_as_a_url_takes_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On ::1 it printed `export OPENAI_BASE_URL=http://::1:8080/v1`, which no client takes."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRUNKLINE_GATEWAY__HOST", "::1")
    monkeypatch.setenv("TRUNKLINE_CONTROLPLANE__HOST", "::1")
    printed = banner(load_settings(), DemoKey("abc", "tlk_abc_def"), [])
    assert "export OPENAI_BASE_URL=http://[::1]:8080/v1\n" in printed
    assert "http://[::1]:8081/api/v1" in printed
    assert "http://::1" not in printed
