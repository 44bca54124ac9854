"""``trunkline tenants`` and ``trunkline keys`` against the configured database."""

from __future__ import annotations

import logging
import re
import shutil
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from cp_support import SERVER_SECRET, TENANTS_DIR, cli_environment, make_runtime, run_cli
from litestar.testing import TestClient
from sqlalchemy.exc import DataError

from trunkline.apps.controlplane import create_controlplane_app
from trunkline.cli.main import main
from trunkline.kit.migrate import upgrade


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    return cli_environment(tmp_path, monkeypatch)


run = run_cli


def test_schema_prints_the_committed_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tenants", "schema")
    assert code == 0
    assert out == (TENANTS_DIR / "schema.json").read_text()


def test_validate_reports_ok_or_every_issue(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert run(capsys, "tenants", "validate", str(TENANTS_DIR))[:2] == (
        0,
        "ok: 13 documents in 3 files\n",
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Tier\nname: gold\npriority: x\nttft_slo_ms: 1\n")

    code, _, err = run(capsys, "tenants", "validate", str(tmp_path))

    assert code == 1
    assert f"{bad}:3: Tier gold: priority: 'x' is not of type 'integer'" in err


UNREADABLE = Path("/proc/self/mem")
"""A regular file whose first read fails (EIO) even for root, as an unreadable manifest's
(EACCES) does for anyone else."""


@pytest.mark.parametrize("command", ["validate", "apply"])
def test_a_manifest_that_cannot_be_read_is_a_problem_not_a_traceback(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """It stopped both commands (and ``trunkline up``) on OSError's traceback."""
    code, out, err = run(capsys, "tenants", command, str(UNREADABLE))
    assert (code, out) == (1, "")
    assert err.startswith(f"{UNREADABLE}:1: (document): cannot read it: ")
    assert err.endswith("1 problem(s) found\n")


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("/nonexistent/tenants", "no such file or directory"),
        ("/dev/null", "not a file or a directory of manifests"),
    ],
)
def test_a_path_holding_no_manifests_says_what_it_is(
    capsys: pytest.CaptureFixture[str], path: str, said: str
) -> None:
    """/dev/null (or /dev/stdin, a pipe) was said not to exist."""
    code, out, err = run(capsys, "tenants", "validate", path)
    assert (code, out, err) == (2, "", f"error: {path}: {said}\n")


def test_apply_twice_says_the_second_run_changed_nothing(
    capsys: pytest.CaptureFixture[str], configured: str
) -> None:
    code, out, _ = run(capsys, "tenants", "apply", str(TENANTS_DIR))
    assert code == 0
    assert "Tier gold created" in out
    assert "Tenant acme created" in out

    assert run(capsys, "tenants", "apply", str(TENANTS_DIR))[:2] == (0, "no changes\n")


def test_admin_token_prints_a_platform_admin_token(
    capsys: pytest.CaptureFixture[str], configured: str
) -> None:
    code, out, err = run(capsys, "tenants", "admin-token", "--email", "ops@platform.example")
    assert code == 0
    assert out.startswith("tlu_")
    assert "platform admin ops@platform.example" in err


@pytest.mark.parametrize("days", ["-5", "99999999999", "ten"])
def test_admin_token_refuses_a_lifetime_out_of_range(
    capsys: pytest.CaptureFixture[str], configured: str, days: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["tenants", "admin-token", "--email", "ops@platform.example", "--ttl-days", days])
    assert exited.value.code == 2
    _, err = capsys.readouterr()
    assert "--ttl-days" in err and "Traceback" not in err


def test_revoke_tokens_revokes_every_token_of_a_user(
    capsys: pytest.CaptureFixture[str], configured: str, tmp_path: Path
) -> None:
    """A leaked admin token (perhaps one that never expires) must be revocable; until this
    command only an UPDATE in the database could."""
    tokens = [
        run(capsys, "tenants", "admin-token", "--email", "ops@platform.example", *ttl)[1].strip()
        for ttl in ((), ("--ttl-days", "0"))
    ]
    other = run(capsys, "tenants", "admin-token", "--email", "other@platform.example")[1].strip()
    runtime = make_runtime(configured, tmp_path / "state")
    try:
        with TestClient[Any](create_controlplane_app(runtime)) as client:

            def status(token: str) -> int:
                headers = {"Authorization": f"Bearer {token}"}
                return client.get("/api/v1/auth/me", headers=headers).status_code

            assert [status(t) for t in (*tokens, other)] == [200, 200, 200]
            code, out, _ = run(
                capsys, "tenants", "revoke-tokens", "--email", "OPS@platform.example"
            )
            assert (code, out) == (0, "revoked 2 access token(s) of ops@platform.example\n")
            assert [status(t) for t in (*tokens, other)] == [401, 401, 200]
            refused = client.get(
                "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens[0]}"}
            )
            assert refused.json()["detail"] == "access token revoked"
    finally:
        runtime.close()
    code, _, err = run(capsys, "tenants", "revoke-tokens", "--email", "nobody@platform.example")
    assert (code, err) == (2, "error: no user nobody@platform.example\n")


