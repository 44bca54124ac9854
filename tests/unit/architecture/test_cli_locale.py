"""The ``trunkline`` command under a locale that is not UTF-8 (``LANG=C`` in a container or a
cron job, with Python's UTF-8 mode off): names of letters outside ASCII, typed in or printed,
are no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support.processes import trunkline_env
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
