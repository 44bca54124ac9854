"""``trunkline bench fidelity``'s setup: held-out loads are new to the calibration, the served
model is the one the simulator describes, and pinning and the environment behave."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from trunkline.bench._fidelity_host import fidelity_env, pinned
from trunkline.bench.fidelity import CALIBRATION_LOADS, HELD_OUT
from trunkline.bench.vllm_server import VllmEnv
from trunkline.engines.hardware import MODELS

REPO = Path(__file__).resolve().parents[3]


def _shape(spec: tuple[object, ...]) -> tuple[object, ...]:
    """What makes a load a load: rate, prompt, shared-prefix and output tokens."""
    return spec[1], spec[3], spec[4], spec[5]


def test_no_held_out_load_repeats_a_calibration_load() -> None:
    calibration = {_shape(spec) for spec in CALIBRATION_LOADS}
    names = {spec[0] for spec in CALIBRATION_LOADS}

    for spec in HELD_OUT:
        assert spec[0] not in names
        assert _shape(spec) not in calibration
        # Neither the rate nor the prompt length was seen together with its prefix share.
        assert (spec[1], spec[3]) not in {(s[1], s[3]) for s in CALIBRATION_LOADS}


def test_the_simulated_model_has_the_shape_of_the_model_vllm_serves() -> None:
    tree = ast.parse((REPO / "scripts" / "vllm_fidelity_model.py").read_text())
    constants = next(
        node
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple)
    )
    names = [t.id for t in constants.targets[0].elts]  # type: ignore[attr-defined]
    values = ast.literal_eval(constants.value)
    script = dict(zip(names, values, strict=True))
    shape = MODELS["fidelity-llama"]

    assert shape.num_layers == script["LAYERS"]
    assert shape.num_heads == script["HEADS"]
    assert shape.num_kv_heads == script["KV_HEADS"]
    assert shape.head_dim == script["HIDDEN"] // script["HEADS"]
    assert shape.max_model_len == script["POSITIONS"]
    # Linear layers: q and o (hidden^2 each), k and v (GQA), gate/up/down.
    hidden, ffn, kv = script["HIDDEN"], script["FFN"], script["KV_HEADS"]
    per_layer = 2 * hidden * hidden + 2 * hidden * kv * (hidden // script["HEADS"])
    assert shape.linear_params == script["LAYERS"] * (per_layer + 3 * hidden * ffn)


def test_the_fidelity_environment_serves_the_fidelity_model(tmp_path: Path) -> None:
    (tmp_path / "trunkline" / "fidelity-llama").mkdir(parents=True)
    (tmp_path / "trunkline" / "fidelity-llama" / "config.json").write_text("{}")

    env = fidelity_env(lambda: VllmEnv(tmp_path))

    assert env.model == tmp_path / "trunkline" / "fidelity-llama"
    assert env.python == VllmEnv(tmp_path).python  # the same venv runs it


def test_a_missing_fidelity_model_names_the_command_that_builds_it(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="make vllm-env") as caught:
        fidelity_env(lambda: VllmEnv(tmp_path))

    assert "fidelity-llama" in str(caught.value)


def test_pinning_holds_inside_the_block_and_is_undone_after() -> None:
    before = os.sched_getaffinity(0)
    one = {min(before)}

    with pinned(one):
        inside = os.sched_getaffinity(0)
    after = os.sched_getaffinity(0)

    assert inside == one
    assert after == before