@pytest.mark.parametrize("email", ["bad", "", " ", "a@b\x9b31m"])
def test_admin_token_refuses_what_is_not_an_e_mail_address(
    capsys: pytest.CaptureFixture[str], configured: str, email: str
) -> None:
    """The API takes only e-mail addresses; the CLI made platform admins of anything."""
    with pytest.raises(SystemExit) as exited:
        main(["tenants", "admin-token", "--email", email])
    assert exited.value.code == 2
    _, err = capsys.readouterr()
    assert "--email: not an e-mail address" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [("keys", "list", "--tenant", "acme"), ("migrate",)])
def test_an_unreachable_database_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...]
) -> None:
    url = "postgresql+psycopg://trunkline:hunter2@127.0.0.1:1/trunkline"
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", url)
    monkeypatch.setenv("TRUNKLINE_SECURITY__KEY_HASH_SECRET", SERVER_SECRET)
    root = logging.getLogger()  # `migrate` logs to the stderr capsys closes after the test
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert err.startswith(
        "error: cannot reach the database postgresql+psycopg://trunkline:***@127.0.0.1:1/"
    )
    assert err.count("\n") == 1 and "hunter2" not in err


def test_a_database_refusal_no_check_caught_is_one_line(
    capsys: pytest.CaptureFixture[str], configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks should refuse bad input before the database does; when one misses, the
    user still gets the database's reason on one line, not a traceback with the statement."""
    run(capsys, "tenants", "apply", str(TENANTS_DIR))

    def refuse(*_args: object, **_kwargs: object) -> None:
        orig = Exception("value too long for type character varying(32)\nDETAIL: more")
        raise DataError("INSERT INTO secrets VALUES (%(v)s)", {"v": "hunter2"}, orig)

    monkeypatch.setattr("trunkline.cli.keys.service.list_keys", refuse)
    code, _, err = run(capsys, "keys", "list", "--tenant", "acme")
    assert (code, err) == (
        2,
        "error: the database refused it: value too long for type character varying(32)\n",
    )


def test_a_database_refusal_with_an_empty_message_names_its_kind(
    capsys: pytest.CaptureFixture[str], configured: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(capsys, "tenants", "apply", str(TENANTS_DIR))

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise DataError("INSERT INTO secrets VALUES (%(v)s)", {"v": "hunter2"}, Exception(""))

    monkeypatch.setattr("trunkline.cli.keys.service.list_keys", refuse)
    code, _, err = run(capsys, "keys", "list", "--tenant", "acme")
    assert (code, err) == (2, "error: the database refused it: DataError\n")


def test_keys_create_list_rotate_and_revoke(
    capsys: pytest.CaptureFixture[str], configured: str
) -> None:
    run(capsys, "tenants", "apply", str(TENANTS_DIR))

    code, secret, _ = run(
        capsys, "keys", "create", "--tenant", "acme", "--project", "demo", "--name", "ci",
        "--models", "llama-3.1-8b", "--ttl-days", "30",
    )  # fmt: skip
    assert code == 0
    key_id = secret.split("_")[1]
    _, listing, _ = run(capsys, "keys", "list", "--tenant", "acme")
    assert key_id in listing
    assert secret.strip() not in listing
    assert "llama-3.1-8b" in listing

    code, new_secret, err = run(capsys, "keys", "rotate", key_id)
    assert code == 0
    new_id = new_secret.split("_")[1]
    assert f"rotated {key_id} -> {new_id}" in err
    assert run(capsys, "keys", "revoke", new_id)[:2] == (0, f"revoked {new_id} (ci)\n")
    _, listing, _ = run(capsys, "keys", "list", "--tenant", "acme")
    assert listing.count("revoked") == 2
    header, *lines = (re.split(r"\s{2,}", line) for line in listing.splitlines())
    assert header[:5] == ["KEY_ID", "NAME", "PROJECT", "STATUS", "TIER"] and "REVOKED" in header
    revoked = next(line for line in lines if line[0] == new_id)
    assert revoked[header.index("REVOKED")] != "-"  # when it was revoked

    # A whole key pasted for its id is never printed back (a terminal, a CI log).
    pasted = run(capsys, "keys", "revoke", secret.strip())
    assert pasted[0] == 2 and "whole key" in pasted[2]
    assert secret.strip().split("_")[2] not in pasted[1] + pasted[2]


def test_key_commands_report_bad_input(capsys: pytest.CaptureFixture[str], configured: str) -> None:
    run(capsys, "tenants", "apply", str(TENANTS_DIR))

    code, _, err = run(capsys, "keys", "create", "--tenant", "initech", "--project", "tps-reports",
                       "--name", "k", "--models", "bge-small")  # fmt: skip
    assert (code, err) == (2, "error: the tenant is not entitled to bge-small\n")
    assert run(capsys, "keys", "revoke", "NoSuchKeyId1")[0] == 2
    code, _, err = run(
        capsys, "keys", "create", "--tenant", "nope", "--project", "p", "--name", "k"
    )
    assert (code, err) == (2, "error: tenant 'nope' not found\n")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        (["--ttl-days", "-3"], "error: Expected int >= 1 - at --ttl-days\n"),
        (["--name", ""], "error: Expected str of length >= 1 - at --name\n"),
        (["--models", "a b"], " - at --models\n"),
    ],
)
def test_keys_create_names_the_option_a_refused_value_came_from(
    capsys: pytest.CaptureFixture[str], configured: str, options: list[str], error: str
) -> None:
    """It named the request body's field (`$.ttl_days`), which nobody typed."""
    run(capsys, "tenants", "apply", str(TENANTS_DIR))
    given = {"--name": "k", **dict(zip(options[::2], options[1::2], strict=True))}
    argv = [part for option in given.items() for part in option]
    code, _, err = run(capsys, "keys", "create", "--tenant", "acme", "--project", "demo", *argv)
    assert code == 2 and err.startswith("error: Expected ") and err.endswith(error), err


