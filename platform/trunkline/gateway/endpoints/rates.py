"""Service rates of an engine from two consecutive scrapes of its cumulative counters.

- prefill tokens/s: prompt tokens the engine computed (``prompt_tokens`` minus the prefix-cache
  hits) over the prefill time those requests took. vLLM sums prefill time per request, so
  requests prefilled in one batch each count the whole step, and the sum outgrows the wall
  time when prefills overlap: then the prompt tokens over the window itself (what the engine
  got through) is the better figure. The larger of the two is taken, which is the per-request
  rate under light load and the engine's throughput under heavy load. Engines without the
  prefill histogram get no measured rate. vLLM counts a request's prompt tokens when its first
  token comes but observes its prefill time only when it finishes, so the two rarely move in
  the same scrape window: both are summed over windows (with the windows' length) until each has
  moved, and the rate is taken then.
- decode step: mean inter-token latency of the tokens generated between the two scrapes. A
  window holding a prefill step reads many times the decode step (every running request waited
  for the prefill: on vLLM's CPU build 20 ms steps read 50-270 ms), and the prefill ahead of a
  request is already counted apart (``queued_prompt_tokens``), so the average follows such
  spikes only slowly (:data:`SPIKE_SMOOTHING`) and falls back at the usual pace.

Both are smoothed (EWMA) and keep their last value while an engine is idle; a counter that went
backwards (an engine restart) starts over from the new page.
"""

from __future__ import annotations

from dataclasses import dataclass

from trunkline.gateway.endpoints.scan import MetricsScan, restarted

__all__ = ["Rates", "next_rates"]

SMOOTHING = 0.3
"""Weight of the newest window in the moving averages."""
SPIKE_SMOOTHING = 0.05
"""Weight of a decode-step window above the current average."""


@dataclass(frozen=True, slots=True)
class Rates:
    prefill_tokens_per_s: float = 0.0
    decode_step_s: float = 0.0
    pending_tokens: float = 0.0
    """Prompt tokens computed since the prefill rate was last taken."""
    pending_prefill_s: float = 0.0
    """Prefill time observed since then."""
    pending_window_s: float = 0.0
    """Time the scrapes since then span."""


def next_rates(
    previous: MetricsScan | None, current: MetricsScan, rates: Rates, window_s: float = 0.0
) -> Rates:
    """The rates after ``current``, given the scrape ``window_s`` before it and the rates so far."""
    if previous is None:
        return rates
    if restarted(previous, current):
        # A new engine: keep the rates (the same hardware) and start the pending sums over.
        return Rates(rates.prefill_tokens_per_s, rates.decode_step_s)
    computed = (current.prompt_tokens - previous.prompt_tokens) - (
        current.prefix_cache_hits - previous.prefix_cache_hits
    )
    tokens = rates.pending_tokens + computed
    prefill_s = rates.pending_prefill_s + current.prefill_seconds - previous.prefill_seconds
    window = rates.pending_window_s + window_s
    gaps = current.itl_count - previous.itl_count
    itl_s = current.itl_seconds - previous.itl_seconds
    prefill = rates.prefill_tokens_per_s
    if prefill_s > 0 and tokens > 0:
        prefill = _smooth(prefill, tokens / min(prefill_s, window or prefill_s))
        tokens = prefill_s = window = 0.0
    elif prefill_s <= 0 and tokens <= 0:
        window = 0.0  # nothing prefilled: an idle spell says nothing of the engine's speed
    decode = rates.decode_step_s
    if gaps > 0 and itl_s > 0:
        sample = itl_s / gaps
        decode = _smooth(decode, sample, SPIKE_SMOOTHING if sample > decode else SMOOTHING)
    # Tokens may be negative for a while: prefix-cache hits count when a request is scheduled,
    # its prompt tokens at its first token; the deficit is owed by the next windows.
    return Rates(prefill, decode, tokens, max(prefill_s, 0.0), window)


def _smooth(last: float, sample: float, weight: float = SMOOTHING) -> float:
    return sample if last <= 0 else last + weight * (sample - last)
