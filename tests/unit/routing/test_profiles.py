"""Routing profiles: the bundled ones load, and a bad one names its file and field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trunkline.errors import ConfigurationError
from trunkline.gateway.routing import POLICIES, PipelinePolicy, load_profile, make_policy
from trunkline.gateway.routing.profiles import BUNDLED_DIR

GOOD = """
name: custom
filters: [healthy, residency]
scorers:
  - {name: prefix-affinity, weight: 2, params: {mode: approximate, capacity_tokens: 1000}}
  - {name: queue-depth, weight: 1}
balance: {load_factor: 1.5, headroom: 2}
picker: {name: max-score, seed: 3}
"""


def test_every_bundled_profile_is_a_registered_policy() -> None:
    bundled = sorted(path.stem for path in BUNDLED_DIR.glob("*.yaml"))
    assert bundled == ["cost-aware", "precise-prefix", "prefix-aware", "prefix-only"]
    for name in bundled:
        assert name in POLICIES
        policy = make_policy(name)
        assert isinstance(policy, PipelinePolicy)
        assert policy.name == name


def test_a_profile_file_builds_the_pipeline_it_describes(tmp_path: Path) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text(GOOD)
    policy = load_profile(path).build()
    assert policy.name == "custom"
    assert [f.name for f in policy.filters] == ["healthy", "residency"]
    assert [(s.scorer.name, s.weight) for s in policy.scorers] == [
        ("prefix-affinity", 2.0),
        ("queue-depth", 1.0),
    ]
    assert policy.balance is not None
    assert (policy.balance.load_factor, policy.balance.headroom) == (1.5, 2.0)


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (("weight: 1}", "weight: -1}"), 6, "scorers[1].weight: must be >= 0"),
        (("queue-depth", "queue-lenght"), 6, "scorers[1].name: unknown scorer 'queue-lenght'"),
        (("[healthy, residency]", "[healthy, residence]"), 3, "filters[1]: unknown filter"),
        (("mode: approximate", "mode: exact"), 5, "scorers[0].params.mode: Invalid enum value"),
        (("capacity_tokens: 1000", "capacity_tokens: 0"), 5, "scorers[0].params.capacity_tokens"),
        (("capacity_tokens: 1000", "capacity: 1"), 5, "scorers[0].params: Object contains unknown"),
        (("load_factor: 1.5", "load_factor: 0.5"), 7, "balance.load_factor: must be >= 1"),
        (("seed: 3", "seed: three"), 8, "picker.seed: Expected `int`"),
        (("name: max-score", "name: min-score"), 8, "picker.name: unknown picker 'min-score'"),
        (("name: custom\n", "nom: custom\n"), 2, "Object contains unknown field `nom`"),
        (("weight: 2,", "weight: lots,"), 5, "scorers[0].weight: Expected `float`"),
        (("weight: 1}", "weight: .inf}"), 6, "scorers[1].weight: must be a finite number"),
        (("headroom: 2", "headroom: .inf"), 7, "balance.headroom: must be a finite number"),
        (("weight: 1}", "weight: .nan}"), 6, "scorers[1].weight: must be a finite number"),
        (("weight: 1}", "16: 1}"), 6, "scorers[1]: key 16 is not a field name"),
        (("capacity_tokens: 1000", "16: 1000"), 5, "scorers[0].params: key 16 is not a field"),
        (("balance:", "1: 2\nbalance:"), 7, "(top level): key 1 is not a field name"),
        (("balance:", "~: 2\nbalance:"), 7, "(top level): key null is not a field name"),
        (
            ("[healthy, residency]", "[healthy, residency, healthy]"),
            3,
            "filters[2]: 'healthy' is named twice (first at filters[0])",
        ),
        (
            ("name: queue-depth", "name: prefix-affinity"),
            6,
            "scorers[1].name: 'prefix-affinity' is named twice (first at scorers[0])",
        ),
    ],
)
def test_a_bad_profile_names_the_file_and_the_field(
    tmp_path: Path, change: tuple[str, str], line: int, message: str
) -> None:
    old, new = change
    assert old in GOOD
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(ConfigurationError) as caught:
        load_profile(path)
    assert str(caught.value).startswith(f"{path}:{line}: ")
    assert message in str(caught.value)


BLOCK_STYLE = """\
name: custom
scorers:
  - name: prefix-affinity
    weight: 3
    params:
      mode: exact
      capacity_tokens: 400000
  - name: queue-depth
    weight: 1
    params: {}
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BLOCK_STYLE, ":6: scorers[0].params.mode: Invalid enum value 'exact'"),
        (
            BLOCK_STYLE.replace("exact", "precise").replace("params: {}", "parms: {}"),
            ":10: scorers[1]: Object contains unknown field `parms`",
        ),
        (
            BLOCK_STYLE.replace("exact", "approximate").replace("400000", "[1, 2]"),
            ":7: scorers[0].params.capacity_tokens: Expected `int`, got `array`",
        ),
        (
            BLOCK_STYLE.replace("exact", "approximate").replace("    weight: 1\n", "    1e3: 1\n"),
            ":9: scorers[1]: key 1000.0 is not a field name",
        ),
        (
            BLOCK_STYLE.replace("exact", "approximate").replace("weight: 3", "0x10: 3"),
            ":4: scorers[0]: key 16 is not a field name",
        ),
        (
            "name: custom\nfilters:\n  - healthy\n  - residence\n",
            ":4: filters[1]: unknown filter 'residence'",
        ),
        (
            "name: custom\nscorers:\n  - &q {name: queue-depth, weight: 1}\n"
            "  - <<: *q\n    name: kv-usage\n    weight: -2\n",
            ":6: scorers[1].weight: must be >= 0",
        ),
    ],
)
def test_a_bad_field_is_named_with_its_line(tmp_path: Path, text: str, expected: str) -> None:
    """In a profile written out over many lines, the error says which one to look at."""
    path = tmp_path / "block.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as caught:
        load_profile(path)
    assert str(caught.value).startswith(f"{path}{expected}")
    assert caught.value.extra["line"] == int(expected.split(":")[1])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: custom\n<<: {nom: 1}\n", ":2: (top level): Object contains unknown field `nom`"),
        (
            "name: custom\nscorers:\n  - <<: {name: queue-depth, wieght: 2}\n    weight: 1\n",
            ":3: scorers[0]: Object contains unknown field `wieght`",
        ),
    ],
)
def test_a_field_brought_in_by_a_merge_key_is_named_with_its_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    """A misspelt field of a mapping merged in (``<<: *defaults``) is not written under the
    object it lands in. Looking for its line never ended: the gateway hung at start, a core
    busy, without a word."""
    path = tmp_path / "merged.yaml"
    path.write_text(text)
    with pytest.raises(ConfigurationError) as caught:
        load_profile(path)
    assert str(caught.value) == f"{path}{expected}"