def test_a_command_without_a_migrated_database_says_what_to_run_and_creates_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRUNKLINE_DATABASE__URL", raising=False)
    code, _, err = run(capsys, "pools", "list")
    assert code == 2
    assert f"no Trunkline database at {tmp_path / '.trunkline' / 'trunkline.db'}" in err
    # It said to run `trunkline up` "in the directory you started it from": where `up` runs
    # already, a command typed in another directory is what has to move.
    assert "run this command where `trunkline up` was started" in err
    assert list(tmp_path.iterdir()) == []

    old = tmp_path / "old.db"
    upgrade(f"sqlite:///{old}", "0005")
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", f"sqlite:///{old}")
    monkeypatch.setenv("TRUNKLINE_SECURITY__KEY_HASH_SECRET", SERVER_SECRET)
    code, _, err = run(capsys, "keys", "list", "--tenant", "acme")
    assert code == 2
    assert err.startswith(f"error: the database {old} is at schema revision 0005; this Trunkline")
    assert err.endswith("run `trunkline migrate`\n")


@pytest.mark.parametrize("command", [["worker"], ["keys", "list", "--tenant", "acme"]])
def test_production_without_its_settings_says_what_to_set_not_to_run_up(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRUNKLINE_DATABASE__URL", raising=False)
    monkeypatch.setenv("TRUNKLINE_ENVIRONMENT", "production")
    code, _, err = run(capsys, *command)
    assert code == 2
    assert err.startswith("error: production settings refused: ")
    assert "TRUNKLINE_DATABASE__URL must point at PostgreSQL" in err
    assert "trunkline up" not in err
    assert list(tmp_path.iterdir()) == []


def test_migrate_creates_a_sqlite_databases_directory_and_refuses_a_newer_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRUNKLINE_DATABASE__URL", raising=False)
    monkeypatch.setenv("TRUNKLINE_SECURITY__KEY_HASH_SECRET", SERVER_SECRET)
    # `migrate` logs to the stderr it finds, which capsys closes after the test: its handler
    # goes with the test, as does the level it sets.
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    code, out, _ = run(capsys, "migrate")
    assert (code, out) == (0, "database is at the latest migration\n")
    assert run(capsys, "pools", "list")[0] == 0  # the default database, where `up` keeps it

    database = tmp_path / ".trunkline" / "trunkline.db"
    with sqlite3.connect(database) as connection:  # as a newer Trunkline would leave it
        connection.execute("UPDATE alembic_version SET version_num = '0099'")
    code, _, err = run(capsys, "pools", "list")
    assert code == 2
    assert f"the database {database} is at schema revision 0099, which this Trunkline" in err
    assert "a newer Trunkline migrated it" in err
    code, _, err = run(capsys, "migrate")
    assert code == 2
    assert f"error: cannot migrate the database {database}: Can't locate revision" in err
    assert err.rstrip().endswith("a newer Trunkline migrated it, so run that one")


def test_migrate_names_a_failing_statement_as_such_not_as_an_unreachable_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database = tmp_path / "other.db"
    with sqlite3.connect(database) as connection:  # another application's table of that name
        connection.execute("CREATE TABLE tenants (id INTEGER)")
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", f"sqlite:///{database}")
    monkeypatch.setenv("TRUNKLINE_SECURITY__KEY_HASH_SECRET", SERVER_SECRET)
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    code, _, err = run(capsys, "migrate")
    assert code == 2
    assert f"error: cannot migrate the database {database}: table tenants already exists" in err
    assert "cannot reach" not in err


def test_apply_warns_of_entitlements_placement_leaves_without_a_pool(
    capsys: pytest.CaptureFixture[str], configured: str, tmp_path: Path
) -> None:
    manifests = tmp_path / "tenants"
    shutil.copytree(TENANTS_DIR, manifests)
    catalog = manifests / "catalog.yaml"
    catalog.write_text(
        catalog.read_text().replace("tokens_per_s: ", "tiers: [gold]\ntokens_per_s: ")
    )
    code, out, err = run(capsys, "tenants", "apply", str(manifests))
    assert code == 0 and "Pool h100-eu-west" in out
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: tenant globex (silver) is entitled to llama-3.1-8b, but no pool of it in the "
        "tenant's regions serves that tier: its requests get a 403",
        "warning: tenant initech (bronze) is entitled to llama-3.1-8b, but no pool of it in the "
        "tenant's regions serves that tier: its requests get a 403",
    ]
    # Left out, the pool's tiers would stay as they are: written out, every tier again.
    catalog.write_text(catalog.read_text().replace("tiers: [gold]", "tiers: null"))
    code, _, err = run(capsys, "tenants", "apply", str(manifests))
    assert code == 0 and "warning:" not in err


