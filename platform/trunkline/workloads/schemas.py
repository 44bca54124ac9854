"""What a workload is: a named, seeded, repeatable stream of requests in arrival order."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from trunkline.workloads.prompts import Prompt

__all__ = ["Workload", "WorkloadRequest"]


@dataclass(slots=True)
class WorkloadRequest:
    request_id: str
    arrival: float
    """Seconds since the start of the workload."""
    tenant: str
    prompt: Prompt
    max_tokens: int
    output_tokens: list[int] | None = None
    """The scripted answer, when the workload reuses it in a later prompt (multi-turn chat)."""


class Workload(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def tenants(self) -> Mapping[str, str]:
        """Every tenant that sends requests, with its tier (``gold``, ``silver``, ``bronze``)."""
        ...

    @property
    def duration_s(self) -> float:
        """Nominal length of the arrival process (the last request may come a little earlier)."""
        ...

    def requests(self) -> Iterator[WorkloadRequest]:
        """A fresh iterator over the requests, in arrival order; equal on every call."""
        ...
