"""The snapshot store's Lua scripts read their keys and arguments by name: a call that names
them otherwise fails here, before Redis runs a script reading one argument as another (a
version read as a time, a part list shifted by one)."""

from __future__ import annotations

import pytest

from trunkline.snapshot import redis_scripts
from trunkline.snapshot.redis_scripts import Script

VOUCH_ARGS = {"version": 3, "content": b"d", "new": 4, "generation": 7, "rest": "", "alone": "1"}
VOUCH_KEYS = {"version_key": "v", "digest_key": "d", "built_from_key": "b"}


def test_arguments_are_passed_in_the_order_the_script_reads_them() -> None:
    keys, args = redis_scripts.VOUCH.call_args(VOUCH_KEYS, dict(reversed(VOUCH_ARGS.items())))
    assert keys == ["v", "d", "b"] and args == [3, b"d", 4, 7, "", "1"]
    assert (
        "local version, content, new, generation, rest, alone = ARGV[1]" in redis_scripts.VOUCH.lua
    )


@pytest.mark.parametrize(
    ("keys", "args"),
    [
        (VOUCH_KEYS, {k: v for k, v in VOUCH_ARGS.items() if k != "new"}),
        (VOUCH_KEYS, {**VOUCH_ARGS, "carried": ""}),
        ({**VOUCH_KEYS, "at_key": "a"}, VOUCH_ARGS),
    ],
)
def test_a_call_naming_other_arguments_than_the_script_raises(
    keys: dict[str, str], args: dict[str, object]
) -> None:
    with pytest.raises(ValueError, match="script wants"):
        redis_scripts.VOUCH.call_args(keys, args)  # type: ignore[arg-type]


def test_what_follows_the_named_arguments_starts_after_them() -> None:
    script = Script(keys=(), args=("a", "b"), body="return FIRST_REST")
    assert "local FIRST_REST = 3" in script.lua
    assert script.call_args({}, {"a": 1, "b": 2}, ["x", "y"]) == ([], [1, 2, "x", "y"])
