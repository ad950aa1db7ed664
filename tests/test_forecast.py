"""The forecasting engine: each expert against an independent NumPy reference, the aggregation,
season detection, persistence (bit-identical resume), short series and bad input."""

from __future__ import annotations

import doctest
import importlib
import math
from pathlib import Path

import numpy as np
import pytest

from streamlstm import Forecaster, persistence
from streamlstm.forecasting import experts as E
from streamlstm.forecasting.aggregation import Aggregator, _update
from streamlstm.forecasting.season import detect_season

SUBMODULES = ["streamlstm.forecasting", "streamlstm.forecasting.engine", "streamlstm.forecasting.experts",
              "streamlstm.forecasting.aggregation", "streamlstm.forecasting.season",
              "streamlstm.forecasting.lstm_expert"]


@pytest.mark.parametrize("name", SUBMODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# ------------------------------------------------------------------ experts vs references
def test_seasonal_naive_matches_definition():
    rng = np.random.default_rng(0)
    y = rng.normal(size=30)
    for m in (2, 5, 7):
        out = np.empty(11)
        E.seasonal_naive(y, len(y), m, 11, out)
        n = len(y)
        ref = [y[n - 1 + h - m * math.ceil(h / m)] for h in range(1, 12)]
        assert out.tolist() == ref


def test_damped_trend_against_recursions():
    rng = np.random.default_rng(1)
    y = rng.normal(size=50).cumsum()
    level, trend = y[0], 0.0
    a, b, phi = E.HOLT_ALPHA, E.HOLT_BETA, E.HOLT_PHI
    for v in y[1:]:
        # Gardner's damped trend, written from the textbook equations
        new_level = a * v + (1 - a) * (level + phi * trend)
        ref_trend = b * (new_level - level) + (1 - b) * phi * trend
        level_got, trend_got = E.holt_update(level, trend, v)
        assert abs(level_got - new_level) < 1e-12 and abs(trend_got - ref_trend) < 1e-12
        level, trend = new_level, ref_trend
    out = np.empty(6)
    E.damped_trend(level, trend, 6, out)
    ref = [level + sum(phi ** i for i in range(1, h + 1)) * trend for h in range(1, 7)]
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)


def test_seasonal_drift_products():
    prof = np.array([0.1, -0.2, 0.05])
    out = np.empty(5)
    E.seasonal_drift(50.0, prof, np.ones(3, dtype=bool), 1, 5, out)
    ref, v = [], 50.0
    for h in range(5):
        v *= 1 + prof[(1 + h) % 3]
        ref.append(v)
    np.testing.assert_allclose(out, ref, rtol=1e-15)
    E.seasonal_drift(50.0, prof, np.ones(3, dtype=bool), 1, 5, out, relative=False)
    np.testing.assert_allclose(out, 50.0 + np.cumsum([prof[(1 + h) % 3] for h in range(5)]), rtol=1e-15)


def test_medians():
    rng = np.random.default_rng(2)
    y = rng.normal(size=40)
    out = np.empty(9)
    E.seasonal_median(y, len(y), 4, 9, 3, out)
    n = len(y)
    for h in range(1, 10):
        t = n - 1 + h  # target time; the same phase in the last 3 full seasons of history
        same = [y[i] for i in range(n - 12, n) if (i - t) % 4 == 0]
        assert out[h - 1] == np.median(same)
    assert E.recent_median(y, len(y), 7) == np.median(y[-7:])


def test_holt_winters_against_reference():
    rng = np.random.default_rng(3)
    m = 4
    t = np.arange(40)
    y = (20 + 0.3 * t) * (1 + 0.2 * np.sin(2 * np.pi * t / m)) + rng.normal(0, 0.3, size=40)
    a, b, g = E.HW_ALPHA, E.HW_BETA, E.HW_GAMMA
    # reference: initialise on the first season, then the multiplicative recursions
    level = y[:m].mean()
    trend = np.diff(y[:m]).mean()
    idx = {i: y[i] / level for i in range(m)}
    state = np.array([level, trend])
    lev, tr, ind = E.holt_winters_init(y[:m], m, m, True)
    assert (lev, tr) == (level, trend) and ind.tolist() == [idx[i] for i in range(m)]
    for i in range(m, 40):
        prior = level + trend
        new_level = a * y[i] / idx[i % m] + (1 - a) * prior
        idx[i % m] = g * y[i] / prior + (1 - g) * idx[i % m]
        trend = b * (new_level - level) + (1 - b) * trend
        level = new_level
        E.holt_winters_update(state, ind, y[i], i, True, E.HW_BETA)
    np.testing.assert_allclose(state, [level, trend], rtol=1e-12)
    out = np.empty(6)
    E.holt_winters_forecast(state, ind, 40, 6, True, out)
    ref = [(level + h * trend) * idx[(39 + h) % m] for h in range(1, 7)]
    np.testing.assert_allclose(out, ref, rtol=1e-12)


def test_holt_winters_run_is_the_updates_in_turn():
    y = 50 + 10 * np.sin(np.arange(30) * 2 * np.pi / 5) + np.arange(30)
    for relative in (True, False):
        lev, tr, ind = E.holt_winters_init(y[:5], 5, 5, relative)
        one, one_ind = np.array([lev, tr]), ind.copy()
        for i in range(5, 30):
            E.holt_winters_update(one, one_ind, y[i], i, relative, 0.05)
        run, run_ind = np.array([lev, tr]), ind.copy()
        E.holt_winters_run(run, run_ind, y[5:], 5, relative, 0.05)
        assert run.tolist() == one.tolist() and run_ind.tolist() == one_ind.tolist()


@pytest.mark.parametrize("relative", [True, False])
def test_seasonal_drift_learning_against_reference(relative):
    rng = np.random.default_rng(4)
    y = 30 + np.cumsum(rng.normal(0, 1, 50)) + 5 * np.sin(np.arange(50) * 2 * np.pi / 6)
    y[20] = 0.01 * y[19] if relative else y[20]     # a near-zero drop: the relative change is capped
    m, t0 = 6, 7                                     # y[0] has index 7
    ref = {}
    for i in range(1, 50):
        change = (y[i] - y[i - 1]) / y[i - 1] if relative else y[i] - y[i - 1]
        change = min(max(change, -E.DRIFT_LIMIT), E.DRIFT_LIMIT) if relative else change
        p = (t0 + i) % m
        ref[p] = change if p not in ref else ref[p] + E.PROFILE_RATE * (change - ref[p])
    profile, known = np.zeros(m), np.zeros(m, dtype=bool)
    E.seasonal_drift_run(profile, known, y, t0, relative)
    np.testing.assert_allclose(profile, [ref[p] for p in range(m)], rtol=1e-12, atol=1e-15)
    assert known.all()


