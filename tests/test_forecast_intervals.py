"""Prediction intervals of the forecasting engine (``Forecaster(interval_levels=...)``):
the residuals it calibrates on, keys, horizon steps, persistence, cost when not asked."""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamlstm import Forecaster, persistence
from streamlstm.calibration import OnlineCalibrator
from streamlstm.forecasting.intervals import ENGINE_INTEGRATOR_BAND, ENGINE_INTEGRATOR_SATURATION, ForecastCalibration

LEVELS = (0.8, 0.9, 0.95)


def series(n: int, seed: int = 0, key_shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 10.0 + key_shift + np.sin(t / 4.0) + 0.3 * rng.normal(size=n)


def test_one_step_bounds_are_a_calibrator_fed_the_forecast_errors() -> None:
    """Independent check: an OnlineCalibrator fed ``y - forecast()`` by hand (one key, H=1,
    no features: the issued forecast is exactly the one calibrated) gives the same bounds,
    to the bit."""
    model = Forecaster(interval_levels=LEVELS, lstm=False)
    cal = OnlineCalibrator(levels=LEVELS, pooled=True, integrator_saturation=ENGINE_INTEGRATOR_SATURATION,
                           integrator_band=ENGINE_INTEGRATOR_BAND)   # one stream: the engine's dead band
    y = series(400)
    point = None
    for t, v in enumerate(y):
        if point is not None:
            cal.update(float(v - point))
        model.learn_one(float(v))
        p, lo, hi = model.forecast_interval()
        point = float(p[0])
        assert p[0] == model.forecast()[0]
        if t == 0:  # no residual yet: nothing is known of the errors
            assert np.isnan(lo).all() and np.isnan(hi).all()
            continue
        want_lo, want_hi = cal.interval(point)
        assert (lo[:, 0] == want_lo).all() and (hi[:, 0] == want_hi).all(), t


def test_the_dead_band_serves_one_stream_and_goes_with_a_second() -> None:
    """One stream: the engine's calibrator has the dead band; the first value of a second key
    drops it (the panel's late feedback needs the integrator undamped), also after a reload."""
    from streamlstm._kernels import calibration as K

    model = Forecaster(interval_levels=LEVELS, lstm=False)
    for v in series(50):
        model.learn_one(float(v))
    params = model._calibration.calibrator.params
    assert ENGINE_INTEGRATOR_BAND > 0 and params[K.P_BAND] == ENGINE_INTEGRATOR_BAND
    assert Forecaster.from_bytes(model.to_bytes())._calibration.calibrator.params[K.P_BAND] == ENGINE_INTEGRATOR_BAND
    model.learn_one(3.0, key="other")
    assert model._calibration.calibrator.params[K.P_BAND] == 0.0 == model._calibration.calibrator.integrator_band
    assert Forecaster.from_bytes(model.to_bytes())._calibration.calibrator.params[K.P_BAND] == 0.0


def test_a_panel_is_calibrated_on_the_forecasts_and_bounds_as_issued() -> None:
    """Interleaved keys (a panel): each key's forecast and bounds are issued after its value,
    then the other keys move the shared weights and trackers before its next value. The
    calibrator learns from what was issued: the residual of the issued forecast, the misses of
    the issued bounds, steps divided by the tracker steps since (checked by hand with the
    kernel, from ``forecast_interval`` right after each value)."""
    from streamlstm._kernels import calibration as K

    model = Forecaster(interval_levels=LEVELS, lstm=False)
    cal = OnlineCalibrator(levels=LEVELS, n_keys=3, pooled=True, integrator_saturation=ENGINE_INTEGRATOR_SATURATION)
    issued: dict = {}
    J = len(LEVELS)
    for t in range(120):
        for k in range(3):
            v = float(series(120, k, key_shift=5.0 * k)[t])
            if k in issued:
                point, lo, hi, steps = issued[k]
                misses = np.empty((1, 2 * J + 1))
                if np.isnan(lo).any():
                    misses[0, 0] = np.nan
                else:
                    misses[0, :J], misses[0, J:2 * J] = v < lo, v > hi
                    misses[0, -1] = cal.state[-1, 0, K.F_N] - steps + 1.0
                K.observe_issued(cal.state, cal.params, k, np.array([v - point]), misses)
            model.learn_one(v, key=k)
            point, lo, hi = model.forecast_interval(k)
            issued[k] = (float(point[0]), lo[:, 0], hi[:, 0], cal.state[-1, 0, K.F_N])
            if t:
                want_lo, want_hi = cal.interval(float(point[0]), k)
                assert (lo[:, 0] == want_lo).all() and (hi[:, 0] == want_hi).all(), (t, k)


def test_an_interval_asked_when_the_value_is_due_is_the_one_it_is_scored_against() -> None:
    """A panel's user asks ``forecast_interval(key)`` when the key's value is due (after the
    other keys' values): that forecast and interval (the pooled autoregressions and trackers of
    that moment) are what the value is scored against, with no delay (checked by hand with the
    kernel); a key asked for twice is scored against the later answer; a save between the
    question and the value resumes bit-identically."""
    from streamlstm._kernels import calibration as K

    model = Forecaster(interval_levels=LEVELS, lstm=False)
    cal = OnlineCalibrator(levels=LEVELS, n_keys=3, pooled=True, integrator_saturation=ENGINE_INTEGRATOR_SATURATION)
    J = len(LEVELS)
    for t in range(100):
        for k in range(3):
            v = float(series(100, k, key_shift=5.0 * k)[t])
            if t:
                if t % 7 == 0:   # asked early too: the later answer counts
                    model.forecast_interval(k)
                point, lo, hi = model.forecast_interval(k)
                if t == 60 and k == 1:   # saved between the question and the value
                    model = Forecaster.from_bytes(model.to_bytes())
                if t > 1:
                    want_lo, want_hi = cal.interval(float(point[0]), k)
                    assert (lo[:, 0] == want_lo).all() and (hi[:, 0] == want_hi).all(), (t, k)
                misses = np.empty((1, 2 * J + 1))
                if np.isnan(lo).any():
                    misses[0, 0] = np.nan
                else:
                    misses[0, :J], misses[0, J:2 * J] = v < lo[:, 0], v > hi[:, 0]
                    misses[0, -1] = 1.0   # asked just now: no tracker step since
                K.observe_issued(cal.state, cal.params, k, np.array([v - point[0]]), misses)
            model.learn_one(v, key=k)
    assert np.array_equal(model._calibration.calibrator.state[:3], cal.state[:3])
    assert np.array_equal(model._calibration.calibrator.state[-1], cal.state[-1])


def test_each_horizon_step_is_calibrated_on_its_own_residuals() -> None:
    """Step h of a key sees the residuals of the forecasts made h steps before each value;
    a step has bounds (not NaN) from its first residual on, and wider steps are wider on
    a random walk (errors grow with the horizon)."""
    rng = np.random.default_rng(3)
    y = np.cumsum(rng.normal(size=1500)) + 100.0
    model = Forecaster(horizon=4, interval_levels=[0.9], lstm=False, season=None)
    for t, v in enumerate(y):
        model.learn_one(float(v))
        _, lo, _ = model.forecast_interval()
        assert np.isnan(lo[0]).tolist() == [h > t for h in range(1, 5)], t  # step h: first residual at t = h
    _, lo, hi = model.forecast_interval()
    width = hi[0] - lo[0]
    assert (np.diff(width) > 0).all(), width
    counts = [int(model._calibration.calibrator.state[0, s, 0]) for s in range(4)]
    assert counts == [1500 - h for h in range(1, 5)]


def test_coverage_on_a_synthetic_shift_per_step() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    noise = np.where(np.arange(n) < 1500, 1.0, 3.0) * rng.normal(size=n)
    y = np.sin(np.arange(n) / 10.0) + np.where(np.arange(n) >= 1000, 20.0, 0.0) + noise
    H = 2
    model = Forecaster(horizon=H, interval_levels=LEVELS, lstm=False)
    issued: list = []
    hits = [[], []]
    for t, v in enumerate(y):
        for h in range(1, H + 1):
            if t - h >= 0 and t >= n // 10:
                _, lo, hi = issued[t - h]
                hits[h - 1].append((lo[:, h - 1] <= v) & (v <= hi[:, h - 1]))
        model.learn_one(float(v))
        issued.append(model.forecast_interval())
    for h in range(H):
        cov = np.mean(hits[h], axis=0)
        assert (np.abs(cov - np.array(LEVELS)) <= 0.015).all(), (h + 1, cov)


def test_keys_have_their_own_scale_and_save_load_resumes_bit_identically() -> None:
    model = Forecaster(horizon=2, interval_levels=[0.9], lstm_hidden=2)
    a, b = series(120, 1), 100.0 * series(120, 2)   # key "b" is a hundred times wider
    for t in range(100):
        model.learn_one(float(a[t]), key="a")
        model.learn_one(float(b[t]), key=7)
    _, lo_a, hi_a = model.forecast_interval("a")
    _, lo_b, hi_b = model.forecast_interval(7)
    assert 30.0 < (hi_b - lo_b)[0, 0] / (hi_a - lo_a)[0, 0] < 300.0
    twin = Forecaster.from_bytes(model.to_bytes())
    for t in range(100, 120):
        for m in (model, twin):
            m.learn_one(float(a[t]), key="a")
            m.learn_one(float(b[t]), key=7)
            m.learn_one(float(a[t]), key="new")
    for k in ("a", 7, "new", "unseen"):
        got, want = twin.forecast_interval(k), model.forecast_interval(k)
        for g, w in zip(got, want):
            assert np.array_equal(g, w, equal_nan=True), k
    assert (twin._calibration.calibrator.state == model._calibration.calibrator.state).all()


def test_without_levels_nothing_changes() -> None:
    """No levels: no calibrator, the file holds exactly what it held before intervals
    existed, and the point forecasts are the same as with intervals."""
    plain, calibrated = Forecaster(horizon=2), Forecaster(horizon=2, interval_levels=[0.9])
    for v in series(80):
        plain.learn_one(float(v))
        calibrated.learn_one(float(v))
    assert plain._calibration is None
    assert np.array_equal(plain.forecast(), calibrated.forecast_interval()[0])
    _, meta, arrays = persistence.loads(plain.to_bytes())
    assert "interval_levels" not in meta["params"] and not any(name.startswith("calibrator") for name in arrays)
    _, meta, arrays = persistence.loads(calibrated.to_bytes())
    assert meta["params"]["interval_levels"] == [0.9] and arrays["calibrator/state"].shape[0] == 2  # key + pool
    with pytest.raises(ValueError, match="interval_levels"):
        plain.forecast_interval()


@pytest.mark.parametrize("levels", [[1.0], [0.0], [-0.5], [math.nan]])
def test_bad_levels_are_named(levels: list) -> None:
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        Forecaster(interval_levels=levels)


def test_hostile_calibrator_state_is_refused_naming_it() -> None:
    model = Forecaster(interval_levels=[0.9], lstm=False)
    for v in series(30):
        model.learn_one(float(v))
    kind, meta, arrays = persistence.loads(model.to_bytes())
    for mutate, message in ((lambda a: a.__setitem__((0, 0, 0), -1.0), "count"),
                            (lambda a: a.__setitem__((0, 0, 1), -2.0), "scale"),
                            (lambda a: a.__setitem__((0, 0, a.shape[2] - 4), -2.0), "scale"),   # a candidate scale
                            (lambda a: a.__setitem__((0, 0, 3), math.nan), "non-finite")):
        bad = {k: v.copy() for k, v in arrays.items()}
        mutate(bad["calibrator/state"])
        with pytest.raises(persistence.FormatError, match=message):
            Forecaster.from_bytes(persistence.dumps(kind, meta, bad))
    bad = {k: v for k, v in arrays.items() if k != "calibrator/state"}
    with pytest.raises(persistence.FormatError, match="calibrator/state"):
        Forecaster.from_bytes(persistence.dumps(kind, meta, bad))
    bad = {k: v.copy() for k, v in arrays.items()}
    bad["calibrator/issued"][0, 0, 0, 0] = math.inf
    with pytest.raises(persistence.FormatError, match="calibrator/issued"):
        Forecaster.from_bytes(persistence.dumps(kind, meta, bad))
    bad = {k: v for k, v in arrays.items() if k != "calibrator/issued"}
    bad["calibrator/issued"] = arrays["calibrator/issued"][:, :, :1]
    with pytest.raises(persistence.FormatError, match="calibrator/issued"):
        Forecaster.from_bytes(persistence.dumps(kind, meta, bad))


def test_a_file_saved_before_the_candidate_scale_rates_loads_and_gives_the_same_intervals() -> None:
    """Files of the version before the candidate scale rates: their calibrator rows end with
    the integrals. Each candidate starts at the saved scale (no evidence yet): the next
    intervals are those the file's version gave."""
    old_model = Forecaster(horizon=3, interval_levels=[0.8, 0.95], lstm=False)
    old_model._calibration = ForecastCalibration([0.8, 0.95], 3, integrator_saturation=ENGINE_INTEGRATOR_SATURATION,
                                                 integrator_band=ENGINE_INTEGRATOR_BAND)
    old_model._calibration.calibrator = OnlineCalibrator(levels=[0.8, 0.95], horizon=3, pooled=True,
                                                         integrator_saturation=ENGINE_INTEGRATOR_SATURATION,
                                                         integrator_band=ENGINE_INTEGRATOR_BAND, scale_rates=())
    for v in series(80):
        old_model.learn_one(float(v))
    twin = Forecaster.from_bytes(old_model.to_bytes())
    cal = twin._calibration.calibrator
    assert cal.scale_rates and cal.state.shape[2] == old_model._calibration.calibrator.width + 2 * len(cal.scale_rates)
    point, lo, hi = twin.forecast_interval()
    old_point, old_lo, old_hi = old_model.forecast_interval()
    np.testing.assert_array_equal(point, old_point)
    np.testing.assert_array_equal(lo, old_lo)
    np.testing.assert_array_equal(hi, old_hi)
    for v in series(20, 5):
        twin.learn_one(float(v))
    assert np.isfinite(twin.forecast_interval()[1]).all()


def test_a_file_saved_before_the_integrator_and_the_issued_record_still_loads() -> None:
    """Files of the previous version: calibrator rows without the integrals, no record of the
    issued forecasts. They load (zero integrals; the next residual of each step is taken
    against the current bounds) and go on learning."""
    model = Forecaster(horizon=2, interval_levels=[0.9], lstm=False)
    for v in series(60):
        model.learn_one(float(v))
    kind, meta, arrays = persistence.loads(model.to_bytes())
    old = {k: v for k, v in arrays.items() if k != "calibrator/issued"}
    cal = model._calibration.calibrator
    base = cal.width - 2 * len(cal.levels) - 2 * len(cal.scale_rates)   # without the integrals and the candidate scales
    old["calibrator/state"] = arrays["calibrator/state"][..., :base]
    twin = Forecaster.from_bytes(persistence.dumps(kind, meta, old))
    state = twin._calibration.calibrator.state
    assert np.array_equal(state[..., :base], cal.state[..., :base])
    assert (state[..., base:base + 2] == 0).all()   # zero integrals
    for v in series(20, 5):
        twin.learn_one(float(v))
    _, lo, hi = twin.forecast_interval()
    assert np.isfinite(lo).all() and (lo < hi).all()