def test_an_anchor_holding_itself_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "itself.yaml"
    path.write_text("name: custom\nfilters: &all [healthy, *all]\n")
    with pytest.raises(ConfigurationError, match=r"itself\.yaml:2: filters\[1\]: Expected `str`"):
        load_profile(path)


def test_anchors_nested_in_anchors_are_refused_at_once(tmp_path: Path) -> None:
    """Each list holding the one above twice: a few lines that name a field by 2**64 paths.
    Looking for the line of the error walked every one of them: the gateway hung at start."""
    nested = [f"  - &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 64)]
    path = tmp_path / "nested.yaml"
    path.write_text("\n".join(["name: custom", "filters:", "  - &a0 [healthy, healthy]", *nested]))
    with pytest.raises(ConfigurationError, match=r"nested\.yaml:3: filters\[0\]: Expected `str`"):
        load_profile(path)


def test_a_profile_that_is_not_yaml_or_not_there_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ConfigurationError, match=r"broken\.yaml: not valid YAML"):
        load_profile(broken)
    twice = tmp_path / "twice.yaml"
    twice.write_text(GOOD.replace("{name: queue-depth, weight: 1}", "{name: x, name: queue-depth}"))
    expected = "twice.yaml: not valid YAML: line 6: key 'name' given twice (first at line 6)"
    with pytest.raises(ConfigurationError, match=re.escape(expected)):
        load_profile(twice)
    with pytest.raises(ConfigurationError, match=r"missing\.yaml: cannot read"):
        load_profile(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("# to be written\n")
    expected = "empty.yaml: (top level): the profile is empty"
    with pytest.raises(ConfigurationError, match=re.escape(expected)):
        load_profile(empty)


def test_a_profile_not_in_utf8_names_its_file_and_line(tmp_path: Path) -> None:
    """Saved by an editor in Latin-1 (an accent in its description): a traceback of the
    codec's, naming neither the file nor the setting, stopped the gateway."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes(
        GOOD.replace("name: custom", "name: custom\ndescription: café").encode("latin-1")
    )
    with pytest.raises(ConfigurationError) as caught:
        make_policy(str(path))
    assert str(caught.value).startswith(f"{path}:3: not UTF-8 text")


def test_the_gateway_takes_a_profile_file_by_path_where_it_takes_a_policy_name(
    tmp_path: Path,
) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text(GOOD)
    policy = make_policy(str(path))  # TRUNKLINE_GATEWAY__ROUTING_POLICY=/etc/…/custom.yaml
    assert isinstance(policy, PipelinePolicy) and policy.name == "custom"
    assert make_policy(str(path)) is not policy  # each build has its own state
    with pytest.raises(ConfigurationError, match=r"gone\.yaml: cannot read"):
        make_policy(str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigurationError, match=r"or the path of a routing profile file"):
        make_policy("my-policy")


def test_weights_whose_sum_overflows_are_refused(tmp_path: Path) -> None:
    """Each weight finite, their sum not: normalising by it made every weight 0 unseen."""
    path = tmp_path / "huge.yaml"
    path.write_text(
        GOOD.replace("weight: 2,", "weight: 1e308,").replace("weight: 1}", "weight: 1e308}")
    )
    with pytest.raises(ConfigurationError, match="scorers: the weights' sum must be a finite"):
        load_profile(path)
