"""``trunkline … --help`` says what a command does and what each of its options is."""

from __future__ import annotations

import argparse
import importlib.metadata
from collections.abc import Iterator

import pytest

from trunkline.cli.main import build_parser, main


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], str | None, argparse.ArgumentParser]]:
    """(path, what its parent's list says of it, its parser) of every command, at every level."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), listed.get(name), sub
                yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(build_parser([])))


@pytest.mark.parametrize(
    ("path", "listed", "parser"), COMMANDS, ids=[" ".join(path) for path, _, _ in COMMANDS]
)
def test_a_commands_help_says_what_it_does(
    path: tuple[str, ...],
    listed: str | None,
    parser: argparse.ArgumentParser,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`trunkline up --help` showed its usage and options only: what `up` does was in
    `trunkline --help`'s list alone. A command with a description of its own shows that."""
    with pytest.raises(SystemExit) as exited:
        main([*path, "--help"])
    assert exited.value.code == 0
    said = parser.description or listed
    assert listed and said, f"trunkline {' '.join(path)} is listed without a word on what it does"
    assert " ".join(said.split()) in " ".join(capsys.readouterr().out.split())


FIRST_RUN = {
    ("up",),
    ("controlplane",),
    ("gateway",),
    ("jobs",),
    ("sim",),
    ("tenants", "admin-token"),
    ("tenants", "revoke-tokens"),
    ("tenants", "cache-isolation"),
    ("keys", "create"),
    ("keys", "list"),
    ("keys", "revoke"),
    ("keys", "rotate"),
    ("quota", "show"),
    ("quota", "set"),
}
"""What the README and the banner of `trunkline up` send a new user to."""


@pytest.mark.parametrize("path", sorted(FIRST_RUN), ids=" ".join)
def test_every_option_of_the_first_commands_says_what_it_is(path: tuple[str, ...]) -> None:
    """`trunkline sim --help` listed --model, --profile, --host, --port and --seed bare; `keys
    revoke` its key_id without saying it is the 12 characters after tlk_."""
    parser = next(sub for found, _, sub in COMMANDS if found == path)
    bare = [
        action.option_strings or [action.dest]
        for action in parser._actions
        if not action.help and not isinstance(action, argparse._HelpAction)
    ]
    assert bare == []


def test_trunkline_alone_lists_its_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """It said only "the following arguments are required: COMMAND"."""
    assert main([]) == 2
    err = capsys.readouterr().err
    assert "API keys for the gateway" in err
    assert "run the whole platform in one process" in err


def test_trunkline_version_says_which_trunkline_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """It was an error: "the following arguments are required: COMMAND"."""
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"trunkline {importlib.metadata.version('trunkline')}\n"
