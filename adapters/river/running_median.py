"""A running median of absolute values in O(1) memory: the robust yardstick of the forecaster's
inputs and of the anomaly detector's errors (a mean or variance would be inflated by the very
outliers and anomalies it must measure)."""

from __future__ import annotations

_STEP = 0.02  # relative step per event: about 35 events to halve or double the estimate


class RunningMedianAbs:
    """Tracks the median of ``|v|`` by relative stochastic steps towards it.

    >>> m = RunningMedianAbs()
    >>> for v in [1.0, -3.0, 2.0] * 200:
    ...     m.update(v)
    >>> round(m.get(), 1)
    2.0
    """

    def __init__(self) -> None:
        self.value = 0.0

    def update(self, v: float) -> None:
        a = abs(v)
        if self.value <= 0.0:
            self.value = a
        elif a > self.value:
            self.value *= 1.0 + _STEP
        elif a < self.value:
            self.value *= 1.0 - _STEP

    def get(self) -> float:
        """The current estimate, or 1 before any non-zero value (a neutral scale)."""
        return self.value if self.value > 0.0 else 1.0
