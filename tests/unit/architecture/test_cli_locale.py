"""The ``trunkline`` command under a locale that is not UTF-8 (``LANG=C`` in a container or a
cron job, with Python's UTF-8 mode off): names of letters outside ASCII, typed in or printed,
are no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.processes import trunkline_env
from trunkline.cli.main import utf8_arguments
from unit.metering.usage_support import migrated

NAME = "clé Ü 鍵"


def _ascii_locale_run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**env, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
    env.pop("PYTHONIOENCODING", None)
    env.pop("LC_CTYPE", None)
    return subprocess.run(
        [sys.executable, "-m", "trunkline.cli.main", *args], capture_output=True, env=env
    )


def test_a_key_named_outside_ascii_is_created_and_listed_under_the_c_locale(
    tmp_path: Path,
) -> None:
    """`keys create --name 'clé'` stored the name as the bytes' escapes and failed on
    SQLite's encoding ("surrogates not allowed"), and `keys list` of a key so named, made under
    a UTF-8 locale, ended on UnicodeEncodeError's traceback. The name is now read as the UTF-8
    the shell passed (as Python's own default for the C locale reads it), and printed with what
    the terminal's encoding cannot show escaped."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    migrated(url).kw["bind"].dispose()
    env = trunkline_env(TRUNKLINE_DATABASE__URL=url, TRUNKLINE_STATE_DIR=str(tmp_path))
    create = ["keys", "create", "--tenant", "acme", "--project", "demo", "--name", NAME]
    made = _ascii_locale_run(env, *create)
    assert made.returncode == 0, made.stderr.decode("utf-8", "replace")
    listed = _ascii_locale_run(env, "keys", "list", "--tenant", "acme")
    assert listed.returncode == 0, listed.stderr.decode("utf-8", "replace")
    assert b"Traceback" not in listed.stderr
    escaped = NAME.encode("ascii", "backslashreplace")
    assert escaped in listed.stdout
    # Under a UTF-8 locale the same row reads the name as typed.
    utf8 = subprocess.run(
        [sys.executable, "-m", "trunkline.cli.main", "keys", "list", "--tenant", "acme"],
        capture_output=True, env={**env, "PYTHONUTF8": "1"},
    )  # fmt: skip
    assert NAME.encode() in utf8.stdout


def test_arguments_under_a_locale_of_another_encoding_are_read_in_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under a Latin-1 locale (``LANG=de_DE.ISO-8859-1``) the shell passes ``--name clé`` in
    Latin-1, which Python decoded right; reading every non-UTF-8 locale's arguments as UTF-8
    made it ``cl\\udce9``, a name the database refused as under ``LANG=C`` before. Only an
    ASCII locale's (where Python's own default reads UTF-8) are read as UTF-8."""
    monkeypatch.setattr(sys, "getfilesystemencoding", lambda: "iso8859-1")
    monkeypatch.setattr(os, "fsencode", lambda arg: arg.encode("iso8859-1", "surrogateescape"))
    assert utf8_arguments(["--name", "clé"]) == ["--name", "clé"]
