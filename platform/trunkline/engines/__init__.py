"""The vLLM engine simulator: a model of vLLM's scheduler and KV cache behind vLLM's HTTP surface.

Layers, from pure to I/O:

- :mod:`~trunkline.engines.hardware` and :mod:`~trunkline.engines.profiles` — accelerator and
  model figures (each citing its source) and the step-time model derived from them;
  :mod:`~trunkline.engines.vidur` fits that model to Vidur's measured kernel times;
- :mod:`~trunkline.engines.tokens` — a deterministic toy tokenizer and chat template;
- :mod:`~trunkline.engines.kv_cache`, :mod:`~trunkline.engines.kv_manager` and
  :mod:`~trunkline.engines.core` — the pure engine model (continuous batching, chunked prefill,
  prefix caching, LRU eviction, preemption, KV-cache events), stepped with explicit time;
- two drivers over that core: :mod:`~trunkline.engines.runner` in (scaled) wall-clock time on
  asyncio, :mod:`~trunkline.engines.virtual` in virtual time (with
  :mod:`~trunkline.engines.decode_runs` batching identical decode steps);
- :mod:`~trunkline.engines.metrics` — vLLM's ``/metrics`` page and a parser for real ones;
- :mod:`~trunkline.engines.server` — the OpenAI-compatible ASGI app;
- :mod:`~trunkline.engines.fleet` — engines served on loopback ports, in-loop or in a thread.
"""

from trunkline.engines.core import EngineCore
from trunkline.engines.events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    DecodeRun,
    EngineCounters,
    FinishReason,
    KVCacheEvent,
    KVEventSink,
    RequestUsage,
    StepResult,
    TokenEvent,
)
from trunkline.engines.fleet import (
    EngineFleetThread,
    EngineSpec,
    SimulatedEngines,
    start_in_thread,
)
from trunkline.engines.hardware import ACCELERATORS, MODELS, Accelerator, ModelShape
from trunkline.engines.kv_cache import BlockHash, hash_block, prefix_block_hashes
from trunkline.engines.metrics import EngineLoad, EngineMetrics, parse_vllm_metrics
from trunkline.engines.profiles import (
    PRESETS,
    AcceleratorProfile,
    UnknownProfileError,
    derive_profile,
    get_profile,
)
from trunkline.engines.runner import AsyncEngine, EngineClosedError, RequestStream
from trunkline.engines.server import SimApp, create_sim_app
from trunkline.engines.tokens import ChatMessage, apply_chat_template, detokenize, tokenize
from trunkline.engines.virtual import VirtualEngine

__all__ = [
    "ACCELERATORS",
    "MODELS",
    "PRESETS",
    "Accelerator",
    "AcceleratorProfile",
    "AllBlocksCleared",
    "AsyncEngine",
    "BlockHash",
    "BlockRemoved",
    "BlockStored",
    "ChatMessage",
    "DecodeRun",
    "EngineClosedError",
    "EngineCore",
    "EngineCounters",
    "EngineFleetThread",
    "EngineLoad",
    "EngineMetrics",
    "EngineSpec",
    "FinishReason",
    "KVCacheEvent",
    "KVEventSink",
    "ModelShape",
    "RequestStream",
    "RequestUsage",
    "SimApp",
    "SimulatedEngines",
    "StepResult",
    "TokenEvent",
    "UnknownProfileError",
    "VirtualEngine",
    "apply_chat_template",
    "create_sim_app",
    "derive_profile",
    "detokenize",
    "get_profile",
    "hash_block",
    "parse_vllm_metrics",
    "prefix_block_hashes",
    "start_in_thread",
    "tokenize",
]
