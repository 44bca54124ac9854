"""The A100 and H100 efficiencies in hardware.py are what Vidur's measured kernels give."""

from __future__ import annotations

from pathlib import Path

import pytest

from trunkline.engines import ACCELERATORS, MODELS
from trunkline.engines.vidur import efficiencies, fit_roofline, linear_layer_times
from trunkline.workloads import default_data_dir

PROFILES = default_data_dir() / "vidur_profiling"


def fitted(csv_name: str, model: str, accelerator: str) -> tuple[float, float, float]:
    path = PROFILES / csv_name
    if not path.is_file():
        pytest.fail(
            f"{path} not found: the shared data folder must sit beside the repo"
            " (../shared) or be named by TRUNKLINE_DATA_DIR"
        )
    shape = MODELS[model]
    fit = fit_roofline(list(linear_layer_times(Path(path), shape.num_layers)))
    mbu, mfu = efficiencies(fit, shape, ACCELERATORS[accelerator])
    return mbu, mfu, fit.median_relative_error


@pytest.mark.parametrize(
    ("csv_name", "model", "accelerator"),
    [
        ("a100_Meta-Llama-3-8B_mlp.csv", "llama-3-8b", "a100"),
        ("h100_Llama-2-7b-hf_mlp.csv", "llama-2-7b", "h100"),
    ],
)
def test_recorded_efficiencies_are_the_fit_of_vidur_profiles(
    csv_name: str, model: str, accelerator: str
) -> None:
    mbu, mfu, median_error = fitted(csv_name, model, accelerator)
    assert ACCELERATORS[accelerator].mbu == pytest.approx(mbu, abs=0.005)
    assert ACCELERATORS[accelerator].mfu == pytest.approx(mfu, abs=0.005)
    assert median_error < 0.06


def test_the_fit_recovers_a_known_roofline() -> None:
    points = [(n, ((0.004) ** 2 + (n * 2e-5) ** 2) ** 0.5) for n in (1, 64, 256, 1024, 8192)]
    fit = fit_roofline(points)
    assert fit.floor_s == pytest.approx(0.004)
    assert fit.per_token_s == pytest.approx(2e-5)
    assert fit.max_relative_error < 1e-9
