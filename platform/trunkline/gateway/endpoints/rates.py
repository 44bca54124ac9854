"""Service rates of an engine from two consecutive scrapes of its cumulative counters.

- prefill tokens/s: prompt tokens the engine computed (``prompt_tokens`` minus the prefix-cache
  hits) over the prefill time those requests took. vLLM sums prefill time per request, so
  requests prefilled in one batch each count the whole step, and the sum outgrows the wall
  time when prefills overlap: then the prompt tokens over the window itself (what the engine
  got through) is the better figure. The larger of the two is taken, which is the per-request
  rate under light load and the engine's throughput under heavy load. Engines without the
  prefill histogram get no measured rate.
- decode step: mean inter-token latency of the tokens generated between the two scrapes.

Both are smoothed (EWMA) and keep their last value while an engine is idle; a counter that went
backwards (an engine restart) starts over from the new page.
"""

from __future__ import annotations

from dataclasses import dataclass

from trunkline.gateway.endpoints.scan import MetricsScan

__all__ = ["Rates", "next_rates"]

SMOOTHING = 0.3
"""Weight of the newest window in the moving averages."""


@dataclass(frozen=True, slots=True)
class Rates:
    prefill_tokens_per_s: float = 0.0
    decode_step_s: float = 0.0


def next_rates(
    previous: MetricsScan | None, current: MetricsScan, rates: Rates, window_s: float = 0.0
) -> Rates:
    """The rates after ``current``, given the scrape ``window_s`` before it and the rates so far."""
    if previous is None:
        return rates
    computed = (current.prompt_tokens - previous.prompt_tokens) - (
        current.prefix_cache_hits - previous.prefix_cache_hits
    )
    prefill_s = current.prefill_seconds - previous.prefill_seconds
    gaps = current.itl_count - previous.itl_count
    itl_s = current.itl_seconds - previous.itl_seconds
    prefill = rates.prefill_tokens_per_s
    if prefill_s > 0 and computed > 0:
        prefill = _smooth(prefill, computed / min(prefill_s, window_s or prefill_s))
    decode = rates.decode_step_s
    if gaps > 0 and itl_s > 0:
        decode = _smooth(decode, itl_s / gaps)
    return Rates(prefill, decode)


def _smooth(last: float, sample: float) -> float:
    return sample if last <= 0 else last + SMOOTHING * (sample - last)
