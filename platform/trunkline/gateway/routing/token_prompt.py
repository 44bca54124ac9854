"""``TokenPrompt``: a prompt as the engine's token ids, hashed into blocks the way vLLM hashes
them (:class:`~trunkline.gateway.routing.vllm_hashes.VllmHashing`), so the precise prefix index
(the engines' KV-cache events) can find where its blocks are. The gateway builds one when it
has the model's tokenizer (docs/routing.md)."""

from __future__ import annotations

from collections.abc import Sequence

from trunkline.gateway.routing.vllm_hashes import VllmHashing

__all__ = ["TokenPrompt"]


class TokenPrompt:
    """A prompt's token ids, hashed into an engine's blocks on demand (once per block size)."""

    __slots__ = ("_hashes", "cache_salt", "hashing", "token_ids")

    def __init__(
        self, token_ids: Sequence[int], hashing: VllmHashing, *, cache_salt: str | None = None
    ) -> None:
        self.token_ids = token_ids
        self.hashing = hashing
        self.cache_salt = cache_salt
        self._hashes: dict[int, list[int]] = {}

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    def block_hashes(self, block_size: int) -> Sequence[int]:
        hashes = self._hashes.get(block_size)
        if hashes is None:
            hashes = self.hashing.block_hashes(self.token_ids, block_size, self.cache_salt)
            self._hashes[block_size] = hashes
        return hashes
