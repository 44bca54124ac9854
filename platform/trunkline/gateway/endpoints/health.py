"""Outlier ejection of one endpoint: a small state machine over explicit time, no I/O.

- **in service**: every failure (connect error, 5xx, timeout before the first byte, a stream
  failing, failed scrape) counts; ``eject_after`` failures in a row eject it. A request's
  success resets the count; a scrape's resets only the scrapes' failures: a page of metrics
  says nothing of whether the engine answers requests, and scrapes come ten times a second,
  so they would otherwise wipe out every request failure before a third one came.
- **ejected** until ``ejected_until``: routing skips it, the scraper leaves it alone, and what
  still comes back from requests sent before the ejection changes nothing.
- **half-open** once the deadline passed: the next outcome is the probe (the scraper's next
  scrape, or a request if no scraper runs). A success readmits it; a failure ejects it again
  for twice as long (up to ``max_s``; a failed scrape, whose engine does not answer at all, up
  to ``probe_max_s``, so an engine that restarts after a long outage is probed and back within
  seconds, not up to ``max_s`` later). The backoff falls back to ``base_s`` once the endpoint
  stayed in service for ``max_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EjectionPolicy", "Health"]


@dataclass(frozen=True, slots=True)
class EjectionPolicy:
    eject_after: int = 3
    """Consecutive failures that eject an endpoint."""
    base_s: float = 1.0
    """First ejection time; doubled by every ejection that follows a failed probe."""
    max_s: float = 30.0
    probe_max_s: float = 5.0
    """Longest ejection after a failed scrape probe (a scrape costs the engine nothing)."""

    def backoff(self, level: int) -> float:
        return float(min(self.base_s * 2 ** max(level - 1, 0), self.max_s))


class Health:
    """The health of one endpoint; ``now`` is any monotonic clock in seconds."""

    __slots__ = (
        "_admitted_at",
        "_level",
        "_policy",
        "ejected_until",
        "ejections",
        "failures",
        "failures_total",
        "scrape_failures",
    )

    def __init__(self, policy: EjectionPolicy) -> None:
        self._policy = policy
        self.failures = 0
        """Consecutive failures, of requests and scrapes alike."""
        self.scrape_failures = 0
        """How many of ``failures`` were scrapes' (what a scrape's success takes back)."""
        self.ejected_until: float | None = None
        self.ejections = 0
        """How many times this endpoint was ejected (for logs and metrics)."""
        self.failures_total = {"request": 0, "scrape": 0}
        """Every failure recorded, of requests and of scrapes (for metrics)."""
        self._level = 0
        self._admitted_at = 0.0

    def in_service(self, now: float) -> bool:
        """Not ejected, or its ejection is over (half-open: the next outcome decides)."""
        return self.ejected_until is None or now >= self.ejected_until

    def ejected(self, now: float) -> bool:
        return not self.in_service(now)

    def half_open(self, now: float) -> bool:
        return self.ejected_until is not None and now >= self.ejected_until

    def failed(self, now: float, *, scrape: bool = False) -> bool:
        """Record a failure (``scrape``: of a scrape, else of a request); returns True when it
        ejected the endpoint."""
        self.failures_total["scrape" if scrape else "request"] += 1
        if self.ejected_until is not None:
            if now < self.ejected_until:
                return False  # a request sent before the ejection: nothing new
            self._eject(now, probe_max_s=self._policy.probe_max_s if scrape else None)
            return True
        self.failures += 1
        self.scrape_failures += scrape
        if self.failures >= self._policy.eject_after:
            if now - self._admitted_at >= self._policy.max_s:
                self._level = 0  # long in service since the last readmission: start over
            self._eject(now)
            return True
        return False

    def succeeded(self, now: float, *, scrape: bool = False) -> bool:
        """Record a success (``scrape``: of a scrape, which takes back only the scrapes'
        failures); returns True when it readmitted the endpoint (a half-open one's probe)."""
        if self.ejected_until is not None:
            if now < self.ejected_until:
                return False
            self.ejected_until = None
            self._admitted_at = now
            self.failures = self.scrape_failures = 0
            return True
        if scrape:
            self.failures -= self.scrape_failures
        else:
            self.failures = 0
        self.scrape_failures = 0
        return False

    def _eject(self, now: float, *, probe_max_s: float | None = None) -> None:
        self._level += 1
        self.ejections += 1
        self.failures = self.scrape_failures = 0
        backoff = self._policy.backoff(self._level)
        self.ejected_until = now + (backoff if probe_max_s is None else min(backoff, probe_max_s))
