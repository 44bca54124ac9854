"""The vLLM engine simulator: a model of vLLM's scheduler and KV cache behind vLLM's HTTP surface.

Layers, from pure to I/O:

- :mod:`~trunkline.engines.profiles` — per-accelerator step-time and capacity numbers;
- :mod:`~trunkline.engines.tokens` — a deterministic toy tokenizer and chat template;
- :mod:`~trunkline.engines.kv_cache` and :mod:`~trunkline.engines.core` — the pure engine model
  (continuous batching, chunked prefill, prefix caching, LRU eviction, preemption), stepped with
  explicit time so it runs in wall-clock or virtual time;
- :mod:`~trunkline.engines.metrics` — vLLM's ``/metrics`` page and a parser for real ones;
- :mod:`~trunkline.engines.runner` — the core driven in (scaled) wall-clock time on asyncio;
- :mod:`~trunkline.engines.server` — the OpenAI-compatible ASGI app;
- :mod:`~trunkline.engines.fleet` — engines served on loopback ports, in-loop or in a thread.
"""

from trunkline.engines.core import EngineCore
from trunkline.engines.events import (
    EngineCounters,
    FinishReason,
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
from trunkline.engines.kv_cache import BlockHash, hash_block, prefix_block_hashes
from trunkline.engines.metrics import EngineLoad, EngineMetrics, parse_vllm_metrics
from trunkline.engines.profiles import (
    PRESETS,
    AcceleratorProfile,
    UnknownProfileError,
    get_profile,
)
from trunkline.engines.runner import AsyncEngine, EngineClosedError, RequestStream
from trunkline.engines.server import SimApp, create_sim_app
from trunkline.engines.tokens import ChatMessage, apply_chat_template, detokenize, tokenize

__all__ = [
    "PRESETS",
    "AcceleratorProfile",
    "AsyncEngine",
    "BlockHash",
    "ChatMessage",
    "EngineClosedError",
    "EngineCore",
    "EngineCounters",
    "EngineFleetThread",
    "EngineLoad",
    "EngineMetrics",
    "EngineSpec",
    "FinishReason",
    "RequestStream",
    "RequestUsage",
    "SimApp",
    "SimulatedEngines",
    "StepResult",
    "TokenEvent",
    "UnknownProfileError",
    "apply_chat_template",
    "create_sim_app",
    "detokenize",
    "get_profile",
    "hash_block",
    "parse_vllm_metrics",
    "prefix_block_hashes",
    "start_in_thread",
    "tokenize",
]
