"""``max-score``: the highest summed score first, ties in a seeded random order.

Random among ties (rather than the first index) keeps equal endpoints sharing traffic; the
seed makes a run reproducible (the fleet simulator replays the same decisions).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

__all__ = ["MaxScorePicker"]

_TIE = 1e-9  # scores closer than this are equal (weighted sums of floats)


class MaxScorePicker:
    name = "max-score"

    def __init__(self, seed: int = 0) -> None:
        self._random = random.Random(seed).random

    def order(self, scores: Sequence[float], indices: Sequence[int]) -> list[int]:
        if len(indices) <= 1:
            return list(indices)
        draw = self._random
        keyed = [(-round(scores[i] / _TIE), draw(), i) for i in indices]
        keyed.sort()
        return [i for _, _, i in keyed]
