"""Accelerator and model figures, and the derivation of an engine profile from them.

A profile's step-time constants come from a roofline of the model on the accelerator, scaled by
*achieved* efficiencies: the weights are streamed once per step at ``mbu`` of the peak memory
bandwidth, and every scheduled token costs the model's linear FLOPs at ``mfu`` of the peak
compute. For A100 and H100 those efficiencies are fitted to Vidur's measured kernel times
(``../shared/data/vidur_profiling``, see :mod:`trunkline.engines.vidur`; a unit test re-fits the
CSVs and checks the numbers below); for the other accelerators they are stated assumptions, to
be replaced by a fit when the hardware is at hand (``trunkline bench fidelity`` does it for this
machine's CPU). Any model size works: the shape's parameter count, layers and KV heads scale
every term.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ACCELERATORS",
    "LLAMA_3_8B",
    "MODELS",
    "Accelerator",
    "ModelShape",
]

GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What the step-time model needs to know about a dense decoder-only transformer."""

    name: str
    linear_params: float
    """Parameters of the per-layer linear projections, summed over layers (FLOPs per token / 2)."""
    lm_head_params: float
    total_params: float
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_model_len: int
    dtype_bytes: int = 2

    @property
    def weight_bytes(self) -> float:
        return self.total_params * self.dtype_bytes

    @property
    def streamed_weight_bytes(self) -> float:
        """Bytes read from memory every step (the embedding table is only gathered)."""
        return (self.linear_params + self.lm_head_params) * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of every layer, as vLLM's paged cache stores them."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes

    @property
    def attention_flops_per_pair(self) -> int:
        """QK^T and PV for one (query, key) pair over every layer and head."""
        return 4 * self.num_layers * self.num_heads * self.head_dim


def _llama(
    name: str,
    *,
    hidden: int,
    ffn: int,
    layers: int,
    heads: int,
    kv_heads: int,
    vocab: int,
    max_model_len: int,
    tied: bool = False,
) -> ModelShape:
    head_dim = hidden // heads
    per_layer = hidden * (hidden + 2 * kv_heads * head_dim) + hidden * hidden + 3 * hidden * ffn
    embedding = hidden * vocab
    lm_head = hidden * vocab
    return ModelShape(
        name=name,
        linear_params=float(per_layer * layers),
        lm_head_params=float(lm_head),
        total_params=float(per_layer * layers + embedding + (0 if tied else lm_head)),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        max_model_len=max_model_len,
    )


# Shapes from each model's config.json on Hugging Face (hidden_size, intermediate_size,
# num_hidden_layers, num_attention_heads, num_key_value_heads, vocab_size); Llama 3.1 and 3.2
# serve 128k-token contexts (max_position_embeddings 131072).
LLAMA_3_8B = _llama(
    "llama-3-8b",
    hidden=4096,
    ffn=14336,
    layers=32,
    heads=32,
    kv_heads=8,
    vocab=128256,
    max_model_len=131072,
)
MODELS: dict[str, ModelShape] = {
    "llama-3-8b": LLAMA_3_8B,
    "llama-3.2-1b": _llama(
        "llama-3.2-1b",
        hidden=2048,
        ffn=8192,
        layers=16,
        heads=32,
        kv_heads=8,
        vocab=128256,
        max_model_len=131072,
        tied=True,
    ),
    "llama-3.2-3b": _llama(
        "llama-3.2-3b",
        hidden=3072,
        ffn=8192,
        layers=28,
        heads=24,
        kv_heads=8,
        vocab=128256,
        max_model_len=131072,
        tied=True,
    ),
    # Vidur's H100 profile was measured on Llama-2-7B (4096 hidden, 11008 FFN, 32 KV heads).
    "llama-2-7b": _llama(
        "llama-2-7b",
        hidden=4096,
        ffn=11008,
        layers=32,
        heads=32,
        kv_heads=32,
        vocab=32000,
        max_model_len=4096,
    ),
    # The random-weight model scripts/vllm-env.sh builds for tests and `trunkline bench fidelity`.
    "tiny-llama": _llama(
        "tiny-llama",
        hidden=128,
        ffn=512,
        layers=2,
        heads=4,
        kv_heads=2,
        vocab=4096,
        max_model_len=2048,
    ),
    # The heavier random-weight model `trunkline bench fidelity` serves (scripts/
    # vllm_fidelity_model.py): a decode step of tens of ms on one core, so the engine dominates.
    "fidelity-llama": _llama(
        "fidelity-llama",
        hidden=768,
        ffn=2048,
        layers=8,
        heads=12,
        kv_heads=4,
        vocab=4096,
        max_model_len=2048,
    ),
    "llama-3-70b": _llama(
        "llama-3-70b",
        hidden=8192,
        ffn=28672,
        layers=80,
        heads=64,
        kv_heads=8,
        vocab=128256,
        max_model_len=131072,
    ),
}


