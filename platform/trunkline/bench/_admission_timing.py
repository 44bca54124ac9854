"""How long the admission code itself takes per decision, apart from the machine's scheduling.

A simulated run times each ``decide`` call on the wall clock and in CPU time, but on a shared
machine the wall clock also counts the time the process was descheduled. :class:`RecordingPolicy`
is the gateway's :class:`AdmissionPolicy` that also logs every call it gets (each ``decide`` and
``poll`` with its inputs, and each prefix-cache lookup's answer); :func:`replay_decide_times` then
runs the same calls through a fresh policy in a tight loop, several times, and keeps each
decision's fastest wall time — the code's own latency, with the same state at every decision as
in the run (the replay checks it reaches the same decisions).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass

from trunkline.gateway.admission import AdmissionConfig, AdmissionPolicy, Decision
from trunkline.gateway.admission.policy import Release
from trunkline.gateway.admission.predictor import TtftPredictor
from trunkline.gateway.routing import EndpointLoad, EndpointView, RequestView
from trunkline.snapshot import TierEntry

__all__ = ["RecordingPolicy", "replay_decide_times"]


@dataclass(frozen=True, slots=True)
class _Decide:
    request: RequestView
    tier: TierEntry
    ranked: tuple[EndpointView, ...]
    now: float
    outcome: str


@dataclass(frozen=True, slots=True)
class _Poll:
    now: float
    loads: Mapping[str, EndpointLoad]


class _RecordingPredictor(TtftPredictor):
    def __init__(self) -> None:
        super().__init__()
        self.answers: list[int] = []

    def uncached_tokens(self, request: RequestView, endpoint: EndpointView) -> int:
        tokens = super().uncached_tokens(request, endpoint)
        self.answers.append(tokens)
        return tokens


class _ReplayPredictor(TtftPredictor):
    def __init__(self, answers: Sequence[int]) -> None:
        super().__init__()
        self._answers = deque(answers)

    def uncached_tokens(self, request: RequestView, endpoint: EndpointView) -> int:
        return self._answers.popleft()


class RecordingPolicy(AdmissionPolicy):
    """An :class:`AdmissionPolicy` (default predictor) that logs its calls for a replay."""

    def __init__(self, config: AdmissionConfig | None = None) -> None:
        self._recorder = _RecordingPredictor()
        super().__init__(config, predictor=self._recorder)
        self.events: list[_Decide | _Poll] = []

    @property
    def answers(self) -> list[int]:
        return self._recorder.answers

    def decide(
        self, request: RequestView, tier: TierEntry, ranked: Sequence[EndpointView], now: float
    ) -> Decision:
        decision = super().decide(request, tier, ranked, now)
        self.events.append(_Decide(request, tier, tuple(ranked), now, decision.outcome))
        return decision

    def poll(
        self,
        now: float,
        loads: Mapping[str, EndpointLoad],
        out_of_service: Container[str] = (),
        gone: Container[str] = (),
    ) -> list[Release]:
        self.events.append(_Poll(now, dict(loads)))
        return super().poll(now, loads, out_of_service, gone)


def replay_decide_times(recorded: RecordingPolicy, repeats: int = 3) -> list[tuple[str, float]]:
    """``(outcome, seconds)`` per recorded decision: the fastest of ``repeats`` tight-loop replays
    of the whole recorded sequence through a fresh policy with the same configuration."""
    best: list[tuple[str, float]] | None = None
    for _ in range(repeats):
        policy = AdmissionPolicy(recorded.config, predictor=_ReplayPredictor(recorded.answers))
        times: list[tuple[str, float]] = []
        clock = time.perf_counter
        for event in recorded.events:
            if isinstance(event, _Poll):
                policy.poll(event.now, event.loads)
                continue
            started = clock()
            decision = policy.decide(event.request, event.tier, event.ranked, event.now)
            elapsed = clock() - started
            if decision.outcome != event.outcome:
                raise RuntimeError("the replay diverged from the recorded run")
            times.append((decision.outcome, elapsed))
        if best is None:
            best = times
        else:
            best = [(o, min(a, b)) for (o, a), (_, b) in zip(best, times, strict=True)]
    return best or []
