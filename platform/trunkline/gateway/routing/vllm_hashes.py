"""vLLM's prefix-cache block hashes, computed in the gateway from a prompt's token ids.

A vLLM engine names each full block of ``block_size`` tokens in its prefix cache by a chained
hash, and its KV-cache events report blocks by those names. To find which engine holds a
prompt's blocks, the gateway computes the same names (vLLM 0.32, ``vllm/v1/core/
kv_cache_utils.py``):

- the first block's parent is ``NONE_HASH``, the hash of the seed: the engine's
  ``PYTHONHASHSEED`` when set, else ``"vllm-none-hash"`` (for the cryptographic algorithms);
- each block's hash is the hash of ``(parent hash, the block's token ids as a tuple, extra
  keys)``, the extra keys being ``(("cache_salt", salt),)`` on the first block of a salted
  request and None otherwise (LoRA and multimodal keys are not modelled: such requests do not
  match, which routes them by load);
- ``sha256`` serialises that tuple with pickle (the engine's default), ``sha256_cbor`` with
  canonical CBOR; the digest is SHA-256;
- events carry the digest's low 64 bits, read big-endian, as an int
  (``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES``, on by default); :func:`event_block_hash` turns a
  digest an engine sent as bytes (that setting off) into the same int.

The engines and the gateway must agree on the algorithm and the seed: ``TRUNKLINE_GATEWAY__
KV_HASH__ALGO`` and ``__SEED`` (docs/routing.md). The non-cryptographic ``xxhash`` algorithms
are not supported: vLLM seeds them at random per process unless ``PYTHONHASHSEED`` is set.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["DEFAULT_SEED", "VllmHashing", "event_block_hash"]

DEFAULT_SEED = "vllm-none-hash"
"""What vLLM derives ``NONE_HASH`` from when ``PYTHONHASHSEED`` is unset (sha256 algorithms)."""
_LOW_64_BITS = (1 << 64) - 1


def _sha256_pickle(value: Any) -> bytes:
    return hashlib.sha256(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)).digest()


def _sha256_cbor(value: Any) -> bytes:
    import cbor2  # only for engines configured with --prefix-caching-hash-algo sha256_cbor

    return hashlib.sha256(cbor2.dumps(value, canonical=True)).digest()


_DIGESTS: dict[str, Callable[[Any], bytes]] = {
    "sha256": _sha256_pickle,
    "sha256_cbor": _sha256_cbor,
}


def event_block_hash(block_hash: int | bytes) -> int:
    """A block hash from a KV event as an int: vLLM's own conversion of a digest sent as bytes."""
    if isinstance(block_hash, bytes):
        return int.from_bytes(block_hash, "big") & _LOW_64_BITS
    return block_hash


@dataclass(frozen=True, slots=True)
class VllmHashing:
    """How the engines hash their blocks: ``--prefix-caching-hash-algo`` and ``PYTHONHASHSEED``
    (None: unset)."""

    algo: Literal["sha256", "sha256_cbor"] = "sha256"
    seed: str | None = None
    _none_hash: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        digest = _DIGESTS[self.algo]
        object.__setattr__(
            self, "_none_hash", digest(DEFAULT_SEED if self.seed is None else self.seed)
        )

    def block_hashes(
        self, token_ids: Sequence[int], block_size: int, cache_salt: str | None = None
    ) -> list[int]:
        """The names of the prompt's full blocks, as the engine's KV events give them."""
        if block_size < 1:
            raise ValueError("block_size must be at least 1")
        digest = _DIGESTS[self.algo]
        parent = self._none_hash
        hashes: list[int] = []
        extra: tuple[tuple[str, str], ...] | None = (
            (("cache_salt", cache_salt),) if cache_salt else None
        )
        for start in range(0, len(token_ids) - block_size + 1, block_size):
            parent = digest((parent, tuple(token_ids[start : start + block_size]), extra))
            hashes.append(int.from_bytes(parent, "big") & _LOW_64_BITS)
            extra = None
        return hashes
