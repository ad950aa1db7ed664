"""Numba kernels of the online calibrator (`calibration.py`) and the anomaly score (`anomaly.py`).

One *tracker row* calibrates one stream of scores (a residual, or any non-negative statistic).
It is a float64 vector laid out as::

    [ n | scale | lo_0 .. lo_{J-1} | hi_0 .. hi_{J-1} | tail_0 .. tail_{G-1} | ilo_0 .. ilo_{J-1} | ihi_0 .. ihi_{J-1}
      | s_0 .. s_{K-1} | L_0 .. L_{K-1} ]

* ``n`` counts the scores seen, ``scale`` is their running mean absolute value, each score
  clipped to ``clip`` scales: the trackers work on the studentised score ``z = r / scale``,
  in the stream's own units whatever its scale. With ``K = 0`` scale rates it is one
  exponential mean with rate ``max(decay, 1/n)``; with ``K`` rates ``rate_k`` it is the
  posterior-weighted geometric mean of ``K`` such means ``s_k`` (rates ``max(rate_k, 1/n)``),
  each weighed by ``exp(-L_k)``, ``L_k`` its cumulated negative log-likelihood of the
  clipped scores under a Laplace law of scale ``s_k`` (``log s_k + |r| / s_k``): the
  forgetting rate the residuals themselves favour (see ``step_scale``);
* ``lo_j`` / ``hi_j`` track the ``a_j/2`` and ``1 - a_j/2`` quantiles of the signed score
  (``a_j = 1 - level_j``) by quantile tracking (online subgradient steps on the pinball loss,
  the "P" part of conformal PID control): ``hi += eta * (1[r > hi] - a_j/2)``;
* ``tail_k`` tracks the ``1 - g_k`` quantile of ``|r|`` for a fixed grid of tail
  probabilities ``g_k``, by the same steps on ``log |z|`` (``tail_lr > 0``: multiplicative
  steps) or on ``|z|`` (``tail_lr = 0``: steps of ``lr``); the p-value of a new score
  interpolates ``log g`` between them;
* ``ilo_j`` / ``ihi_j`` integrate the coverage errors of the issued bounds,
  ``sum(miss - a_j/2)`` (the "I" part of conformal PID control); the issued bound is the
  tracker plus the saturating integral term ``gain * tan(clamp(I log(n+2) / (csat (n+2))))``,
  and both the tracker and the integral are driven by the misses of that issued bound.

The parameter vector ``P`` is ``[lr, decay, J, G, clip, pooled, gain, csat, limit, band, prior, clip_tail, K, tail_lr,
a_0 .. a_{J-1}, g_0 .. g_{G-1}, start, rate_0 .. rate_{K-1}]``, ``start`` holding the ``2J + G``
tracker values a new row starts from (the integrals start at 0).
State of many keys and horizon steps is one 3-D array ``S[key, step, :]``.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import jit as _jit

# row fields
F_N, F_SCALE, F_TRACK = 0, 1, 2
# parameter fields
P_LR, P_DECAY, P_J, P_G, P_CLIP, P_POOL, P_GAIN, P_CSAT, P_LIMIT, P_BAND, P_PRIOR, P_CLIP_TAIL = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11
P_SCALES, P_TAIL_LR, P_LEVELS = 12, 13, 14
# the least a tail tracker falls to in log steps (in scales): a stream of exact forecasts
# pulls its trackers down geometrically, and they must still climb back in a few dozen steps
TAIL_FLOOR = 1e-6
# smallest p-value reported: keeps -log10(p) finite (the score saturates long before)
P_FLOOR = 1e-300
# "no issued misses given": the trackers compare the score with their own current bounds
NO_MISSES = np.full(1, np.nan)


@_jit
def row_width(J, G, K):
    """Floats of one tracker row with ``J`` interval levels, ``G`` tail levels and ``K``
    candidate scale rates."""
    return F_TRACK + 4 * J + G + 2 * K


@_jit
def candidates_offset(P):
    """Index of the first candidate scale ``s_0`` in a row (their evidences ``L_k`` follow)."""
    return F_TRACK + 4 * int(P[P_J]) + int(P[P_G])


@_jit
def rates_offset(P):
    """Index of the first candidate scale rate in ``P`` (after the levels, grid and start values)."""
    return P_LEVELS + 3 * int(P[P_J]) + 2 * int(P[P_G])


@_jit
def integral_term(integral, n, P, q):
    """The saturating integral term of conformal PID control for the accumulated coverage
    error ``integral`` of a bound missed with target rate ``q`` after ``n`` scores:
    ``gain * tan(e * log(n+2) / (csat * (n+2)))``, the tangent's argument clamped to
    ``+-limit`` (finite bounds), where ``e`` is the part of the error beyond its dead band
    ``band * sqrt(n q (1 - q))``: ``band`` binomial standard deviations, the error a bound of
    exact coverage accumulates by chance, which moves nothing."""
    if P[P_GAIN] == 0.0 or integral == 0.0:
        return 0.0
    if P[P_BAND] > 0.0:
        chance = P[P_BAND] * math.sqrt(n * q * (1.0 - q))
        if integral > chance:
            integral -= chance
        elif integral < -chance:
            integral += chance
        else:
            return 0.0
    x = integral * math.log(n + 2.0) / (P[P_CSAT] * (n + 2.0))
    limit = P[P_LIMIT]
    if x > limit:
        x = limit
    elif x < -limit:
        x = -limit
    return P[P_GAIN] * math.tan(x)


@_jit
def own_bound(trow, P, j, side):
    """Level ``j``'s own bound in scale units, lower (``side = -1``) or upper (``+1``): its
    tracker pushed outwards (or inwards, by at most half its distance from the forecast) by
    the integral term of its coverage errors."""
    J = int(P[P_J])
    shift = J if side > 0.0 else 0
    i = F_TRACK + 2 * J + int(P[P_G]) + shift + j
    outward = side * trow[F_TRACK + shift + j]   # the tracker's distance outwards from the forecast
    term = integral_term(trow[i], trow[F_N], P, 0.5 * P[P_LEVELS + j])
    if term < 0.0:
        # an over-covering side narrows, by at most half its tracker's distance from the
        # forecast (none if its tracker is across it): the interval keeps its point forecast
        # strictly inside
        return side * max(outward + term, min(outward, 0.5 * outward))
    return side * (outward + term)


@_jit
def issued_bound(trow, P, j, side):
    """The bound of level ``j`` as issued: the outermost own bound of the levels up to ``j``'s
    (the intervals are nested: a higher level is never narrower than a lower one)."""
    a = P[P_LEVELS + j]
    out = own_bound(trow, P, j, side)
    for k in range(int(P[P_J])):
        if k != j and P[P_LEVELS + k] >= a:
            v = own_bound(trow, P, k, side)
            if side * v > side * out:
                out = v
    return out


@_jit
def lower_offset(trow, P, j):
    """The issued lower bound of level ``j`` in scale units."""
    return issued_bound(trow, P, j, -1.0)


@_jit
def upper_offset(trow, P, j):
    """The issued upper bound of level ``j`` in scale units."""
    return issued_bound(trow, P, j, 1.0)


@_jit
def tail_p_value(row, P, a):
    """Tail probability of ``|r| = a`` under the tracked quantiles of ``|r|`` (pure)."""
    J = int(P[P_J])
    G = int(P[P_G])
    g0 = P[P_LEVELS + J]
    t_off = F_TRACK + 2 * J
    if row[F_N] == 0.0:
        return 1.0
    # the trackers are not forced to be ordered; a running maximum makes the curve monotone
    t_prev = max(row[t_off], 0.0)
    if a <= t_prev:
        if t_prev <= 0.0:
            return 1.0
        return 1.0 - (1.0 - g0) * a / t_prev
    g_prev = g0
    first = max(G - 3, 0)
    t_first = t_prev
    for k in range(1, G):
        g_k = P[P_LEVELS + J + k]
        t_k = max(row[t_off + k], t_prev)
        if a <= t_k:
            # t_prev < a <= t_k, so t_k > t_prev
            w = (a - t_prev) / (t_k - t_prev)
            return math.exp((1.0 - w) * math.log(g_prev) + w * math.log(g_k))
        if k == first:
            t_first = t_k
        t_prev = t_k
        g_prev = g_k
    # beyond the last tracker: an exponential tail whose rate is that of the last decade
    # of the (monotone) curve (its spread per unit of log-probability); nothing seen yet
    # beyond it with a flat tracked tail means the value lies outside everything seen
    g_first = P[P_LEVELS + J + first]
    spread = (t_prev - t_first) / math.log(g_first / g_prev) if g_first > g_prev else 0.0
    if spread <= 0.0:
        spread = 1.0  # a tail with no spread yet: decay by e per scale unit
    return max(g_prev * math.exp(-(a - t_prev) / spread), P_FLOOR)


@_jit
def key_scale(krow, trow, P):
    """The scale a key's scores are measured in: its own running scale, or with pooled
    trackers (``trow`` the pool row) its own shrunk towards the pool's running scale of all
    keys' scores, the pool weighing as ``prior`` scores of the key's own: a key's first few
    residuals say little of its scale (chick weights: 1.3-1.5x the width of one scale for all)."""
    own = krow[F_SCALE]
    if P[P_PRIOR] == 0.0 or P[P_POOL] == 0.0 or trow[F_SCALE] <= 0.0 or own <= 0.0:
        return own
    return own + P[P_PRIOR] / (krow[F_N] + P[P_PRIOR]) * (trow[F_SCALE] - own)


@_jit
def normalised(row, r):
    """The score ``r`` in units of the running scale seen before it (a studentised residual)."""
    return normalised_by(row[F_SCALE], r)


@_jit
def normalised_by(scale, r):
    """The score ``r`` in units of ``scale`` (0: exact so far)."""
    if scale > 0.0:
        return r / scale
    if r == 0.0:
        return 0.0
    return math.copysign(1e300, r)  # exact so far, now off: as far out as a float goes


@_jit
def update_row(row, P, r):
    """Fold the score ``r`` into a row holding its own trackers (see ``update_rows``)."""
    update_rows(row, row, P, r, False, NO_MISSES, True, P[P_TAIL_LR])


@_jit
def update_row_tails(row, P, r, tail_lr):
    """``update_row`` of a row whose interval trackers are never read (only its p-values):
    its level trackers and integrals are left alone (the anomaly scorer's window and flat
    channels; half the per-event cost of the levels); its tail trackers take log steps of
    ``tail_lr`` (0: steps of ``lr``)."""
    update_rows(row, row, P, r, False, NO_MISSES, False, tail_lr)


@_jit
def update_rows(krow, trow, P, r, pooled, misses, levels, tail_lr):
    """Fold the score ``r`` of a key (row ``krow``: count and scale) into the trackers of
    ``trow`` (the key's own row, or the pool row shared by all keys when ``pooled``).

    The quantile trackers work on the studentised score ``z = r / scale`` (the key's scale
    from before ``r``): a change of volatility moves the intervals through the scale at once,
    and the trackers only correct the shape. ``misses`` (``2J`` values, 1 or 0: the lower
    then upper bounds of each level, then the delay) says whether the value fell outside
    the bounds *as they were issued*, when they were issued earlier than now (a panel's key
    is bounded, then the other keys move the shared trackers before its value arrives), and
    how many tracker steps ago (>= 1); NaN first: compare with the current bounds.
    """
    J = int(P[P_J])
    G = int(P[P_G])
    n = krow[F_N]
    m = trow[F_N] if pooled else n
    if m == 0.0:
        # start from the quantiles of a Gaussian residual (in mean-absolute units), not 0
        for i in range(2 * J + G):
            trow[F_TRACK + i] = P[P_LEVELS + J + G + i]
    if krow[F_SCALE] > 0.0 or r == 0.0:
        step_trackers(trow, P, normalised_by(key_scale(krow, trow, P), r), m, misses, levels, tail_lr)
    # else: no scale yet to studentise ``r`` with; it only sets the scale
    clip = clip_limit(trow, P)
    if pooled:
        trow[F_N] = m + 1.0
        step_scale(trow, P, r, m, clip)
    krow[F_N] = n + 1.0
    step_scale(krow, P, r, n, clip)


@_jit
def clip_limit(trow, P):
    """How many scales a residual counts at most in the running scale: ``clip``, or the
    trackers' ``|z|`` quantile at the tail probability ``P_CLIP_TAIL`` points to (about 1%)
    when that is further out (0: no clipping).

    A fixed multiple alone has no equilibrium on a stream whose errors are mostly (near) zero
    with spikes a few times in a hundred: a spike is then more than ``clip`` scales, counts
    as ``clip`` scales, and the scale shrinks by the zeros faster than the clipped spikes lift
    it, to nothing (a load balancer's spikes: 0.86 covered at 0.95). Spikes that frequent
    make the tail they are in; only those beyond it are clipped."""
    clip = P[P_CLIP]
    if clip <= 0.0:
        return 0.0
    tail = int(P[P_CLIP_TAIL])
    if tail >= 0 and trow[F_N] > 0.0:
        clip = max(clip, trow[F_TRACK + 2 * int(P[P_J]) + tail])
    return clip


@_jit
def step_scale(row, P, r, n, clip):
    """Fold ``|r|`` into the row's robust running scale (``n`` scores before it): a residual
    counts at most ``clip`` scales, so one spike does not widen the intervals for the next
    1/rate events, while a lasting rise still lifts it geometrically (by up to
    (clip - 1) * rate per event).

    With ``K`` candidate rates, each candidate mean ``s_k`` first adds to its evidence
    ``L_k`` the negative log-likelihood ``log s_k + a / s_k`` of the clipped score ``a``
    under a Laplace law of scale ``s_k`` (the scale it had forecast), then learns ``a``; the
    row's scale is ``exp(sum_k w_k log s_k / sum_k w_k)`` with ``w_k = exp(-L_k)``: Bayes'
    posterior over the rates, averaged in log scale. A stream whose volatility comes in
    bursts (a recession in quarterly data) favours a fast rate, a steady one a slow rate
    (whose intervals are steadier, hence narrower at the same coverage)."""
    K = int(P[P_SCALES])
    if K == 0:
        a = abs(r) if row[F_SCALE] <= 0.0 or clip <= 0.0 else min(abs(r), clip * row[F_SCALE])
        row[F_SCALE] += max(P[P_DECAY], 1.0 / (n + 1.0)) * (a - row[F_SCALE])
        return
    c = candidates_offset(P)
    q = rates_offset(P)
    x = abs(r)
    low = math.inf   # the least evidence of a candidate with a scale
    for k in range(K):
        s = row[c + k]
        a = x if s <= 0.0 or clip <= 0.0 else min(x, clip * s)
        if s > 0.0:
            row[c + K + k] += math.log(s) + a / s
        s += max(P[q + k], 1.0 / (n + 1.0)) * (a - s)
        row[c + k] = s
        if s > 0.0:
            low = min(low, row[c + K + k])
    total = 0.0
    acc = 0.0
    for k in range(K):
        s = row[c + k]
        if s > 0.0:
            w = math.exp(low - row[c + K + k])
            total += w
            acc += w * math.log(s)
    row[F_SCALE] = math.exp(acc / total) if total > 0.0 else 0.0


@_jit
def step_trackers(row, P, z, n, misses, levels, tail_lr):
    """One quantile-tracking step of every tracker of the row on the studentised score ``z``
    (``misses``: see ``update_rows``; ``levels`` False: the tail trackers only; ``tail_lr``:
    see ``OnlineCalibrator``)."""
    J = int(P[P_J])
    G = int(P[P_G])
    a = abs(z)
    # stochastic-approximation steps 1/sqrt(n) while they exceed lr, then lr for good
    eta = max(P[P_LR], 1.0 / math.sqrt(n + 1.0))
    if levels and J:
        # with bounds issued ``delay`` tracker steps before this score (a panel's other keys
        # stepped in between), each level step is divided by the delay: the trackers then
        # move about lr per round of the keys, not per key, and do not overshoot on feedback
        # that comes late
        given = not math.isnan(misses[0])
        eta_levels = eta / misses[2 * J] if given else eta
        # the misses of the bounds as issued (nested over the levels: all of them before any
        # tracker moves), as bits: lower bound of level j at bit 2j, upper at 2j + 1
        bits = 0
        for j in range(J):
            if given:
                miss_lo, miss_hi = misses[j] != 0.0, misses[J + j] != 0.0
            else:
                miss_lo, miss_hi = z < lower_offset(row, P, j), z > upper_offset(row, P, j)
            bits |= (1 if miss_lo else 0) << (2 * j)
            bits |= (1 if miss_hi else 0) << (2 * j + 1)
        i_off = F_TRACK + 2 * J + G
        for j in range(J):
            half = 0.5 * P[P_LEVELS + j]
            miss_lo = ((bits >> (2 * j)) & 1) - half
            miss_hi = ((bits >> (2 * j + 1)) & 1) - half
            row[F_TRACK + j] -= eta_levels * miss_lo
            row[F_TRACK + J + j] += eta_levels * miss_hi
            row[i_off + j] += miss_lo
            row[i_off + J + j] += miss_hi
    t_off = F_TRACK + 2 * J
    for k in range(G):
        g = P[P_LEVELS + J + k]
        step = (1.0 if a > row[t_off + k] else 0.0) - g
        if tail_lr > 0.0:
            # quantile tracking of log |z|: steps in proportion to the quantile, so a tail of
            # spikes 30 scales out is learned in a few dozen of them, not hundreds
            row[t_off + k] = max(row[t_off + k], TAIL_FLOOR) * math.exp(tail_lr * step)
        else:
            row[t_off + k] += eta * step


@_jit
def key_p_value(krow, trow, P, r):
    """p-value of a key's residual ``r``: 1 for a key's first residual (nothing known yet)."""
    if krow[F_N] == 0.0:
        return 1.0
    return tail_p_value(trow, P, abs(normalised_by(key_scale(krow, trow, P), r)))


@_jit
def observe(S, P, key, residuals, p_out):
    """For each horizon step with a finite residual: its p-value into ``p_out``, then the update.

    Steps whose residual is NaN (not known yet) are left alone and get ``p_out = NaN``. With
    ``P[P_POOL]`` set, the last row of ``S`` holds trackers shared by every key.
    """
    pooled = P[P_POOL] != 0.0
    pool = S.shape[0] - 1
    for s in range(residuals.shape[0]):
        r = residuals[s]
        if math.isnan(r):
            p_out[s] = np.nan
            continue
        trow = S[pool, s] if pooled else S[key, s]
        p_out[s] = key_p_value(S[key, s], trow, P, r)
        update_rows(S[key, s], trow, P, r, pooled, NO_MISSES, True, P[P_TAIL_LR])


@_jit
def observe_issued(S, P, key, residuals, misses):
    """``observe`` (no p-values) of residuals whose bounds were issued earlier: ``misses[s]``
    holds step ``s``'s ``2J`` miss indicators of the bounds as issued and the delay (see
    ``update_rows``; NaN first: none recorded, compare with the current bounds)."""
    pooled = P[P_POOL] != 0.0
    pool = S.shape[0] - 1
    for s in range(residuals.shape[0]):
        r = residuals[s]
        if not math.isnan(r):
            update_rows(S[key, s], S[pool, s] if pooled else S[key, s], P, r, pooled, misses[s], True, P[P_TAIL_LR])


@_jit
def observe_many(S, P, keys, R, p_out):
    """``observe`` for a block of events ``(keys[e], R[e])`` in arrival order."""
    for e in range(keys.shape[0]):
        observe(S, P, keys[e], R[e], p_out[e])


@_jit
def intervals(S, P, key, y_hat, lo_out, hi_out):
    """Bounds ``y_hat[s] + scale * lo/hi`` of every horizon step ``s`` and level ``j``."""
    J = int(P[P_J])
    pool = S.shape[0] - 1 if P[P_POOL] != 0.0 else key
    for s in range(y_hat.shape[0]):
        trow = S[pool, s]
        scale = key_scale(S[key, s], trow, P)
        for j in range(J):
            lo_out[s, j] = y_hat[s] + lower_offset(trow, P, j) * scale
            hi_out[s, j] = y_hat[s] + upper_offset(trow, P, j) * scale


@_jit
def interval_one(S, P, key, y_hat):
    """``intervals`` of horizon step 0 for one float forecast: a new ``(2, J)`` array of
    lower and upper bounds (one compiled call, no Python-side checks: the fast path)."""
    J = int(P[P_J])
    out = np.empty((2, J))
    trow = S[S.shape[0] - 1, 0] if P[P_POOL] != 0.0 else S[key, 0]
    scale = key_scale(S[key, 0], trow, P)
    for j in range(J):
        out[0, j] = y_hat + lower_offset(trow, P, j) * scale
        out[1, j] = y_hat + upper_offset(trow, P, j) * scale
    return out


@_jit
def bounds_one(S, P, key, y_hat, j):
    """Lower and upper bound of level ``j`` around one float forecast (horizon step 0)."""
    trow = S[S.shape[0] - 1, 0] if P[P_POOL] != 0.0 else S[key, 0]
    scale = key_scale(S[key, 0], trow, P)
    return y_hat + lower_offset(trow, P, j) * scale, y_hat + upper_offset(trow, P, j) * scale


@_jit
def observe_one(S, P, key, r):
    """``observe`` of horizon step 0 for one float residual; returns its p-value."""
    krow = S[key, 0]
    trow = S[S.shape[0] - 1, 0] if P[P_POOL] != 0.0 else krow
    p = key_p_value(krow, trow, P, r)
    update_rows(krow, trow, P, r, P[P_POOL] != 0.0, NO_MISSES, True, P[P_TAIL_LR])
    return p


@_jit
def p_values(S, P, key, residuals, p_out):
    """Pure p-values of ``residuals`` per horizon step (NaN where the residual is NaN)."""
    pool = S.shape[0] - 1 if P[P_POOL] != 0.0 else key
    for s in range(residuals.shape[0]):
        r = residuals[s]
        p_out[s] = np.nan if math.isnan(r) else key_p_value(S[key, s], S[pool, s], P, r)


# ---------------------------------------------------------------- anomaly score
# The anomaly scorer's state is a calibrator state with four channels per key: three tracker
# rows (residual, flat line, recent window) and a row of the scorer's own fields; its
# parameters follow the calibrator's in one vector (two arrays per call: dispatch is cheap).
C_RESIDUAL, C_FLAT, C_WINDOW, C_FIELDS = 0, 1, 2, 3
# fields of the C_FIELDS row
A_PREV_Y, A_LONG, A_SURPRISE, A_N, A_PEAK, A_AGE, A_RUN, A_NONZERO = 0, 1, 2, 3, 4, 5, 6, 7
A_WIDTH = 8
# scorer parameters, after the calibrator's: [long rate, window rate, decades, flags, hold-off, warm-up]
Q_LONG, Q_WINDOW, Q_DECADES, Q_USE_FLAT, Q_USE_WINDOW, Q_HOLDOFF, Q_WARMUP = 0, 1, 2, 3, 4, 5, 6


@_jit
def scorer_offset(P):
    """Index of the scorer's first parameter in ``P`` (after the levels, grid, start values
    and candidate scale rates)."""
    return rates_offset(P) + int(P[P_SCALES])


@_jit
def anomaly_step(S, P, key, y, y_hat):
    """Score the value ``y`` whose one-step forecast was ``y_hat``; returns the score in [0, 1].

    Calibrated p-values, each against its own tracked history:

    * the residual ``y - y_hat`` (two-sided, through ``|r|``);
    * the recent window: an exponential average of the residual surprisals ``-ln p``, so
      several moderately unusual values in a row add up (as Numenta's anomaly likelihood
      averages recent raw scores);
    * flat line: the length of the current run of unchanged values in a stream that has
      varied (its long-run mean absolute change is positive).

    Their minimum, Bonferroni-corrected, is mapped to the evidence ``-log10(p) / decades``
    clipped to [0, 1]; it is 0 until ``warm-up`` non-zero residuals of the key were seen. With a hold-off ``R > 0`` an incident is reported once: the score is the
    evidence when it exceeds the peak of the last ``R`` events (the peak is forgotten ``R``
    events after it was set, so a lasting incident is reported again every ``R`` events), else 0.
    """
    q = scorer_offset(P)
    row = S[key, C_FIELDS]
    n = row[A_N]
    informed = row[A_NONZERO]   # residuals that measured the scale (a zero one says nothing of it)
    if y != y_hat:
        row[A_NONZERO] = informed + 1.0
    p = tail_p_value(S[key, C_RESIDUAL], P, abs(normalised(S[key, C_RESIDUAL], y - y_hat)))
    update_row(S[key, C_RESIDUAL], P, y - y_hat)
    channels = 1.0
    best = p
    if P[q + Q_USE_WINDOW] != 0.0:
        surprise = -math.log(max(p, P_FLOOR))
        row[A_SURPRISE] += P[q + Q_WINDOW] * (surprise - row[A_SURPRISE])
        # the residual p-values of the warm-up are guesses (a scale from a residual or two):
        # their surprisals do not teach the window channel. Learned from the first ones, its
        # scale could start near 0 (a first residual's p-value is 1, the next ones' near 1)
        # and, clipped at ``clip`` scales, not catch up for dozens of events, calling the
        # first ordinary averages after the warm-up extreme
        if informed >= P[q + Q_WARMUP]:
            pw = tail_p_value(S[key, C_WINDOW], P, abs(normalised(S[key, C_WINDOW], row[A_SURPRISE])))
            update_row_tails(S[key, C_WINDOW], P, row[A_SURPRISE], P[P_TAIL_LR])
            channels += 1.0
            best = min(best, pw)
    if n > 0.0:
        change = abs(y - row[A_PREV_Y])
        row[A_LONG] += max(P[q + Q_LONG], 1.0 / n) * (change - row[A_LONG])
        # a run of events without change, in a stream that has varied: its length is
        # calibrated in its own units (scale pinned to 1), so a stream that never repeated
        # a value finds a run of k repeats about e**-k times as likely as its rarest tracked run
        if change <= 1e-9 * row[A_LONG] and row[A_LONG] > 0.0:
            row[A_RUN] += 1.0
        else:
            row[A_RUN] = 0.0
        if P[q + Q_USE_FLAT] != 0.0:
            flat_row = S[key, C_FLAT]
            flat_row[F_SCALE] = 1.0
            pf = tail_p_value(flat_row, P, row[A_RUN])
            # a run's length counts in events, however long: steps of lr, never log steps
            # (they would follow a frozen sensor's run up and call it ordinary within ~30 events)
            update_row_tails(flat_row, P, row[A_RUN], 0.0)
            flat_row[F_SCALE] = 1.0
            channels += 1.0
            best = min(best, pf)
    row[A_PREV_Y] = y
    row[A_N] = n + 1.0
    combined = min(1.0, channels * best)
    evidence = min(1.0, -math.log10(max(combined, P_FLOOR)) / P[q + Q_DECADES])
    if informed < P[q + Q_WARMUP]:
        # a scale set by fewer non-zero residuals than this is a guess (the second value's
        # residual against the first alone; the first change of a stream that started flat
        # against none): learn, but claim no evidence yet
        return 0.0
    if P[q + Q_HOLDOFF] <= 0.0:
        return evidence
    row[A_AGE] += 1.0
    if row[A_AGE] > P[q + Q_HOLDOFF]:
        row[A_PEAK] = 0.0
    if evidence > row[A_PEAK]:
        row[A_PEAK] = evidence
        row[A_AGE] = 0.0
        return evidence
    return 0.0


@_jit
def score_and_bounds(S, P, key, y, y_hat, y_hat_next, j):
    """``anomaly_step`` of ``(y, y_hat)``, then the bounds of level ``j`` around the next
    forecast from the residual channel's trackers: ``(score, lower, upper)`` in one call."""
    score = anomaly_step(S, P, key, y, y_hat)
    row = S[key, C_RESIDUAL]
    return score, y_hat_next + lower_offset(row, P, j) * row[F_SCALE], y_hat_next + upper_offset(row, P, j) * row[F_SCALE]


@_jit
def anomaly_many(S, P, keys, Y, Y_hat, out):
    """``anomaly_step`` for a block of events in arrival order."""
    for e in range(keys.shape[0]):
        out[e] = anomaly_step(S, P, keys[e], Y[e], Y_hat[e])
