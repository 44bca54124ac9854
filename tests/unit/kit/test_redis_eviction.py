"""The start-up eviction check at its boundary: Redis services that hide their configuration."""

from __future__ import annotations

from typing import Any

import redis

from trunkline.kit.redis_eviction import eviction_warning


class _Config:
    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def config_get(self, pattern: str = "*") -> Any:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_a_redis_that_refuses_config_is_not_judged() -> None:
    """Several managed Redis services rename or disable CONFIG: the process starts, unwarned."""
    refused = redis.ResponseError("ERR unknown command 'CONFIG', with args beginning with: 'GET'")
    assert eviction_warning(_Config(refused)) is None


def test_an_answer_in_bytes_is_read_as_text() -> None:
    """redis-py answers bytes unless the client decodes responses, as the processes' do not."""
    said = eviction_warning(
        _Config({b"maxmemory": b"1073741824", b"maxmemory-policy": b"volatile-lru"})
    )
    assert said is not None and "maxmemory-policy volatile-lru (maxmemory 1073741824 bytes)" in said
