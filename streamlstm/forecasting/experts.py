"""The simple forecasters that the engine aggregates, each giving forecasts for h = 1..H.

Every expert reads one stream's recent values (``history``, oldest first, latest last) and
its own few running numbers; none of them allocates per event beyond its output row.

* last value: ``y_t`` for every horizon;
* seasonal naive: the value one season before the target time;
* simple exponential smoothing (a level): robust to noise around a stable mean;
* damped trend (Gardner's damped Holt): a level and a trend whose effect fades with ``h``;
* seasonal drift: the last value moved by an exponentially smoothed profile of the relative
  change at each phase of the season (multiplicative: seasonal swings that grow with the level);
* Holt-Winters (additive trend; multiplicative seasonal indices while the values are positive,
  additive otherwise; its trend rate lowered where its rates are not forecastable for the
  season, :func:`holt_winters_trend_rate`), and the same additive on the logs of a positive
  series (the engine's
  ``holt_winters_log``: a seasonal swing in proportion to the level, with errors relative to
  it), and the mean of the seasonal models (``seasonal_mean``: their errors differ, their
  mean errs less than either on seasonal series);
* autoregression by recursive least squares with forgetting (:func:`rls_update`), one direct
  model per horizon on the recent changes, the level and the exogenous features.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit

_jit = njit(cache=True, error_model="numpy", nogil=True)

SES_ALPHA = 0.3          # simple exponential smoothing rate
HOLT_ALPHA = 0.5         # damped trend: level rate
HOLT_BETA = 0.1          # damped trend: trend rate
HOLT_PHI = 0.9           # damped trend: damping per step ahead
PROFILE_RATE = 0.5       # seasonal drift: smoothing of each phase's relative change
DRIFT_LIMIT = 1.0        # seasonal drift: largest relative change per step
P_TRACE_LIMIT = 1e6      # RLS: no forgetting while the covariance's trace exceeds this (wind-up)


@_jit
def rls_update(P: np.ndarray, W: np.ndarray, Z: np.ndarray, targets: np.ndarray, active: np.ndarray,
               d: int, lam: float, clip: float) -> None:
    """Recursive least squares with forgetting ``lam`` for several models at once.

    Model ``j`` (``P[j]``: inverse Gram matrix, ``W[j]``: coefficients) learns ``targets[j]``
    from the first ``d`` features ``Z[j, :d]`` when ``active[j]``. Standard update:
    ``k = P z / (lam + z' P z)``, ``w += k (y - w' z)``, ``P = (P - k z' P) / lam``; the division
    by ``lam`` is skipped while the trace of ``P`` exceeds :data:`P_TRACE_LIMIT` (no wind-up
    when the features stop varying). ``P`` is kept symmetric. The error of model ``j`` is
    clipped to ``clip * sqrt(j + 1)`` (model j forecasts j + 1 steps ahead; an outlier pulls
    the coefficients no more than a large usual error).
    """
    Pz = np.empty(d)
    for j in range(P.shape[0]):
        if not active[j]:
            continue
        Pj = P[j]
        z = Z[j]
        w = W[j]
        denom = lam
        for a in range(d):
            s = 0.0
            for b in range(d):
                s += Pj[a, b] * z[b]
            Pz[a] = s
            denom += z[a] * s
        err = targets[j]
        for a in range(d):
            err -= w[a] * z[a]
        if not (denom > 0.0) or not math.isfinite(err):
            continue
        limit = clip * math.sqrt(j + 1.0)
        err = max(-limit, min(limit, err))
        trace = 0.0
        for a in range(d):
            ka = Pz[a] / denom
            w[a] += ka * err
            for b in range(a, d):
                v = Pj[a, b] - ka * Pz[b]
                Pj[a, b] = v
                Pj[b, a] = v
            trace += Pj[a, a]
        if trace < P_TRACE_LIMIT:
            inv = 1.0 / lam
            for a in range(d):
                for b in range(d):
                    Pj[a, b] *= inv


@_jit
def rls_predict(W: np.ndarray, z: np.ndarray, d: int, out: np.ndarray) -> None:
    """``out[j] = W[j, :d] . z[:d]`` for every model ``j`` (same features for all)."""
    for j in range(W.shape[0]):
        s = 0.0
        for a in range(d):
            s += W[j, a] * z[a]
        out[j] = s


def seasonal_naive(history: np.ndarray, n: int, season: int, horizon: int, out: np.ndarray) -> None:
    """``out[h-1] = y[t + h - season * ceil(h / season)]``: the value one (or more) seasons
    before each target time; the last value while fewer than ``season`` values are known.

    >>> out = np.empty(3)
    >>> seasonal_naive(np.array([1.0, 2.0, 3.0, 4.0]), 4, 2, 3, out); out.tolist()
    [3.0, 4.0, 3.0]
    """
    last = len(history) - 1
    if season < 2 or n < season:
        out[:horizon] = history[last]
        return
    for h in range(1, horizon + 1):
        back = season * ((h + season - 1) // season) - h  # steps before the latest value
        out[h - 1] = history[last - back]


def damped_trend(level: float, trend: float, horizon: int, out: np.ndarray, phi: float = HOLT_PHI) -> None:
    """``out[h-1] = level + (phi + phi^2 + ... + phi^h) * trend``.

    >>> out = np.empty(2)
    >>> damped_trend(10.0, 1.0, 2, out, phi=0.5); out.tolist()
    [10.5, 10.75]
    """
    acc = 0.0
    p = 1.0
    for h in range(horizon):
        p *= phi
        acc += p
        out[h] = level + acc * trend


def holt_update(level: float, trend: float, y: float, alpha: float = HOLT_ALPHA, beta: float = HOLT_BETA,
                phi: float = HOLT_PHI) -> tuple[float, float]:
    """One step of the damped Holt recursions; returns the new ``(level, trend)``.

    >>> holt_update(10.0, 0.0, 12.0, alpha=0.5, beta=0.5, phi=1.0)
    (11.0, 0.5)
    """
    new_level = alpha * y + (1.0 - alpha) * (level + phi * trend)
    new_trend = beta * (new_level - level) + (1.0 - beta) * phi * trend
    return new_level, new_trend


def seasonal_drift(last: float, profile: np.ndarray, known: np.ndarray, phase: int, horizon: int,
                   out: np.ndarray, relative: bool = True) -> None:
    """``out[h-1] = last * prod_{i<h} (1 + profile[phase + i])``: the last value carried along
    the season's smoothed relative changes (phases not learned yet count as no change).
    ``phase`` is the phase of the first step ahead. With ``relative=False`` the profile holds
    changes: ``out[h-1] = last + sum_{i<h} profile[phase + i]``.

    >>> out = np.empty(3)
    >>> seasonal_drift(100.0, np.array([0.1, -0.5]), np.array([True, True]), 0, 3, out); out.tolist()
    [110.00000000000001, 55.00000000000001, 60.500000000000014]
    """
    m = len(profile)
    v = last
    for h in range(horizon):
        p = (phase + h) % m
        if known[p]:
            v = v * (1.0 + profile[p]) if relative else v + profile[p]
        out[h] = v


@_jit
def seasonal_drift_update(profile: np.ndarray, known: np.ndarray, y: float, last: float, t: int,
                          relative: bool) -> None:
    """Learn the change from ``last`` to ``y`` (the value of index ``t``) at its phase
    ``t % len(profile)``: relative (at most a doubling: values near 0 would explode it) or,
    with ``relative=False``, absolute; the first change of a phase is taken as it is."""
    phase = t % len(profile)
    if relative:
        change = max(-DRIFT_LIMIT, min(DRIFT_LIMIT, (y - last) / last))
    else:
        change = y - last
    if known[phase]:
        profile[phase] += PROFILE_RATE * (change - profile[phase])
    else:
        profile[phase] = change
        known[phase] = True


@_jit
def seasonal_drift_run(profile: np.ndarray, known: np.ndarray, values: np.ndarray, t0: int, relative: bool) -> None:
    """:func:`seasonal_drift_update` over ``values`` (``values[0]`` has index ``t0``): the
    profile learned from a history, in one compiled call."""
    for i in range(1, len(values)):
        seasonal_drift_update(profile, known, values[i], values[i - 1], t0 + i, relative)


@_jit
def seasonal_median(history: np.ndarray, n: int, season: int, horizon: int, cycles: int, out: np.ndarray) -> None:
    """``out[h-1]`` = the median of the values at the target's phase over the last ``cycles``
    seasons (a robust seasonal profile: a drop or a spike in one cycle does not move it); the
    median of the recent values while fewer than one season is known or without a season.

    >>> out = np.empty(2)
    >>> seasonal_median(np.array([1.0, 10.0, 3.0, 20.0, 2.0, 30.0]), 6, 2, 2, 3, out); out.tolist()
    [2.0, 20.0]
    """
    size = len(history)
    avail = min(n, size)
    if season < 2 or avail < season:
        v = np.median(history[size - avail:])
        for h in range(horizon):
            out[h] = v
        return
    k = min(cycles, avail // season)
    start = size - k * season           # history index of the oldest value used
    first = n - k * season              # its absolute time
    col = np.empty(k)
    for h in range(1, horizon + 1):     # only the phases forecast (a season may be hundreds long)
        p = (n - 1 + h - first) % season
        for c in range(k):
            col[c] = history[start + c * season + p]
        out[h - 1] = np.median(col)


@_jit
def recent_median(history: np.ndarray, n: int, window: int) -> float:
    """The median of the last ``window`` values (a robust level).

    >>> recent_median(np.array([5.0, 1.0, 2.0, 100.0]), 4, 3)
    2.0
    """
    k = min(n, len(history), window)
    return np.median(history[len(history) - k:])


@_jit
def lag_changes(history: np.ndarray, n: int, k: int, scale: float, limit: float, log: bool,
                out: np.ndarray, offset: int) -> None:
    """``out[offset + i]`` = the change ``i`` steps back (``y[t-i] - y[t-i-1]``, of the logs
    with ``log``) divided by ``scale`` and clipped to +-``limit``, for i < k; 0 where the
    history is too short.

    >>> out = np.zeros(3)
    >>> lag_changes(np.array([1.0, 2.0, 4.0]), 3, 3, 1.0, 1.5, False, out, 0); out.tolist()
    [1.5, 1.0, 0.0]
    """
    size = len(history)
    avail = min(n, size) - 1
    for i in range(k):
        if i < avail:
            a, b = history[size - 1 - i], history[size - 2 - i]
            d = (math.log(a) - math.log(b)) if log else (a - b)
            d /= scale
            out[offset + i] = limit if d > limit else max(d, -limit)
        else:
            out[offset + i] = 0.0


HW_ALPHA = 0.3           # Holt-Winters: level rate
HW_BETA = 0.1            # Holt-Winters: trend rate (where forecastable: see holt_winters_trend_rate)
HW_GAMMA = 0.6           # Holt-Winters: seasonal rate
HW_PHI = 1.0             # Holt-Winters: trend damping
HW_CHECKED_SEASONS = 128 # longest season whose trend rate is checked exactly (see holt_winters_trend_rate)


@functools.lru_cache(maxsize=64)
def holt_winters_trend_rate(season: int) -> float:
    """The trend rate Holt-Winters uses with a season of ``season`` steps: :data:`HW_BETA`, or,
    where the rates ``(HW_ALPHA, HW_BETA, HW_GAMMA)`` are not forecastable for that season, the
    largest of ``HW_BETA / 2``, ``/ 4`` ... (0 at last) that is.

    Written as an innovations state-space model (``l += phi b + alpha e``, ``b = phi b + alpha
    beta e``, ``s += gamma e``), the one-step errors ``e`` drive the state through the discount
    matrix ``D = F - g w'``; forecastable means no eigenvalue of ``D`` outside the unit circle
    (Hyndman, Koehler, Ord & Snyder 2008, ch. 10; the seasonal indices' redundancy puts one on
    it). River's rates (0.3, 0.1, 0.6), chosen on a monthly series, are forecastable up to a
    season of 24 steps and not from 25 on (largest modulus 1.0021 at 48): on half-hourly data
    with a daily season (NAB's NYC taxi, season 48) both Holt-Winters experts diverged (their
    levels reached 1e6 and 1e3 times the data within a few thousand values). The trend rate is
    what does it: with it halved or less, or a smaller seasonal rate, the same.

    Beyond :data:`HW_CHECKED_SEASONS` steps the trend is not learned (rate 0: it keeps the
    first season's mean change; forecastable, checked up to 288). The exact check costs
    ``O(season^3)`` per halving (0.4 s at 288, 8 s at 1000: a stall in a stream), and the
    rates it finds fall like ``1 / season^2`` (0.0031 at 128, 0.0008 at 288): a trend that
    would hardly move anyway.

    >>> holt_winters_trend_rate(12) == HW_BETA, holt_winters_trend_rate(48) < HW_BETA
    (True, True)
    >>> holt_winters_trend_rate(2016)   # a week of 5-minute values
    0.0
    """
    m = int(season)
    if m > HW_CHECKED_SEASONS:
        return 0.0
    beta = HW_BETA
    for _ in range(12):
        if _forecastable(HW_ALPHA, beta, HW_GAMMA, HW_PHI, m):
            return beta
        beta /= 2.0
    return 0.0


def _forecastable(alpha: float, beta: float, gamma: float, phi: float, m: int) -> bool:
    """No eigenvalue of additive Holt-Winters' discount matrix outside the unit circle (state
    ``[level, trend, s_newest .. s_oldest]``; the oldest index is the one used now)."""
    n = 2 + m
    F = np.zeros((n, n))
    F[0, 0], F[0, 1], F[1, 1] = 1.0, phi, phi
    F[2, n - 1] = 1.0
    for k in range(2, n - 1):
        F[k + 1, k] = 1.0
    w = np.zeros(n)
    w[0], w[1], w[n - 1] = 1.0, phi, 1.0
    g = np.zeros(n)
    g[0], g[1], g[2] = alpha, alpha * beta, gamma
    return bool((np.abs(np.linalg.eigvals(F - np.outer(g, w))) <= 1.0 + 1e-9).all())


def holt_winters_init(history: np.ndarray, n: int, season: int, relative: bool) -> tuple[float, float, np.ndarray]:
    """Level, trend and seasonal indices from the last season of ``history`` (needs
    ``n >= season``): the level is its mean, the trend its mean change, and the index of
    phase ``p`` (absolute time mod season) the value's ratio to (or difference from) the mean.

    >>> level, trend, idx = holt_winters_init(np.array([1.0, 3.0, 3.0, 5.0]), 4, 2, False)
    >>> level, trend, idx.tolist()
    (4.0, 2.0, [-1.0, 1.0])
    """
    m = season
    cur = history[len(history) - m:]
    level = float(cur.mean())
    trend = float(np.diff(cur).mean()) if m > 1 else 0.0
    indices = np.empty(m)
    first = n - m
    for i in range(m):
        indices[(first + i) % m] = cur[i] / level if relative else cur[i] - level
    return level, trend, indices


@_jit
def holt_winters_update(state: np.ndarray, indices: np.ndarray, y: float, t: int, relative: bool,
                        trend_rate: float) -> None:
    """One step of damped additive-trend Holt-Winters with value ``y`` at time ``t``;
    ``state`` = [level, trend] is updated in place, as is ``indices[t % season]``;
    ``trend_rate``: :func:`holt_winters_trend_rate` of the season."""
    m = len(indices)
    p = t % m
    level, trend = state[0], state[1]
    s = indices[p]
    prior = level + HW_PHI * trend
    if relative:
        new_level = HW_ALPHA * (y / s if s != 0.0 else y) + (1.0 - HW_ALPHA) * prior
        indices[p] = HW_GAMMA * (y / prior if prior != 0.0 else s) + (1.0 - HW_GAMMA) * s
    else:
        new_level = HW_ALPHA * (y - s) + (1.0 - HW_ALPHA) * prior
        indices[p] = HW_GAMMA * (y - prior) + (1.0 - HW_GAMMA) * s
    state[1] = trend_rate * (new_level - level) + (1.0 - trend_rate) * HW_PHI * trend
    state[0] = new_level


@_jit
def holt_winters_run(state: np.ndarray, indices: np.ndarray, values: np.ndarray, t0: int, relative: bool,
                     trend_rate: float) -> None:
    """:func:`holt_winters_update` over ``values`` (``values[0]`` has index ``t0``)."""
    for i in range(len(values)):
        holt_winters_update(state, indices, values[i], t0 + i, relative, trend_rate)


@_jit
def holt_winters_forecast(state: np.ndarray, indices: np.ndarray, n: int, horizon: int, relative: bool,
                          out: np.ndarray) -> None:
    """``out[h-1] = (level + (phi + .. + phi^h) trend) * index`` (``+ index`` if not relative)
    for the time ``n - 1 + h``.

    >>> out = np.empty(2)
    >>> holt_winters_forecast(np.array([10.0, 0.0]), np.array([0.5, 2.0]), 4, 2, True, out); out.tolist()
    [5.0, 20.0]
    """
    m = len(indices)
    acc = 0.0
    p = 1.0
    for h in range(1, horizon + 1):
        p *= HW_PHI
        acc += p
        base = state[0] + acc * state[1]
        s = indices[(n - 1 + h) % m]
        out[h - 1] = base * s if relative else base + s


@_jit
def keep_in_range(out: np.ndarray, history: np.ndarray, count: int, spreads: float) -> None:
    """Clip, in place, every finite forecast of ``out`` to within ``spreads`` times the spread
    (max - min) or the magnitude (the larger) of the last ``count`` values of ``history``
    beyond their range (the magnitude: a window of equal values has no spread).

    A numerically diverged expert stays a bad expert instead of an astronomical one: a convex
    combination gives it a tiny weight, and a tiny weight times 1e260 is still 1e250 (the
    engine's forecasts on NAB's NYC taxi before Holt-Winters' rates were kept forecastable:
    one-step MAE 3e27 against the last value's 1267). ML-Poly's linearised regret, which
    rewards a forecast on the right side of the value however far, would keep weighing it too.

    >>> out = np.array([[1.0, 1e300, np.nan, -1e300]])
    >>> keep_in_range(out, np.array([0.0, 2.0, 1.0]), 3, 100.0); out.tolist()
    [[1.0, 202.0, nan, -200.0]]
    """
    n = history.shape[0]
    lo = np.inf
    hi = -np.inf
    for i in range(n - count, n):
        lo = min(lo, history[i])
        hi = max(hi, history[i])
    if not lo <= hi:
        return
    margin = spreads * max(hi - lo, abs(lo), abs(hi), 1e-300)
    low, high = lo - margin, hi + margin
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            v = out[i, j]
            if v < low:
                out[i, j] = low
            elif v > high:
                out[i, j] = high


@_jit
def mean_of_awake(out: np.ndarray, members: np.ndarray, at: int) -> None:
    """``out[:, at]`` = the mean of the columns ``members`` of ``out`` that are awake (finite at
    the first horizon), NaN when none is: the seasonal-mean expert.

    >>> out = np.array([[1.0, np.nan, 3.0, 0.0]])
    >>> mean_of_awake(out, np.array([0, 1, 2]), 3); out.tolist()
    [[1.0, nan, 3.0, 2.0]]
    """
    for h in range(out.shape[0]):
        total = 0.0
        awake = 0
        for e in members:
            if math.isfinite(out[0, e]):
                total += out[h, e]
                awake += 1
        out[h, at] = total / awake if awake else np.nan
