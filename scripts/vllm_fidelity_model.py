"""Build the heavier Llama that ``trunkline bench fidelity`` serves on real vLLM, offline.

Run by ``scripts/vllm-env.sh`` with the vLLM venv's Python: ``python
scripts/vllm_fidelity_model.py OUT_DIR``. Same tokenizer, chat template and seed as the tests'
tiny model (``vllm_tiny_model.py``, imported, left untouched so its stamp holds), but 8 layers
768 wide (≈56 M parameters, 112 MB of bf16 weights): a decode step then costs tens of
milliseconds on one core, so the engine rather than vLLM's API server and the load generator
decides what a client measures. The weights are random; vLLM serves them as a real model.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder is on sys.path: the tiny builder imports as a module.
from vllm_tiny_model import build_model, build_tokenizer

# The shape trunkline.engines.hardware.MODELS["fidelity-llama"] describes: keep them equal.
HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, POSITIONS = 768, 2048, 8, 12, 4, 2048


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR")
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    shape = (HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, POSITIONS)
    build_model(out, build_tokenizer(out), shape)


if __name__ == "__main__":
    main()
