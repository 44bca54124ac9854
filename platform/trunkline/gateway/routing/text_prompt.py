"""``TextPrompt``: the prompt view of a gateway that has the prompt's text but no tokenizer.

The gateway cannot compute the engine's block hashes (they hash token ids), but approximate
prefix affinity needs only *consistent* hashes: equal text prefixes must give equal chained
hashes at a given block size, and different ones different hashes. So the text is cut into
chunks of ``block_size * chars_per_token`` characters — about one engine block each — and
chained like vLLM's block hashes: full chunks only, each hash covering its parent's, the
``cache_salt`` mixed into the first. Hashes are computed once per block size and cached.

They use Python's built-in ``hash`` (about half a microsecond a chunk, five times faster than
blake2b), which is salted per process: the approximate index lives in the gateway process that
routes, so hashes never need to agree across processes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["TextPrompt"]

_ROOT = hash("trunkline-text-prompt")


class TextPrompt:
    """A prompt's text, hashed into approximate engine blocks on demand."""

    __slots__ = ("_hashes", "cache_salt", "chars_per_token", "text")

    def __init__(
        self, text: str, *, cache_salt: str | None = None, chars_per_token: float = 4.0
    ) -> None:
        if chars_per_token <= 0:
            raise ValueError("chars_per_token must be positive")
        self.text = text
        self.cache_salt = cache_salt
        self.chars_per_token = chars_per_token
        self._hashes: dict[int, list[int]] = {}

    @property
    def num_tokens(self) -> int:
        """Estimated from the length: characters / ``chars_per_token``, rounded up."""
        return math.ceil(len(self.text) / self.chars_per_token)

    def block_hashes(self, block_size: int) -> Sequence[int]:
        """Chained hashes of the text's full chunks of about ``block_size`` tokens."""
        hashes = self._hashes.get(block_size)
        if hashes is None:
            hashes = self._hashes[block_size] = self._compute(block_size)
        return hashes

    def _compute(self, block_size: int) -> list[int]:
        text = self.text
        chunk = max(1, round(block_size * self.chars_per_token))
        end = len(text) - len(text) % chunk
        hashes: list[int] = []
        if end == 0:
            return hashes
        parent = hash((_ROOT, self.cache_salt, text[:chunk]))
        hashes.append(parent)
        append = hashes.append
        for start in range(chunk, end, chunk):
            parent = hash((parent, text[start : start + chunk]))
            append(parent)
        return hashes
