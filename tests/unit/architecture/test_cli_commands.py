"""The ``trunkline`` command imports only the module of the command it runs."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from support.processes import trunkline_env
from trunkline.cli.main import MODULES, build_parser
from trunkline.models import ApiKey
from unit.metering.usage_support import migrated


@pytest.mark.parametrize("name", sorted(MODULES))
def test_each_module_registers_the_commands_it_is_listed_with(name: str) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    importlib.import_module(f"trunkline.cli.{name}").register(sub)
    assert tuple(sub.choices) == MODULES[name]


def test_help_lists_every_command() -> None:
    sub = next(a for a in build_parser(["--help"])._actions if a.dest == "command")
    assert isinstance(sub, argparse._SubParsersAction)
    assert list(sub.choices) == [c for commands in MODULES.values() for c in commands]


def test_starting_the_gateway_loads_neither_the_orm_nor_the_simulator() -> None:
    # A process of its own: this one has imported everything already.
    probe = (
        "import sys; from trunkline.cli.main import build_parser; "
        "build_parser(['gateway', '--workers', '2']).parse_args(['gateway', '--workers', '2']); "
        "print(sorted(m for m in ('sqlalchemy.orm', 'trunkline.fleet', 'trunkline.bench.fidelity')"
        " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env=trunkline_env(),
    )
    assert out.stdout.strip() == "[]"


def test_ctrl_c_while_a_command_loads_is_no_traceback() -> None:
    """Ctrl-C in the second a command's module takes to import printed a traceback through
    importlib (the interrupt stands for it here, raised as the keys module is looked up)."""
    probe = (
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'trunkline.cli.keys':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "from trunkline.cli.main import main\n"
        "sys.exit(main(['keys', 'list', '--tenant', 'acme']))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=trunkline_env()
    )
    assert (out.returncode, out.stdout, out.stderr) == (130, "", "")


def test_a_command_run_with_its_output_closed_refuses_before_it_does_anything(
    tmp_path: Path,
) -> None:
    """Started with standard output closed (`>&-`, a supervisor's child), every command ended
    on AttributeError's traceback, after doing its work: `keys create` made a key whose secret
    went nowhere."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    factory = migrated(url)
    env = trunkline_env(TRUNKLINE_DATABASE__URL=url, TRUNKLINE_STATE_DIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-m", "trunkline.cli.main", "keys", "create",
         "--tenant", "acme", "--project", "demo", "--name", "k"],
        capture_output=True, text=True, env=env, preexec_fn=lambda: os.close(1),
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr == "error: standard output is closed: nothing could be shown\n"
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(ApiKey)) == 0
    factory.kw["bind"].dispose()
    # A server runs: its log is on stderr (migrate, the one that ends, ended on a traceback).
    migrate = [sys.executable, "-m", "trunkline.cli.main", "migrate"]
    out = subprocess.run(
        migrate, capture_output=True, text=True, env=env, preexec_fn=lambda: os.close(1)
    )
    assert out.returncode == 0 and "Traceback" not in out.stderr


def test_output_to_a_full_disk_is_one_line() -> None:
    """`trunkline ... > file` on a full disk ended on OSError's traceback (twice: again as
    Python flushed at exit)."""
    with open("/dev/full", "w") as full:
        out = subprocess.run(
            [sys.executable, "-m", "trunkline.cli.main", "tenants", "schema"],
            stdout=full, stderr=subprocess.PIPE, text=True, env=trunkline_env(),
        )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr == "error: cannot write standard output: No space left on device\n"
