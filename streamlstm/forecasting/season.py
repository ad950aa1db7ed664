"""Online season detection: the autocorrelation of the recent first differences, and where it
sees none, a dip in how far apart the values one season apart are."""

from __future__ import annotations

import numpy as np
from numba import njit

MIN_CYCLES = 1.5       # a season is looked for only in a window holding this many cycles of it
MIN_CHANGES = 20       # fewer changes than this show no season (too noisy an autocorrelation)
CLIP = 5.0              # differences are clipped to this many times their median size
ACF_THRESHOLD = 0.3     # the autocorrelation at the season's lag must exceed this
LEVEL_DIP = 0.15        # level season: values a season apart differ by at most this share of the most ...
LEVEL_HALF = 0.8        # ... values half a season apart differ by at least this share of it ...
LEVEL_CYCLES = 2        # ... and the window holds this many seasons (see level_season)
LEVEL_KEEP = 1.05       # the season in use stays while its D is within 5% of the dip's least


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


@njit(cache=True, error_model="numpy", nogil=True)
def _madogram(values: np.ndarray, top: int) -> np.ndarray:
    """The mean absolute difference of ``values`` at lags 0 .. ``top`` (0 where the window
    is too short)."""
    n = len(values)
    md = np.zeros(top + 1)
    for lag in range(1, min(top + 1, n)):
        acc = 0.0
        for i in range(lag, n):
            acc += abs(values[i] - values[i - lag])
        md[lag] = acc / (n - lag)
    return md


@njit(cache=True, error_model="numpy", nogil=True)
def level_season(values: np.ndarray, max_season: int, current: int = 0) -> int:
    """The season (in steps) that the values' levels show, 0 for none: the lag ``m`` at the
    bottom of the first deep dip of the mean absolute difference ``D(k) = mean |y_t - y_(t-k)|``.

    A season whose changes come in a few steps per cycle (a daily on/off, a square wave) is
    nearly invisible to the autocorrelation of the changes (two clipped jumps a day among
    hundreds of noisy changes), while the values themselves repeat: ``D(m)`` is the noise
    alone and ``D(m/2)`` the whole swing. Accepted when ``D(m) <= LEVEL_DIP`` times the
    largest ``D`` at shorter lags, ``D(m/2)`` is at least ``LEVEL_HALF`` of it (a cycle, not the
    wobble of a trend), the bottom of the dip is seen (the dip ends before the lags looked at
    do) and the window holds ``LEVEL_CYCLES`` seasons. A random walk's ``D`` only grows, noise's
    is flat: neither dips. The season in use (``current``) stays while it lies in the dip
    with a ``D`` within ``LEVEL_KEEP`` of the least: where the bottom is flat (a smooth cycle)
    noise moves it by a step or two, and the season is not changed for that; where it is
    sharp (a square wave: each step off adds a jump's share, 4% of ``D`` per step at 288),
    a first estimate a step off is corrected.

    >>> t = np.arange(600)
    >>> level_season(np.where(t % 96 < 40, 10.0, 60.0) + np.sin(t), 288)
    96
    """
    n = len(values)
    room = min(n - 2, max_season + max_season // 8 + 2)   # past max_season: the dip's far side
    if room < 3:
        return 0
    md = _madogram(values, room)
    high = 0.0
    for lag in range(2, room + 1):
        high = max(high, md[lag - 1])
        if high > 0.0 and md[lag] <= LEVEL_DIP * high:
            end = lag
            while end + 1 <= room and md[end + 1] <= LEVEL_DIP * high:
                end += 1
            if end == room:
                return 0   # no bottom seen
            if lag > max_season:
                return 0
            best = lag   # the least D of the dip up to max_season (noise may put its bottom a step past)
            for j in range(lag, min(end, max_season) + 1):
                if md[j] < md[best]:
                    best = j
            if lag <= current <= end and md[current] <= LEVEL_KEEP * md[best]:
                best = current
            peak = 0.0
            for j in range(1, best):
                peak = max(peak, md[j])
            if 2 < best <= max_season and md[best // 2] >= LEVEL_HALF * peak and n >= LEVEL_CYCLES * best:
                return best
            return 0
    return 0


def detect_season(values: np.ndarray, max_season: int = 48, threshold: float = ACF_THRESHOLD, current: int = 0
                  ) -> int | None:
    """The season (in steps) of ``values``, or ``None`` when it shows none.

    The autocorrelation of the first differences (differencing removes a trend, which would
    otherwise correlate every lag), clipped to ``CLIP`` times their median absolute value, is computed for lags 2 .. ``max_season`` (and at most a
    half of the window, so that at least :data:`MIN_CYCLES` cycles are seen). The season is
    the lag of the highest autocorrelation if that value is a local peak above ``threshold``
    with a negative autocorrelation at some shorter lag;
    a multiple of a shorter lag whose peak is nearly as high (within 10%), and whose every
    multiple correlates above ``threshold`` too, yields the shorter. Where the changes show
    none, the levels may (:func:`level_season`: a square wave's jumps are too few to correlate;
    the season in use, ``current``, stays while it lies in their dip).

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
    found = _change_season(acf, top, threshold)
    if found is None:
        found = level_season(v, int(max_season), int(current)) or None
    return found


def _change_season(acf: np.ndarray, top: int, threshold: float) -> int | None:
    """The season the autocorrelation ``acf`` of the changes shows (see :func:`detect_season`)."""
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
