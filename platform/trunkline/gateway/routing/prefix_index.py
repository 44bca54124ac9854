"""Where a prompt's cached prefix lives: two indexes of block hashes per endpoint.

Both answer the same question — for each endpoint, how many of the prompt's leading full
blocks it holds — from the prompt's chained block hashes (a hash names a whole prefix, the
request's ``cache_salt`` mixed into the first block as vLLM does).

- :class:`ApproxPrefixIndex` learns from the router's own decisions: every block of a routed
  prompt is remembered for that endpoint in a bounded LRU per endpoint (the engine's cache is
  bounded too), sized from the endpoint's KV capacity when its view reports one
  (``EndpointView.kv_capacity_tokens``) and from a fixed ``capacity_tokens`` otherwise.
  Blocks are touched last-to-first, so a block is never older than its parent:
  eviction drops tails first and what remains of a chain is always a prefix of it — the
  longest match is then found by binary search (a few lookups per endpoint). Entries are keyed
  with the salt too, so a salted request never matches blocks routed under another salt even
  if its prompt view forgot to mix the salt in.
- :class:`KvEventIndex` is fed by the engines' KV-cache events (``BlockStored``,
  ``BlockRemoved``, ``AllBlocksCleared``) through :meth:`KvEventIndex.apply`: it knows what each
  engine really holds, at the price of a subscriber per engine and hashes that must equal the
  engine's (token ids, not text).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from typing import Protocol

from trunkline.gateway.routing.views import EndpointView, RequestView
from trunkline.gateway.routing.vllm_hashes import event_block_hash

__all__ = ["ApproxPrefixIndex", "KvEventIndex", "PrefixIndex", "apply_kv_events"]


class PrefixIndex(Protocol):
    def matches(
        self, hashes: Sequence[Hashable], salt: str | None, endpoints: Sequence[str]
    ) -> list[int]:
        """Per endpoint, how many leading blocks of ``hashes`` (a prompt's chain) it holds."""
        ...

    def routed(self, request: RequestView, endpoint: EndpointView) -> None: ...


class ApproxPrefixIndex:
    """Per endpoint, an LRU of the block hashes the router sent there.

    ``capacity_tokens`` bounds each endpoint's LRU when the endpoint's view does not report its
    KV capacity, or always when ``from_endpoint`` is False (an override)."""

    def __init__(self, capacity_tokens: int, *, from_endpoint: bool = True) -> None:
        if capacity_tokens < 1:
            raise ValueError("capacity_tokens must be at least 1")
        self.capacity_tokens = capacity_tokens
        self.from_endpoint = from_endpoint
        self._blocks: dict[str, OrderedDict[Hashable, None]] = {}

    def __len__(self) -> int:
        return sum(len(blocks) for blocks in self._blocks.values())

    def matches(
        self, hashes: Sequence[Hashable], salt: str | None, endpoints: Sequence[str]
    ) -> list[int]:
        return [self._matched(hashes, salt, endpoint) for endpoint in endpoints]

    def _matched(self, hashes: Sequence[Hashable], salt: str | None, endpoint: str) -> int:
        blocks = self._blocks.get(endpoint)
        if not blocks or not hashes:
            return 0
        # Largest n such that the first n blocks are held; holding is prefix-closed (see above).
        low, high = 0, len(hashes)
        while low < high:
            middle = (low + high + 1) // 2
            if _key(hashes[middle - 1], salt) in blocks:
                low = middle
            else:
                high = middle - 1
        return low

    def routed(self, request: RequestView, endpoint: EndpointView) -> None:
        prompt = request.prompt
        if prompt is None:
            return
        hashes = prompt.block_hashes(endpoint.block_size)
        if not hashes:
            return
        blocks = self._blocks.get(endpoint.key)
        if blocks is None:
            blocks = self._blocks[endpoint.key] = OrderedDict()
        salt = request.cache_salt
        move = blocks.move_to_end
        for block_hash in reversed(hashes):
            key = _key(block_hash, salt)
            if key in blocks:
                move(key)
            else:
                blocks[key] = None
        limit = max(1, self.capacity_of(endpoint) // max(1, endpoint.block_size))
        while len(blocks) > limit:
            blocks.popitem(last=False)

    def forget(self, endpoint: str) -> None:
        """Drop what was sent to ``endpoint``: its engine restarted with an empty cache, and a
        prompt it held before is better sent where it went meanwhile."""
        self._blocks.pop(endpoint, None)

    def capacity_of(self, endpoint: EndpointView) -> int:
        """Tokens remembered for ``endpoint``: its KV capacity when known and used."""
        if self.from_endpoint and endpoint.kv_capacity_tokens:
            return endpoint.kv_capacity_tokens
        return self.capacity_tokens


def _key(block_hash: Hashable, salt: str | None) -> Hashable:
    return block_hash if salt is None else (block_hash, salt)


class KvEventIndex:
    """Which endpoint holds which block, as the engines' KV-cache events say."""

    def __init__(self) -> None:
        self._holders: dict[Hashable, set[str]] = {}
        self._held: dict[str, set[Hashable]] = {}

    def __len__(self) -> int:
        return len(self._holders)

    def apply(
        self,
        endpoint: str,
        stored: Iterable[Hashable] = (),
        removed: Iterable[Hashable] = (),
        cleared: bool = False,
    ) -> None:
        """Apply one batch of an endpoint's events: ``cleared`` first, then removals, then
        stores (vLLM reports an evicted block before the block that reused its slot)."""
        held = self._held.setdefault(endpoint, set())
        if cleared:
            for block_hash in held:
                self._forget(block_hash, endpoint)
            held.clear()
        for block_hash in removed:
            if block_hash in held:
                held.discard(block_hash)
                self._forget(block_hash, endpoint)
        for block_hash in stored:
            if block_hash not in held:
                held.add(block_hash)
                self._holders.setdefault(block_hash, set()).add(endpoint)
        if not held:  # an endpoint cleared as it left is not kept, empty, for good
            del self._held[endpoint]

    def _forget(self, block_hash: Hashable, endpoint: str) -> None:
        holders = self._holders.get(block_hash)
        if holders is not None:
            holders.discard(endpoint)
            if not holders:
                del self._holders[block_hash]

    def matches(
        self, hashes: Sequence[Hashable], salt: str | None, endpoints: Sequence[str]
    ) -> list[int]:
        # The engine mixes the salt into its own hashes: nothing to add here. One walk down the
        # chain for all endpoints, until none of them holds the next block.
        holders = self._holders
        found: dict[str, int] = {}
        alive = set(endpoints)
        depth = 0
        for block_hash in hashes:
            owners = holders.get(block_hash)
            if not owners:
                break
            still = alive & owners
            for gone in alive - still:
                found[gone] = depth
            alive = still
            if not alive:
                break
            depth += 1
        for endpoint in alive:
            found[endpoint] = depth
        return [found.get(endpoint, 0) for endpoint in endpoints]

    def routed(self, request: RequestView, endpoint: EndpointView) -> None:
        return None


def apply_kv_events(index: KvEventIndex, endpoint: str, events: Iterable[object]) -> None:
    """Apply typed KV events (the engine simulator's or vLLM's decoded ones: anything with the
    class names ``BlockStored`` / ``BlockRemoved`` / ``AllBlocksCleared`` and their
    ``block_hashes``), in order. A digest vLLM sent as bytes counts as the int it would have
    sent (:func:`~trunkline.gateway.routing.vllm_hashes.event_block_hash`)."""
    for event in events:
        kind = type(event).__name__
        hashes = map(event_block_hash, getattr(event, "block_hashes", ()))
        if kind == "BlockStored":
            index.apply(endpoint, stored=hashes)
        elif kind == "BlockRemoved":
            index.apply(endpoint, removed=hashes)
        elif kind == "AllBlocksCleared":
            index.apply(endpoint, cleared=True)