@dataclass(frozen=True, slots=True)
class Accelerator:
    """Peak figures of one accelerator, the efficiencies vLLM reaches on it, and vLLM's limits."""

    name: str
    memory_gib: float
    bandwidth_bytes_s: float
    bf16_flops: float
    mbu: float
    """Achieved fraction of peak memory bandwidth when streaming weights and KV."""
    mfu: float
    """Achieved fraction of peak dense BF16 compute in GEMMs and attention."""
    step_overhead_s: float
    """Fixed cost of one engine step: scheduling, input preparation, sampling launch."""
    max_num_seqs: int
    max_num_batched_tokens: int
    block_size: int = 16
    gpu_memory_utilization: float = 0.9
    reserved_gib: float = 2.0
    """Activations, CUDA graphs and runtime memory kept out of the KV cache."""
    kv_cache_gib: float | None = None
    """A fixed KV-cache size (vLLM on CPU: ``VLLM_CPU_KVCACHE_SPACE``) instead of memory left."""


# vLLM's batch defaults for the OpenAI server (vllm/engine/arg_utils.py, get_batch_defaults):
# devices with >= 70 GiB other than A100 get max_num_batched_tokens 8192 / max_num_seqs 1024,
# other GPUs 2048 / 256, the CPU backend 2048 / 128 (per socket).
# Efficiencies fitted to Vidur (unit-tested against the CSVs by tests/unit/engines/test_vidur.py):
#   A100 Llama-3-8B mlp.csv: 10.78 ms weight floor, 69.24 µs/token -> mbu 0.635, mfu 0.646;
#   H100 Llama-2-7B mlp.csv:  6.39 ms weight floor, 21.86 µs/token -> mbu 0.605, mfu 0.599.
_STEP_OVERHEAD_GPU_S = 5e-4  # assumed: vLLM V1 scheduler + input prep per step with CUDA graphs

ACCELERATORS: dict[str, Accelerator] = {
    # NVIDIA H100 SXM5 datasheet: 80 GB HBM3, 3.35 TB/s, 989 TFLOPS dense BF16.
    "h100": Accelerator(
        "h100",
        memory_gib=80,
        bandwidth_bytes_s=3.35e12,
        bf16_flops=989e12,
        mbu=0.605,
        mfu=0.599,
        step_overhead_s=_STEP_OVERHEAD_GPU_S,
        max_num_seqs=1024,
        max_num_batched_tokens=8192,
    ),
    # NVIDIA H200 SXM datasheet: 141 GB HBM3e, 4.8 TB/s, 989 TFLOPS dense BF16 (same Hopper die,
    # so H100's fitted efficiencies are reused).
    "h200": Accelerator(
        "h200",
        memory_gib=141,
        bandwidth_bytes_s=4.8e12,
        bf16_flops=989e12,
        mbu=0.605,
        mfu=0.599,
        step_overhead_s=_STEP_OVERHEAD_GPU_S,
        max_num_seqs=1024,
        max_num_batched_tokens=8192,
    ),
    # NVIDIA A100 80GB SXM datasheet: 2,039 GB/s HBM2e, 312 TFLOPS dense BF16.
    "a100": Accelerator(
        "a100",
        memory_gib=80,
        bandwidth_bytes_s=2.039e12,
        bf16_flops=312e12,
        mbu=0.635,
        mfu=0.646,
        step_overhead_s=_STEP_OVERHEAD_GPU_S,
        max_num_seqs=256,
        max_num_batched_tokens=2048,
    ),
    # NVIDIA L40S datasheet: 48 GB GDDR6, 864 GB/s, 362 TFLOPS dense BF16 (733 with sparsity).
    # Efficiencies: assumed equal to A100's fit (no public per-kernel profile).
    "l40s": Accelerator(
        "l40s",
        memory_gib=48,
        bandwidth_bytes_s=864e9,
        bf16_flops=362e12,
        mbu=0.635,
        mfu=0.646,
        step_overhead_s=_STEP_OVERHEAD_GPU_S,
        max_num_seqs=256,
        max_num_batched_tokens=2048,
    ),
    # Intel Gaudi 3 (HL-325L) datasheet: 128 GB HBM2e, 3.7 TB/s, 1,835 TFLOPS BF16 (MME).
    # vllm-gaudi uses 128-token blocks. Efficiencies and overhead: assumed (A100's fit, 1 ms).
    "gaudi3": Accelerator(
        "gaudi3",
        memory_gib=128,
        bandwidth_bytes_s=3.7e12,
        bf16_flops=1835e12,
        mbu=0.635,
        mfu=0.646,
        step_overhead_s=1e-3,
        max_num_seqs=256,
        max_num_batched_tokens=2048,
        block_size=128,
    ),
    # Intel Xeon 6980P (Granite Rapids, 128 P-cores): 12 channels DDR5-6400 = 614 GB/s; AMX does
    # 1,024 BF16 FLOP per cycle per core, x 128 cores x 2.0 GHz = 262 TFLOPS. vLLM's CPU backend
    # takes its KV size from VLLM_CPU_KVCACHE_SPACE (the docs' example: 40 GiB) and wants block
    # sizes in multiples of 32 (default 128). Efficiencies and the 5 ms step overhead (Python
    # scheduler plus OpenMP fork/join per step) are assumptions; calibrate on the real machine.
    "xeon": Accelerator(
        "xeon",
        memory_gib=512,
        bandwidth_bytes_s=614e9,
        bf16_flops=262e12,
        mbu=0.5,
        mfu=0.3,
        step_overhead_s=5e-3,
        max_num_seqs=128,
        max_num_batched_tokens=2048,
        block_size=128,
        kv_cache_gib=40,
    ),
}