def test_apply_warns_of_an_alias_moved_to_a_model_no_pool_serves(
    capsys: pytest.CaptureFixture[str], configured: str, tmp_path: Path
) -> None:
    manifests = tmp_path / "tenants"
    shutil.copytree(TENANTS_DIR, manifests)
    code, _, err = run(capsys, "tenants", "apply", str(manifests))
    assert code == 0 and "warning:" not in err
    moved = tmp_path / "moved"  # applied alone: tenants/ gives the alias to its own model
    moved.mkdir()
    (moved / "model.yaml").write_text(
        "kind: Model\nname: other-model\ntype: chat\ncontext_length: 4096\nparams_b: 1.0\n"
        "aliases: [llama-3.1-8b]\n"
    )
    code, out, err = run(capsys, "tenants", "apply", str(moved))
    assert code == 0 and "alias llama-3.1-8b moved here" in out, err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: no pool serves llama-3.1-8b (model other-model), which 3 tenants are "
        "entitled to: its requests get a 503 until a pool of that model is added"
    ]


def test_the_celery_jobs_refuse_a_database_not_at_this_schema(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = tmp_path / "old.db"
    upgrade(f"sqlite:///{old}", "0005")
    monkeypatch.setenv("TRUNKLINE_DATABASE__URL", f"sqlite:///{old}")
    root = logging.getLogger()  # the command logs to the stderr capsys closes after the test
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    for command in ("jobs", "beat"):
        code, _, err = run(capsys, command)
        assert code == 2
        assert f"error: the database {old} is at schema revision 0005" in err


def test_up_without_manifests_says_so_on_stderr(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refusal went to stdout, with what a script reads from it, and nothing to stderr."""
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()  # `up` logs to the stderr capsys closes after the test
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    code, out, err = run(capsys, "up", "--tenants", "missing")
    assert (code, out) == (2, "")
    assert err == "error: no manifests directory at missing (use --tenants DIR)\n"


def test_up_with_a_port_taken_says_which_and_how_to_move_it_and_starts_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(TENANTS_DIR, tmp_path / "tenants")
    root = logging.getLogger()  # `up` logs to the stderr capsys closes after the test
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("TRUNKLINE_GATEWAY__PORT", str(port))
        code, _, err = run(capsys, "up")
    assert code == 2
    assert err.startswith(f"error: the gateway cannot listen on 127.0.0.1:{port} (")
    assert "set TRUNKLINE_GATEWAY__PORT" in err and err.count("\n") == 1
    assert not (tmp_path / ".trunkline").exists()  # nothing migrated, no key made


@pytest.mark.parametrize(
    ("command", "name", "setting"),
    [
        ("gateway", "gateway", "TRUNKLINE_GATEWAY__PORT"),
        ("controlplane", "control plane", "TRUNKLINE_CONTROLPLANE__PORT"),
        ("worker", "worker's metrics", "TRUNKLINE_JOBS__METRICS_PORT"),
    ],
)
def test_a_server_whose_port_is_taken_says_so_before_it_starts_anything(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    name: str,
    setting: str,
) -> None:
    """The control plane published a snapshot, then died on its port, as a traceback; the
    worker died on its metrics port as one."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRUNKLINE_REDIS__URL", "redis://127.0.0.1:1/0")  # never reached
    root = logging.getLogger()  # `migrate` logs to the stderr capsys closes after the test
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    assert run(capsys, "migrate")[0] == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv(setting, str(port))
        code, _, err = run(capsys, command)
    assert code == 2
    assert err.startswith(f"error: the {name} cannot listen on 127.0.0.1:{port} (")
    assert f"set {setting}" in err
