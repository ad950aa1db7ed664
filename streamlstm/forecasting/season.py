"""Online season detection from the autocorrelation of the recent first differences."""

from __future__ import annotations

import numpy as np
from numba import njit

MIN_CYCLES = 1.5       # a season is looked for only in a window holding this many cycles of it
MIN_CHANGES = 20       # fewer changes than this show no season (too noisy an autocorrelation)
CLIP = 5.0              # differences are clipped to this many times their median size
ACF_THRESHOLD = 0.3     # the autocorrelation at the season's lag must exceed this


@njit(cache=True, error_model="numpy", nogil=True)
def _autocorrelation(values: np.ndarray, top: int, clip: float) -> np.ndarray:
    """The autocorrelation of the first differences of ``values`` at lags 0 .. ``top + 1``,
    the differences clipped to ``clip`` times their median absolute value (all zeros when
    the differences do not vary). Compiled: it runs every few steps on hundreds of values."""
    d = np.diff(values)
    n = len(d)
    scale = np.median(np.abs(d))
    if scale > 0.0:  # outliers (a sensor's drop to zero) would dominate every lag
        lim = clip * scale
        for i in range(n):
            d[i] = min(max(d[i], -lim), lim)
    d -= d.mean()
    var = 0.0
    for i in range(n):
        var += d[i] * d[i]
    acf = np.zeros(top + 2)
    if var <= 0.0:
        return acf
    for lag in range(min(top + 2, n)):
        acc = 0.0
        for i in range(n - lag):
            acc += d[i] * d[i + lag]
        acf[lag] = acc / var
    return acf


def detect_season(values: np.ndarray, max_season: int = 48, threshold: float = ACF_THRESHOLD) -> int | None:
    """The season (in steps) of ``values``, or ``None`` when it shows none.

    The autocorrelation of the first differences (differencing removes a trend, which would
    otherwise correlate every lag), clipped to ``CLIP`` times their median absolute value, is computed for lags 2 .. ``max_season`` (and at most a
    half of the window, so that at least :data:`MIN_CYCLES` cycles are seen). The season is
    the lag of the highest autocorrelation if that value is a local peak above ``threshold``
    with a negative autocorrelation at some shorter lag;
    a multiple of a shorter lag whose peak is nearly as high (within 10%), and whose every
    multiple correlates above ``threshold`` too, yields the shorter.

    >>> t = np.arange(120)
    >>> detect_season(np.sin(2 * np.pi * t / 12) + 0.01 * t)
    12
    >>> detect_season(np.random.default_rng(0).normal(size=120)) is None
    True
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    changes = len(v) - 1
    top = min(int(max_season), int(changes / MIN_CYCLES))
    if top < 2 or changes < MIN_CHANGES:
        return None
    acf = _autocorrelation(v, top, CLIP)
    if acf[0] <= 0.0:  # the changes do not vary
        return None
    # A season's peak comes back after a trough: the autocorrelation falls below 0 between
    # lag 0 and it (a smooth series correlates at short lags without any season).
    peaks = [lag for lag in range(2, top + 1)
             if acf[lag] > threshold and acf[lag] >= acf[lag - 1] and acf[lag] >= acf[lag + 1]
             and acf[1:lag].min() < 0.0]
    if not peaks:
        return None
    best = max(peaks, key=lambda lag: acf[lag])
    for lag in peaks:  # a divisor of the best, nearly as strong and strong at all its multiples
        if (lag < best and best % lag == 0 and acf[lag] >= 0.9 * acf[best]
                and all(acf[j] > threshold for j in range(2 * lag, top + 1, lag))):
            return lag
    return best