def test_rls_equals_weighted_ridge_least_squares():
    rng = np.random.default_rng(4)
    d, n, lam, ridge = 4, 60, 0.97, 0.5
    Z = rng.normal(size=(n, d))
    y = Z @ np.array([1.0, -2.0, 0.5, 3.0]) + rng.normal(0, 0.1, size=n)
    P = np.eye(d)[None] / ridge
    W = np.zeros((1, d))
    for i in range(n):
        E.rls_update(P, W, Z[i:i + 1], y[i:i + 1], np.ones(1, dtype=np.bool_), d, lam, 1e9)
    # closed form: minimise sum lam^(n-1-i) (y_i - w z_i)^2 + lam^n ridge |w|^2
    wts = lam ** np.arange(n - 1, -1, -1)
    A = (Z * wts[:, None]).T @ Z + lam ** n * ridge * np.eye(d)
    w_ref = np.linalg.solve(A, (Z * wts[:, None]).T @ y)
    np.testing.assert_allclose(W[0], w_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(P[0], np.linalg.inv(A), rtol=1e-7, atol=1e-12)


# ------------------------------------------------------------------------------ aggregation
@pytest.mark.parametrize("rule", ["mlpoly", "ewa", "mlpoly+ewa"])
def test_aggregation_goes_to_the_best_expert(rule):
    rng = np.random.default_rng(5)
    agg = Aggregator(3, 1, rule)
    losses = np.zeros(3)
    total = 0.0
    T = 2000
    for _ in range(T):
        y = rng.normal()
        f = np.array([y + rng.normal(0, 0.1), y + rng.normal(0, 1.0), y + 2.0])
        total += abs(agg.combine(0, f) - y)
        losses += np.abs(f - y)
        agg.update(0, f, y)
    assert agg.weights[0, 0] > 0.9
    assert total / T <= losses.min() / T * 1.1   # close to the best in hindsight


def test_aggregation_can_beat_every_expert():
    # two experts biased in opposite directions: their mean is exact
    agg = Aggregator(2, 1)
    rng = np.random.default_rng(6)
    total, best = 0.0, np.zeros(2)
    for _ in range(1000):
        y = rng.normal()
        f = np.array([y + 1.0, y - 1.0])
        total += abs(agg.combine(0, f) - y)
        best += np.abs(f - y)
        agg.update(0, f, y)
    assert total < 0.2 * best.min()


def test_asleep_experts_are_left_out_and_keep_their_regret():
    agg = Aggregator(2, 1)
    for _ in range(20):
        agg.update(0, np.array([1.0, np.nan]), 1.5)
    assert agg.combine(0, np.array([1.0, np.nan])) == 1.0
    assert agg.regret[0, 1] == 0.0


def test_ewa_wakes_an_asleep_expert_level_with_the_leader():
    # expert 0 good, 1 poor, 2 asleep for 50 updates then as good as 0: it is charged the
    # leader's losses meanwhile, so once awake it shares the weight with 0 at once
    agg = Aggregator(3, 2, rule="ewa")
    rng = np.random.default_rng(4)
    for _ in range(50):
        y = rng.normal()
        agg.update(1, np.array([y + 0.1, y + 2.0, np.nan]), y)
    assert agg.regret[1, 2] == agg.regret[1, 0]
    y = rng.normal()
    agg.update(1, np.array([y + 0.1, y + 2.0, y + 0.1]), y)
    assert agg.weights[1, 2] == agg.weights[1, 0] > 0.45
    assert agg.weights[1, 1] < 1e-6


def test_aggregation_is_per_horizon():
    agg = Aggregator(2, 2)
    for _ in range(200):
        agg.update(0, np.array([0.0, 5.0]), 0.0)
        agg.update(1, np.array([0.0, 5.0]), 5.0)
    assert agg.weights[0, 0] > 0.9 and agg.weights[1, 1] > 0.9


def test_mlpoly_ewa_is_mlpoly_one_step_ahead_and_ewa_beyond():
    rng = np.random.default_rng(11)
    mixed, mlpoly, ewa = (Aggregator(4, 3, rule) for rule in ("mlpoly+ewa", "mlpoly", "ewa"))
    for _ in range(300):
        y = rng.normal()
        for h in range(3):
            f = y + rng.normal(0, [0.2, 0.5, 1.0, 2.0]) + [0.0, 0.3, -0.3, 1.0]
            f[rng.integers(4)] = np.nan if rng.random() < 0.1 else f[0]   # now and then an asleep expert
            assert mixed.combine(h, f) == (mlpoly if h == 0 else ewa).combine(h, f)
            for agg in (mixed, mlpoly, ewa):
                agg.update(h, f, y)
    assert np.array_equal(mixed.weights[0], mlpoly.weights[0])
    assert np.array_equal(mixed.weights[1:], ewa.weights[1:])
    assert not np.array_equal(mlpoly.weights[1:], ewa.weights[1:])


def _reference_update(w, regret, squares, scale, forecasts, y, discount, mlpoly, t):
    """ML-Poly / EWA from their equations, in NumPy (returns the aggregate used); ``t``: the
    update's number (from 1): EWA's rate is 4 over the first 3, then 4 sqrt(3 / n), n the
    updates discounted like the losses."""
    awake = np.isfinite(forecasts)
    ww = np.where(awake, w, 0.0)
    ww = ww / ww.sum() if ww.sum() > 0 else awake / max(awake.sum(), 1)
    p = float(ww @ np.where(awake, forecasts, 0.0))
    f = np.where(awake, forecasts, p)
    regret *= discount
    squares *= discount
    if mlpoly:
        r = np.sign(p - y) * (p - f)
        regret += r
        squares += r * r
        v = np.maximum(regret, 0.0) / np.maximum(squares, 1e-300)
    else:
        loss = np.abs(f - y)
        scale[0] = scale[0] + 0.02 * (loss.mean() - scale[0]) if scale[0] > 0 else loss.mean()
        if awake.any():   # asleep: the loss of the awake expert with the least cumulated loss
            leader = np.flatnonzero(awake)[np.argmin(regret[awake])]
            loss = np.where(awake, loss, abs(forecasts[leader] - y))
        regret += loss / scale[0]
        n = t if discount == 1.0 else sum(discount ** k for k in range(t))
        eta = 4.0 * np.sqrt(3.0 / max(3.0, n))
        v = np.exp(-eta * (regret - regret.min()))
    if v.sum() > 0:
        w[:] = v / v.sum()
    return p


@pytest.mark.parametrize("rule", ["mlpoly", "ewa"])
@pytest.mark.parametrize("discount", [1.0, 0.99])
def test_aggregation_kernels_against_numpy(rule, discount):
    rng = np.random.default_rng(12)
    agg = Aggregator(5, 1, rule, discount)
    w, regret, squares, scale = np.full(5, 0.2), np.zeros(5), np.zeros(5), np.zeros(1)
    for t in range(400):
        y = rng.normal()
        f = y + rng.normal(0, [0.1, 0.5, 1.0, 2.0, 0.3]) + [0.0, 0.5, -0.5, 1.0, 0.0]
        if t < 50:
            f[4] = np.nan                      # asleep at first
        p = _reference_update(w, regret, squares, scale, f, y, discount, rule == "mlpoly", t + 1)
        assert agg.combine(0, f) == pytest.approx(p, rel=1e-12, abs=1e-12)
        agg.update(0, f, y)
        np.testing.assert_allclose(agg.weights[0], w, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(agg.regret[0], regret, rtol=1e-9, atol=1e-12)


def _reference_far_update(weights, losses, scale, meta, h, forecasts, y, t):
    """A far horizon's update from its equations, in NumPy (returns the aggregate used): the
    second level's candidates (EWA on the horizon's own cumulated losses and on their mean over
    the far horizons 1 .. H-1), their ML-Poly regrets against the mixed forecast, then the
    horizon's losses (as in ``_reference_update``), then the mixed weights; ``t``: the horizon's
    number of updates before this one."""
    awake = np.isfinite(forecasts)

    def combine(w):
        ww = np.where(awake, w, 0.0)
        ww = ww / ww.sum() if ww.sum() > 0 else awake / max(awake.sum(), 1)
        return float(ww @ np.where(awake, forecasts, 0.0))

    def ewa(L, n):
        v = np.exp(-4.0 * np.sqrt(3.0 / max(3.0, n)) * (L - L.min()))
        return v / v.sum()

    p = combine(weights[h])
    for c, candidate in enumerate((ewa(losses[h], t), ewa(losses[1:].mean(axis=0), t))):
        r = np.sign(p - y) * (p - combine(candidate))
        meta[0, c] += r
        meta[1, c] += r * r
    loss = np.abs(np.where(awake, forecasts, p) - y)
    scale[h] = scale[h] + 0.02 * (loss.mean() - scale[h]) if scale[h] > 0 else loss.mean()
    if awake.any():
        leader = np.flatnonzero(awake)[np.argmin(losses[h][awake])]
        loss = np.where(awake, loss, abs(forecasts[leader] - y))
    losses[h] += loss / scale[h]
    a = np.maximum(meta[0], 0.0) / np.maximum(meta[1], 1e-300)
    m = a / a.sum() if a.sum() > 0 else np.full(2, 0.5)
    weights[h] = m[0] * ewa(losses[h], t + 1) + m[1] * ewa(losses[1:].mean(axis=0), t + 1)
    return p


@pytest.mark.parametrize("rule", ["ewa", "mlpoly+ewa"])
def test_far_horizon_kernels_against_numpy(rule):
    rng = np.random.default_rng(13)
    H, E = 4, 5
    agg = Aggregator(E, H, rule)
    weights, losses = np.full((H, E), 1.0 / E), np.zeros((H, E))
    scale, meta = np.zeros(H), np.zeros((2, 2))
    for t in range(300):
        y = rng.normal()
        agg.update(0, y + rng.normal(0, [1.0, 0.1, 0.5, 2.0, 0.3]), y)   # one step ahead: not pooled
        for h in range(1, H):
            y = rng.normal()
            f = y + rng.normal(0, [0.1, 0.5, 1.0, 2.0, 0.3]) * (1 + h) + [0.0, 0.5 * h, -0.5, 1.0, 0.2 * h]
            if t < 40:
                f[4] = np.nan                  # asleep at first
            p = _reference_far_update(weights, losses, scale, meta, h, f, y, t)
            assert agg.combine(h, f) == pytest.approx(p, rel=1e-12, abs=1e-12)
            agg.update(h, f, y)
            np.testing.assert_allclose(agg.weights[h], weights[h], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(agg.regret[1:], losses[1:], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(agg.meta, meta, rtol=1e-9, atol=1e-12)
    assert (meta[1] > 0).all() and (agg.regret[0] != 0).any()


def test_far_horizons_keep_their_own_best_expert_when_the_horizons_disagree():
    # expert 0 is exact two steps ahead, expert 1 three steps ahead: pooling the far horizons'
    # losses alone would give both horizons the same mixture; the second level learns to trust
    # each horizon's own losses
    agg = Aggregator(3, 3)
    rng = np.random.default_rng(14)
    for _ in range(400):
        y = rng.normal()
        agg.update(1, np.array([y, y + 1.0, y + 3.0]), y)
        agg.update(2, np.array([y + 1.0, y, y + 3.0]), y)
    assert agg.weights[1, 0] > 0.9 and agg.weights[2, 1] > 0.9
    assert agg.meta[0, 0] > agg.meta[0, 1]


def test_far_horizons_borrow_the_pooled_evidence_while_their_own_is_scant():
    # the same best expert at every far horizon: the horizon updated least already trusts it
    agg, alone = Aggregator(3, 4), Aggregator(3, 4)
    rng = np.random.default_rng(15)
    for t in range(60):
        for h in (1, 2, 3):
            if h == 3 and t % 10:
                continue                      # horizon index 3 learns one value in ten
            y = rng.normal()
            f = np.array([y + rng.normal(0, 0.1), y + rng.normal(0, 1.0), y + 2.0])
            agg.update(h, f, y)
            _update(alone.weights[h], alone.regret[h], alone.squares[h], alone.scale, h, f, y, 1.0, False,
                    alone.updates)
    assert agg.weights[3, 0] > alone.weights[3, 0]


def test_default_aggregation_is_mlpoly_then_ewa():
    assert Forecaster().aggregation == "mlpoly+ewa"
    with pytest.raises(ValueError, match="aggregation must be one of"):
        Forecaster(aggregation="median")


# ---------------------------------------------------------------------------------- season
def test_autocorrelation_kernel_against_numpy():
    from streamlstm.forecasting.season import CLIP, _autocorrelation

    rng = np.random.default_rng(3)
    values = np.cumsum(rng.normal(size=300)) + 8 * np.sin(np.arange(300) * 2 * np.pi / 9)
    values[100] += 500.0                      # an outlier: clipped
    d = np.diff(values)
    lim = CLIP * np.median(np.abs(d))
    d = np.clip(d, -lim, lim)
    d -= d.mean()
    ref = np.correlate(d, d, mode="full")[len(d) - 1:] / (d @ d)
    got = _autocorrelation(values, 40, CLIP)
    np.testing.assert_allclose(got, ref[:42], rtol=1e-12, atol=1e-13)
    assert not _autocorrelation(np.full(50, 3.0), 10, CLIP).any()   # flat: no variance, all 0


def _seasonal_series(n, period=12, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (100 + t) * (1 + 0.2 * np.sin(2 * np.pi * t / period)) + rng.normal(0, 1, n)


def test_season_is_looked_for_at_every_step_early_on():
    # a cycle and a half of changes (20 changes, 21 values; at least MIN_CHANGES = 20) is
    # enough: found at once, not at the next 8th value
    model = Forecaster(lstm=False, ar_orders=())
    found_at = None
    for i, v in enumerate(_seasonal_series(40)):
        model.learn_one(v)
        if found_at is None and model.season_:
            found_at = i + 1
    assert found_at == 21 and model.season_ == 12


def test_a_season_found_starts_the_seasonal_experts_as_if_given():
    # once found, Holt-Winters and the seasonal drift hold what they would hold had the
    # season been given from the first value (they are replayed over the history)
    y = _seasonal_series(60)
    found = Forecaster(lstm=False, ar_orders=())
    given = Forecaster(lstm=False, ar_orders=(), season=12)
    for i, v in enumerate(y):
        found.learn_one(v)
        given.learn_one(v)
        if found.season_ == 12:
            a, b = found._streams[None], given._streams[None]
            assert a.hw_ready and b.hw_ready, i
            assert a.hw.tolist() == b.hw.tolist() and a.hw_indices.tolist() == b.hw_indices.tolist(), i
            assert a.profile.tolist() == b.profile.tolist() and a.known.tolist() == b.known.tolist(), i
            assert a.hwl_ready and b.hwl_ready, i
            assert a.hwl.tolist() == b.hwl.tolist() and a.hwl_indices.tolist() == b.hwl_indices.tolist(), i
            for name in ("holt_winters", "seasonal_drift", "holt_winters_log", "seasonal_mean"):
                assert found.expert_forecasts()[name].tolist() == given.expert_forecasts()[name].tolist()
    assert found.season_ == 12


def test_holt_winters_log_expert_against_reference():
    # additive Holt-Winters on the logs (initialised on the first season), forecasts exponentiated
    rng = np.random.default_rng(5)
    m, n, H = 4, 40, 3
    t = np.arange(n)
    y = (20 + 0.3 * t) * (1 + 0.2 * np.sin(2 * np.pi * t / m)) + rng.normal(0, 0.3, size=n)
    model = Forecaster(horizon=H, season=m, experts=("last_value", "holt_winters_log"), ar_orders=(), lstm=False)
    a, b, g = E.HW_ALPHA, E.HW_BETA, E.HW_GAMMA
    u = np.log(y)
    level, trend = u[:m].mean(), np.diff(u[:m]).mean()
    idx = {i: u[i] - level for i in range(m)}
    for i in range(n):
        model.learn_one(y[i])
        if i >= m:
            prior = level + trend
            new_level = a * (u[i] - idx[i % m]) + (1 - a) * prior
            idx[i % m] = g * (u[i] - prior) + (1 - g) * idx[i % m]
            trend = b * (new_level - level) + (1 - b) * trend
            level = new_level
        got = model.expert_forecasts()["holt_winters_log"]
        if i < m - 1:
            assert np.isnan(got).all()
        else:
            ref = [math.exp(level + h * trend + idx[(i + h) % m]) for h in range(1, H + 1)]
            np.testing.assert_allclose(got, ref, rtol=1e-12)


def test_seasonal_mean_is_the_mean_of_the_awake_seasonal_models():
    model = Forecaster(horizon=2, lstm=False, ar_orders=())
    for i, v in enumerate(_seasonal_series(60)):
        model.learn_one(v)
        f = model.expert_forecasts()
        parts = np.array([f[name] for name in ("seasonal_drift", "holt_winters", "holt_winters_log")])
        awake = ~np.isnan(parts[:, 0])
        if awake.any():
            np.testing.assert_allclose(f["seasonal_mean"], parts[awake].mean(axis=0), rtol=1e-14)
        else:
            assert np.isnan(f["seasonal_mean"]).all(), i


def _without_log_holt_winters(blob: bytes, drop=("hwl_ready", "hwl", "hwl_indices")) -> bytes:
    """The bytes a forecaster saved before the log Holt-Winters expert would have (its state left out)."""
    kind, meta, arrays = persistence.loads(blob)
    for entry in meta["streams"]:
        if "hwl_ready" in drop:
            del entry["hwl_ready"]
    arrays = {k: v for k, v in arrays.items() if k.rsplit("/", 1)[-1] not in drop}
    return persistence.dumps(kind, meta, arrays)


def test_files_saved_before_the_log_holt_winters_expert_still_load():
    y = _seasonal_series(80)
    # the experts of the files saved before it (it was not among them): they load and resume exactly
    old_experts = ("last_value", "seasonal_naive", "exp_smoothing", "damped_trend", "seasonal_drift", "holt_winters",
                   "seasonal_median", "recent_median")
    model = Forecaster(horizon=3, experts=old_experts, lstm_hidden=4)
    _stream(model, y[:50])
    old = _without_log_holt_winters(model.to_bytes())
    twin = Forecaster.from_bytes(old)
    assert not twin._streams[None].hwl_ready and twin.season_ == 12
    assert np.array_equal(_stream(model, y[50:]), _stream(twin, y[50:]))
    # with the expert (a file of these settings that lacks its state): it starts again at once
    model = Forecaster(horizon=3, lstm=False)
    _stream(model, y[:50])
    twin = Forecaster.from_bytes(_without_log_holt_winters(model.to_bytes()))
    twin.learn_one(y[50])
    assert twin._streams[None].hwl_ready and np.isfinite(twin.expert_forecasts()["holt_winters_log"]).all()
    # a part of that state without the rest is refused, named
    for drop in (("hwl_ready",), ("hwl",), ("hwl_indices",)):
        with pytest.raises(persistence.FormatError, match="log Holt-Winters"):
            Forecaster.from_bytes(_without_log_holt_winters(model.to_bytes(), drop))


@pytest.mark.parametrize("period", [4, 7, 12, 24])
def test_season_detection_on_synthetic_data(period):
    rng = np.random.default_rng(period)
    t = np.arange(10 * period)
    y = 5 * np.sin(2 * np.pi * t / period) + 0.05 * t + rng.normal(0, 0.5, size=t.size)
    assert detect_season(y, max_season=48) == period


@pytest.mark.parametrize("seed", range(5))
def test_no_season_in_noise_or_random_walks(seed):
    rng = np.random.default_rng(seed)
    assert detect_season(rng.normal(size=200)) is None
    assert detect_season(rng.normal(size=200).cumsum()) is None


@pytest.mark.parametrize("period", [24, 96, 288])
def test_a_square_wave_season_is_found_from_the_levels(period):
    """A daily on/off (two jumps a cycle among hundreds of noisy changes) is invisible to the
    clipped autocorrelation of the changes; the levels show it (level_season)."""
    rng = np.random.default_rng(period)
    t = np.arange(2 * period + 2 + 40)
    y = np.where(t % period < period * 5 // 12, 20.0, 80.0) + rng.normal(0, 3, size=t.size)
    from streamlstm.forecasting.season import _autocorrelation, _change_season, level_season

    top = min(period, int((t.size - 1) / 1.5))
    if period >= 96:
        assert _change_season(_autocorrelation(y, top, 5.0), top, 0.3) is None   # the changes show nothing
    assert level_season(y, 288) == period
    assert detect_season(y, max_season=288) == period
    assert level_season(y[: 2 * period - 5], 288) == 0   # two whole seasons are needed
    # a sharp dip: a first estimate a step off (each step adds a jump's share of D) is corrected
    assert level_season(y, 288, current=period - 1) == period
    assert level_season(y, 288, current=period // 2) == period


def test_a_flat_bottomed_level_season_is_not_changed_by_a_step_of_noise():
    rng = np.random.default_rng(1)
    t = np.arange(600)
    y = 10 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 1, 600)
    from streamlstm.forecasting.season import _madogram, level_season

    md = _madogram(y, 300)
    assert md[289] < md[288] < 1.05 * md[289] < md[287]   # noise: the least D is a step past 288
    assert level_season(y, 288) == 288                     # ... but no season past max_season
    assert level_season(y, 300) == 289
    assert level_season(y, 300, current=288) == 288        # within 5% of the least: it stays
    assert level_season(y, 300, current=280) == 289        # out of the flat bottom: the least


@pytest.mark.parametrize("seed", range(8))
def test_no_level_season_in_noise_walks_trends_or_autoregressions(seed):
    rng = np.random.default_rng(100 + seed)
    e = rng.normal(size=600)
    ar = np.zeros(600)
    for i in range(1, 600):
        ar[i] = 0.95 * ar[i - 1] + e[i]
    from streamlstm.forecasting.season import level_season

    for y in (e, e.cumsum(), 0.05 * np.arange(600) + e, ar, np.exp(0.01 * np.arange(600)) + 0.1 * e):
        assert level_season(y, 288) == 0


def test_engine_finds_a_daily_season_of_five_minute_values():
    """288 values a day (the default max_season), a square wave: found after two days, and
    its seasonal experts then forecast part of each jump (no season: every jump is a surprise)."""
    rng = np.random.default_rng(5)
    t = np.arange(4 * 288)
    y = np.where(t % 288 < 120, 20.0, 80.0) + rng.normal(0, 3, size=t.size)
    errors = {}
    for season in ("auto", None):
        model = Forecaster(lstm=False, season=season)
        e = []
        for v in y:
            e.append(abs(v - model.forecast()[0]))
            model.learn_one(v)
        jumps = [d * 288 + j for d in (2, 3) for j in (0, 120)]
        errors[season] = np.mean([e[i] for i in jumps])
        if season == "auto":
            assert model.season_ == 288
    assert errors[None] > 55 and errors["auto"] < 0.75 * errors[None]   # jumps of 60 (41 against 63)
    # an older file's max_season of 48 keeps its 400 values and short seasons
    assert Forecaster(max_season=48)._capacity == 400 and Forecaster()._capacity == 2 * 288 + 2
    with pytest.raises(ValueError, match="max_season must be an integer in"):
        Forecaster(max_season=1 << 21)


def test_engine_reports_the_season_found():
    t = np.arange(200)
    model = Forecaster(lstm=False)
    for v in 10 + np.sin(2 * np.pi * t / 7):
        model.learn_one(v)
    assert model.season_ == 7
    assert Forecaster(season=12).season_ == 12
    assert Forecaster(season=None).season_ is None


# ------------------------------------------------------------------------------- the engine
def _stream(model, ys, xs=None, keys=None):
    out = []
    for i, y in enumerate(ys):
        k = None if keys is None else keys[i]
        out.append(model.forecast(key=k, xs=None if xs is None else [xs[i]]))
        model.learn_one(y, None if xs is None else xs[i], key=k)
    return np.array(out)


def test_beats_last_value_on_a_seasonal_series():
    rng = np.random.default_rng(7)
    t = np.arange(400)
    y = 50 + 10 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 1, size=t.size)
    f = _stream(Forecaster(horizon=3), y)
    ours = np.abs(f[100:, 0] - y[100:]).mean()
    last = np.abs(y[99:-1] - y[100:]).mean()
    assert ours < 0.5 * last


def test_bit_identical_resume_keyed_with_features():
    rng = np.random.default_rng(8)
    n = 240
    keys = ["a", "b", 3][:3]
    ks = [keys[i % 3] for i in range(n)]
    X = rng.normal(size=(n, 2))
    y = np.cumsum(rng.normal(size=n)) + X[:, 0]
    model = Forecaster(horizon=4, n_features=2)
    _stream(model, y[:150], X[:150], ks[:150])
    twin = Forecaster.from_bytes(model.to_bytes())
    a = _stream(model, y[150:], X[150:], ks[150:])
    b = _stream(twin, y[150:], X[150:], ks[150:])
    assert np.array_equal(a, b)
    assert model.to_bytes() == twin.to_bytes()


@pytest.mark.parametrize("aggregation", ["mlpoly+ewa", "mlpoly"])   # "mlpoly": the previous default's files
@pytest.mark.parametrize("saved_at", [20, 40])    # before / after the season is found (and replayed)
def test_bit_identical_resume_across_the_season_being_found(aggregation, saved_at):
    y = _seasonal_series(70)
    model = Forecaster(horizon=3, aggregation=aggregation)
    _stream(model, y[:saved_at])
    twin = Forecaster.from_bytes(model.to_bytes())
    assert twin.aggregation == aggregation
    a = _stream(model, y[saved_at:])
    b = _stream(twin, y[saved_at:])
    assert np.array_equal(a, b) and model.season_ == twin.season_ == 12
    assert model.to_bytes() == twin.to_bytes()


def _first_season_found(y):
    """The engine fed ``y`` up to the value at which it first finds a season, and that n."""
    model = Forecaster(horizon=3, lstm_hidden=4)
    for n, v in enumerate(y, start=1):
        model.learn_one(v)
        if model.season_:
            return model, n
    raise AssertionError("no season found")


def test_a_season_found_replays_the_simple_experts_weights_over_the_history():
    from streamlstm.forecasting import engine

    y = _seasonal_series(70)
    model, n = _first_season_found(y)
    s = model._streams[None]
    assert s.weights_replayed_at == n
    # what an engine with that season (no LSTM: its column is not taken) earns over the same values,
    # a season found, not given: a late expert's far-horizon losses are not taken from its shorter ones
    params = model.get_params()
    params.update(season=model.season_, lstm=False)
    replay = Forecaster(**params)
    replay._earlier_losses = False
    for v in y[:n]:
        replay.learn_one(v)
    k = len(model.experts)
    assert np.array_equal(model._agg.regret[:, :k], replay._agg.regret[:, :k])
    assert np.array_equal(model._agg.squares[:, :k], replay._agg.squares[:, :k])
    # without the replay the seasonal experts wake at no regret: other weights
    try:
        engine.REPLAY_WEIGHTS = False
        plain, m = _first_season_found(y)
    finally:
        engine.REPLAY_WEIGHTS = True
    assert m == n and plain._streams[None].weights_replayed_at == -1
    assert not np.array_equal(plain._agg.regret[:, :k], model._agg.regret[:, :k])


def test_weights_are_not_replayed_with_keys_nor_features():
    y = _seasonal_series(70)
    keyed = Forecaster(horizon=3, lstm=False)
    with_features = Forecaster(horizon=3, lstm=False, n_features=1)
    for v in y:
        keyed.learn_one(v, key="a")
        keyed.learn_one(v + 1.0, key="b")
        with_features.learn_one(v, [0.0])
    assert keyed.season_of("a") == 12 and with_features.season_ == 12
    assert {s.weights_replayed_at for s in keyed._streams.values()} == {-1}
    assert with_features._streams[None].weights_replayed_at == -1


def test_weights_are_replayed_at_most_once_per_season_window(monkeypatch):
    from streamlstm.forecasting import engine

    # a season that comes and goes (scripted detection): a replay, none within SEASON_WINDOW values
    # of it, one again after
    window = engine.SEASON_WINDOW
    found_at = {30, window + 29, window + 31}
    lost_at = {60, window + 30}
    scripted_season = {"season": None}

    def scripted(values, max_season, current=0):
        n = calls["n"]
        if n in found_at:
            scripted_season["season"] = 12
        elif n in lost_at:
            scripted_season["season"] = None
        return scripted_season["season"]

    calls = {"n": 0}
    monkeypatch.setattr(engine, "detect_season", scripted)
    monkeypatch.setattr(engine, "SEASON_EVERY", 1)
    model = Forecaster(horizon=2, lstm=False)
    replays = []
    for i, v in enumerate(_seasonal_series(window + 40)):
        calls["n"] = i + 1
        before = model._streams[None].weights_replayed_at if model._streams else -1
        model.learn_one(v)
        if model._streams[None].weights_replayed_at != before:
            replays.append(i + 1)
    assert replays == [30, window + 31]


def test_files_saved_before_the_weight_replay_still_load():
    y = _seasonal_series(70)
    model = Forecaster(horizon=3, lstm_hidden=4)
    _stream(model, y[:40])
    kind, meta, arrays = persistence.loads(model.to_bytes())
    assert meta["streams"][0]["weights_replayed_at"] > 0
    del meta["streams"][0]["weights_replayed_at"]
    twin = Forecaster.from_bytes(persistence.dumps(kind, meta, arrays))
    assert twin._streams[None].weights_replayed_at == -1
    assert np.array_equal(_stream(model, y[40:]), _stream(twin, y[40:]))   # found before: no new replay
    for bad in (41, -2, "3", 2.0, True):
        meta["streams"][0]["weights_replayed_at"] = bad
        with pytest.raises(persistence.FormatError, match="weights_replayed_at"):
            Forecaster.from_bytes(persistence.dumps(kind, meta, arrays))


def test_keyed_equals_separate_state_per_key_for_the_simple_experts():
    # without shared learners (no autoregressions, no LSTM, fixed mean weights), keys are independent
    rng = np.random.default_rng(9)
    ya, yb = rng.normal(size=50).cumsum(), 100 + rng.normal(size=50).cumsum()
    kw = {"ar_orders": (), "lstm": False, "aggregation": "mean", "horizon": 2}
    both = Forecaster(**kw)
    alone = Forecaster(**kw)
    for i in range(50):
        both.learn_one(ya[i], key="a")
        both.learn_one(yb[i], key="b")
        alone.learn_one(yb[i])
    assert np.array_equal(both.forecast(key="b"), alone.forecast())


@pytest.mark.parametrize("n", [0, 1, 2, 5, 30, 100])
def test_short_series_give_finite_forecasts(n):
    rng = np.random.default_rng(n)
    y = 1000 + rng.normal(0, 30, size=n).cumsum()
    model = Forecaster(horizon=5)
    f = _stream(model, y)
    final = model.forecast()
    assert final.shape == (5,) and np.isfinite(final).all()
    if n == 0:
        assert final.tolist() == [0.0] * 5
    if n == 1:
        assert final.tolist() == [y[0]] * 5
    assert np.isfinite(f).all()


def test_values_at_or_below_zero_switch_units_without_breaking():
    y = np.concatenate([np.linspace(5, 1, 30), np.linspace(0, -5, 30), np.linspace(-5, 5, 40)])
    model = Forecaster(horizon=2)
    f = _stream(model, y)
    assert np.isfinite(f).all()


def test_bad_input_names_it_and_changes_nothing():
    model = Forecaster(n_features=2)
    for v in range(10):
        model.learn_one(float(v), [0.0, 1.0])
    before = model.to_bytes()
    with pytest.raises(ValueError, match="finite"):
        model.learn_one(float("nan"), [0.0, 1.0])
    with pytest.raises(ValueError, match="n_features=2"):
        model.learn_one(1.0, [0.0])
    with pytest.raises(ValueError, match="feature 1 is inf"):
        model.learn_one(1.0, [0.0, float("inf")])
    with pytest.raises(TypeError, match="number"):
        model.learn_one("abc")
    assert model.to_bytes() == before
    with pytest.raises(ValueError, match="horizon"):
        Forecaster(horizon=0)
    with pytest.raises(ValueError, match="season"):
        Forecaster(season=1)
    with pytest.raises(ValueError, match="unknown experts"):
        Forecaster(experts=("prophet",))


def test_exogenous_features_are_used():
    # y_t = 3 x_t + small noise: with x of the target time, the forecast follows x
    rng = np.random.default_rng(10)
    x = rng.normal(size=(600, 1))
    y = 3 * x[:, 0] + rng.normal(0, 0.05, size=600)
    f = _stream(Forecaster(n_features=1, lstm=False), y, x)
    err = np.abs(f[300:, 0] - y[300:]).mean()
    assert err < 0.3 * np.abs(y[299:-1] - y[300:]).mean()


DATA = next((p for p in (Path(__file__).resolve().parents[1].parent / "shared" / "data" / "series",
                         Path("/work/shared/data/series")) if p.is_dir()), Path("../shared/data/series"))


@pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data/series (real series) is not present")
def test_nile_beats_last_value():
    import csv

    with open(DATA / "nile.csv") as fh:
        y = np.array([float(r["volume"]) for r in csv.DictReader(fh)])
    f = _stream(Forecaster(), y)
    assert np.abs(f[10:, 0] - y[10:]).mean() < np.abs(y[9:-1] - y[10:]).mean()


def test_recursive_and_direct_share_the_one_step_path():
    rng = np.random.default_rng(11)
    y = 10 + np.sin(np.arange(300) / 3) + rng.normal(0, 0.1, 300).cumsum()
    direct = _stream(Forecaster(horizon=4, lstm=False), y)
    recursive = _stream(Forecaster(horizon=4, lstm=False, multi_step="recursive"), y)
    assert np.array_equal(direct[:, 0], recursive[:, 0])
    assert np.isfinite(recursive).all() and not np.array_equal(direct[:, 1:], recursive[:, 1:])


def test_a_keys_autoregressions_forecast_with_the_pooled_coefficients_of_now():
    # other keys move the pooled coefficients between two values of a key: its forecasts are
    # origin + W . z with W as it is when they are asked
    rng = np.random.default_rng(4)
    model = Forecaster(experts=("last_value",), ar_orders=(1,), ar_units=("raw",), lstm=False)
    level = {"a": 10.0, "b": 50.0, "c": 90.0}
    for i in range(90):
        k = "abc"[i % 3]
        if i > 30:
            f = model.expert_forecasts(k)["ar1"][0]
            s = model._streams[k]
            W, o = model._W[0][0], model._o
            assert math.isclose(f, s.origin[0, 0] + float(np.dot(W[:o + 1], s.features[0, 0, :o + 1])), rel_tol=1e-12), i
        level[k] += 1.0 + rng.normal()
        model.learn_one(level[k], key=k)
    stored = model._streams["a"].forecasts[0, 0, 1]   # made at a's latest value
    assert model.expert_forecasts("a")["ar1"][0] != stored   # keys b and c moved W since


def test_keys_compare_by_value():
    # a key read twice from a file is two equal objects: the LSTM state must follow the value
    rng = np.random.default_rng(12)
    y = rng.normal(size=300).cumsum()
    names = ["alpha", "beta", "gamma"]
    same, fresh = Forecaster(horizon=2), Forecaster(horizon=2)
    a = _stream(same, y, keys=[names[i % 3] for i in range(300)])
    b = _stream(fresh, y, keys=["".join(list(names[i % 3])) for i in range(300)])
    assert np.array_equal(a, b)


def test_ewa_rate_decreases_with_the_updates_and_is_derived_on_load():
    from streamlstm.forecasting.aggregation import EWA_ETA, ewa_eta

    assert ewa_eta(1) == ewa_eta(3) == EWA_ETA
    assert ewa_eta(12) == pytest.approx(EWA_ETA / 2) and ewa_eta(300) < ewa_eta(30) < ewa_eta(12)
    # the counts of updates are not saved: the engine derives them from its streams' counts
    # (horizon h learns once per value of a stream after its h-th; the replay does not count)
    y = _seasonal_series(90)
    keys = ["a", "b", "a", "a", "c"] * 18
    for model, ks in ((Forecaster(horizon=4, lstm=False), None), (Forecaster(horizon=4, lstm=False), keys)):
        _stream(model, y, keys=ks)
        live = model._agg.updates.copy()
        assert live[0] == sum(max(0, s.n - 1) for s in model._streams.values()) and live[3] < live[0]
        twin = Forecaster.from_bytes(model.to_bytes())
        assert np.array_equal(twin._agg.updates, live)
        assert np.array_equal(_stream(model, y[:10], keys=ks), _stream(twin, y[:10], keys=ks))


def _learned_forecasts(model, y):
    """Feed ``y``; for every value, the forecasts each horizon's weights learned from, and the
    stream's stored forecasts of that value (before they were learned)."""
    from streamlstm.forecasting.aggregation import Aggregator

    seen = []
    original = Aggregator.update
    H = model.horizon

    def spy(self, h, forecasts, y):
        if self is model._agg:   # not a replaying shadow engine's
            seen[-1][1][h] = forecasts.copy()
        return original(self, h, forecasts, y)

    Aggregator.update = spy
    try:
        for v in y:
            s = model._streams.get(None)
            stored = {} if s is None else {h: s.forecasts[(s.n - h - 1) % H, h].copy() for h in range(min(H, s.n))}
            seen.append((stored, {}))
            model.learn_one(v)
    finally:
        Aggregator.update = original
    return seen


def test_a_late_expert_is_charged_its_shorter_forecast_when_the_season_is_given():
    # The seasonal experts wake after the first season: for `h` values their h-step forecasts
    # of a value are missing while their shorter ones exist; with the season given (or none)
    # the far horizons' weights learn from the latest shorter forecast (not the leader's loss).
    y = _seasonal_series(40, period=6)
    filled = 0
    for v, (stored, learned) in enumerate(_learned_forecasts(Forecaster(horizon=4, season=6, lstm=False), y)):
        for h, f in learned.items():
            want = stored[h].copy()
            for e in np.flatnonzero(np.isnan(want)):
                earlier = [stored[k][e] for k in range(h - 1, -1, -1) if not np.isnan(stored[k][e])]
                if earlier:
                    want[e] = earlier[0]
                    filled += h > 0
            np.testing.assert_array_equal(f, want, err_msg=f"value {v}, h={h + 1}")
    assert filled > 10
    # a season found online: asleep experts stay asleep (the EWA leader rule charges them)
    for stored, learned in _learned_forecasts(Forecaster(horizon=4, lstm=False), y):
        for h, f in learned.items():
            np.testing.assert_array_equal(f, stored[h])


def test_holt_winters_trend_rate_keeps_long_seasons_forecastable():
    """River's rates are forecastable up to a season of 24 steps; beyond, the trend rate is
    halved until the discount matrix has no eigenvalue outside the unit circle, and the
    experts no longer diverge on a half-hourly series with a daily season (they did: levels at
    1e6 times the data's)."""
    assert all(E.holt_winters_trend_rate(m) == E.HW_BETA for m in (2, 4, 7, 12, 24))
    for m in (25, 48, 96, 128):
        beta = E.holt_winters_trend_rate(m)
        assert 0.0 < beta < E.HW_BETA and E._forecastable(E.HW_ALPHA, beta, E.HW_GAMMA, E.HW_PHI, m)
        assert not E._forecastable(E.HW_ALPHA, 2 * beta, E.HW_GAMMA, E.HW_PHI, m)
    for m in (129, 288):   # beyond the exact check: the trend is not learned, which is forecastable
        assert E.holt_winters_trend_rate(m) == 0.0 and E._forecastable(E.HW_ALPHA, 0.0, E.HW_GAMMA, E.HW_PHI, m)
    rng = np.random.default_rng(2)
    t = np.arange(6000)
    y = 15000 + 8000 * np.sin(2 * np.pi * t / 48) + 2000 * np.sin(2 * np.pi * t / 336) + rng.normal(0, 800, t.size)
    model = Forecaster(horizon=2, season=48, experts=("last_value", "holt_winters", "holt_winters_log"),
                       ar_orders=(), lstm=False)
    for v in y:
        model.learn_one(float(v))
    for name in ("holt_winters", "holt_winters_log"):
        got = model.expert_forecasts()[name]
        assert np.isfinite(got).all() and np.abs(got - 15000).max() < 30000, name


def test_a_diverged_expert_stays_a_bad_expert(monkeypatch):
    """An expert whose forecasts run away (here Holt-Winters' multiplied by 1.05 ** n) is
    clipped to 100 spreads of the values kept: the engine's forecasts stay close to those it
    makes when that expert is sound. Unclipped, a tiny weight times a huge forecast was the
    whole forecast (MAE 1e10 and 3e7 here; NYC taxi's one-step MAE 3e27 before Holt-Winters'
    rates were kept forecastable): ML-Poly's linearised regret rewards a forecast on the right
    side of the value however far it is."""
    import streamlstm.forecasting.engine as G

    y = _seasonal_series(400)

    def mae(h):
        model = Forecaster(horizon=2, season=12, lstm=False)
        errors = []
        for i, v in enumerate(y):
            if i >= 50:
                errors.append(abs(v - model.forecast()[h]))
            model.learn_one(v)
        return float(np.mean(errors)), model

    plain = [mae(h)[0] for h in (0, 1)]
    sound = G.holt_winters_forecast

    def runaway(state, indices, n, horizon, relative, out):
        sound(state, indices, n, horizon, relative, out)
        out *= 1.05 ** n

    monkeypatch.setattr(G, "holt_winters_forecast", runaway)
    with np.errstate(over="ignore"):
        for h in (0, 1):
            diverged, model = mae(h)
            assert diverged < 1.5 * plain[h], (h, diverged, plain[h])
    kept = np.asarray(y[-model._capacity:])
    assert model.expert_forecasts()["holt_winters"].max() <= kept.max() + 100 * max(np.ptp(kept), np.abs(kept).max())
