"""Calibrated intervals and anomaly scores through the River estimators.

The coverage tolerance is that of ``tests/test_calibration.py``: after a 10% warm-up, within
±1.5 points of nominal on series of 500 rows or more, inside the 95% binomial band on shorter
ones (times a stated slack for a known shortfall).
"""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest

pytest.importorskip("river")
pd = pytest.importorskip("pandas")
from river import conf, datasets  # noqa: E402

from streamlstm.adapters.river import LSTMAnomalyDetector, LSTMForecaster, LSTMRegressor  # noqa: E402
from streamlstm.anomaly import DEFAULT_THRESHOLD, AnomalyDetector, AnomalyScorer  # noqa: E402

LEVELS = (0.8, 0.9, 0.95)


def tolerance(level: float, n_rows: int, n_scored: int, slack: float = 1.0) -> float:
    if n_rows >= 500:
        return 0.015 * slack
    return 1.96 * math.sqrt(level * (1 - level) / n_scored) * slack


# ----------------------------------------------------------------------------- regressor
@pytest.mark.parametrize("level", LEVELS)
def test_regressor_interval_coverage_on_trump_approval(level: float) -> None:
    rows = list(datasets.TrumpApproval())
    model = LSTMRegressor(interval_level=level, seed=42)
    hits = []
    for x, y in rows:
        interval = model.predict_one(x, with_interval=True)
        if interval is not None:
            assert isinstance(interval, conf.Interval) and interval.lower <= model.predict_one(x) <= interval.upper
            hits.append(y in interval)
        model.learn_one(x, y)
    scored = hits[len(rows) // 10:]
    cov = float(np.mean(scored))
    assert abs(cov - level) <= tolerance(level, len(rows), len(scored)), f"coverage {cov:.4f} at {level}"


def _trump_frame() -> tuple[pd.DataFrame, pd.Series]:
    rows = list(datasets.TrumpApproval())
    return pd.DataFrame([x for x, _ in rows]), pd.Series([y for _, y in rows])


def test_regressor_learn_many_feeds_the_calibrator_as_learn_one() -> None:
    X, Y = _trump_frame()
    Y = Y.copy()
    Y.iloc[[5, 300, 301]] = np.nan  # events without a label: advance only, no residual
    single, block = LSTMRegressor(seed=1), LSTMRegressor(seed=1)
    for rec, y in zip(X.to_dict("records"), Y):
        single.learn_one(rec, None if np.isnan(y) else y)
    for start in range(0, len(X), 250):
        block.learn_many(X.iloc[start:start + 250], Y.iloc[start:start + 250])
    assert single._calibrator.n_seen() == block._calibrator.n_seen() == Y.notna().sum() - 1
    assert np.array_equal(single._calibrator.state, block._calibrator.state)
    x = X.iloc[-1].to_dict()
    assert single.predict_one(x, with_interval=True) == block.predict_one(x, with_interval=True)


def test_regressor_intervals_survive_pickle_clone_and_deepcopy() -> None:
    model = LSTMRegressor(interval_level=0.8, seed=3)
    rows = list(datasets.TrumpApproval().take(200))
    for x, y in rows[:150]:
        model.learn_one(x, y)
    twins = [pickle.loads(pickle.dumps(model)), copy.deepcopy(model), model.clone(include_attributes=True)]
    for x, y in rows[150:]:
        want = model.predict_one(x, with_interval=True)
        assert all(t.predict_one(x, with_interval=True) == want for t in twins)
        for m in (model, *twins):
            m.learn_one(x, y)
    fresh = model.clone()
    assert fresh.interval_level == 0.8 and fresh._calibrator.n_seen() == 0


def test_regressor_without_intervals_behaves_as_before() -> None:
    """interval_level=None: no calibrator, the same predictions as with one; asking for an
    interval then says which setting to change."""
    plain, calibrated = LSTMRegressor(interval_level=None, seed=5), LSTMRegressor(seed=5)
    for x, y in datasets.TrumpApproval().take(300):
        assert plain.predict_one(x) == calibrated.predict_one(x)
        plain.learn_one(x, y)
        calibrated.learn_one(x, y)
    assert plain._calibrator is None
    with pytest.raises(ValueError, match=r"interval_level=0\.9"):
        plain.predict_one(x, with_interval=True)
    for bad in (0.0, 1.0, 90, "0.9", True):
        with pytest.raises(ValueError, match="interval_level"):
            LSTMRegressor(interval_level=bad)


def test_regressor_interval_before_any_target_is_none() -> None:
    model = LSTMRegressor()
    assert model.predict_one({"a": 1.0}, with_interval=True) is None


# ---------------------------------------------------------------------------- forecaster
def forecaster_coverage(y: list[float], model: LSTMForecaster, horizon: int) -> tuple[np.ndarray, int]:
    """Coverage per step of the intervals of forecast(horizon) made after each value, after a
    10% warm-up: step s of the forecast made after y_t is scored against y_{t+1+s}."""
    made: list[list[conf.Interval]] = []
    hits: list[list[bool]] = [[] for _ in range(horizon)]
    warm = len(y) // 10
    for t, value in enumerate(y):
        for s in range(horizon):
            origin = t - 1 - s
            if origin >= warm:
                hits[s].append(value in made[origin][s])
        model.learn_one(value)
        made.append(model.forecast(horizon, with_interval=True))
    return np.array([np.mean(h) for h in hits]), len(hits[-1])


@pytest.mark.parametrize("level", LEVELS)
def test_forecaster_interval_coverage_per_step_waterflow(level: float) -> None:
    y = [v for _, v in datasets.WaterFlow()]
    cov, n = forecaster_coverage(y, LSTMForecaster(horizon=3, interval_level=level, seed=0), 3)
    assert (np.abs(cov - level) <= tolerance(level, len(y), n)).all(), f"coverage per step {cov} at {level}"


# 127 scored rows: the binomial band
@pytest.mark.parametrize("level", LEVELS)
def test_forecaster_interval_coverage_per_step_airline(level: float) -> None:
    y = [v for _, v in datasets.AirlinePassengers()]
    model = LSTMForecaster(horizon=3, exogenous=False, interval_level=level, seed=42)
    cov, n = forecaster_coverage(y, model, 3)
    assert (np.abs(cov - level) <= tolerance(level, len(y), n)).all(), f"coverage per step {cov} at {level}"


def test_forecaster_intervals_are_the_engines() -> None:
    """River's intervals are the core engine's (``Forecaster(interval_levels=[level])``,
    ``forecast_interval``) to the bit; asking for intervals does not change the forecasts;
    a step with no residual yet has an unbounded interval (nothing is known of its errors)."""
    from streamlstm import Forecaster

    model = LSTMForecaster(horizon=3, seed=0)
    plain = LSTMForecaster(horizon=3, interval_level=None, seed=0)
    core = Forecaster(horizon=3, seed=0, interval_levels=[0.9])
    assert model.forecast(3, with_interval=True) == [conf.Interval(-math.inf, math.inf)] * 3
    for t, (_, y) in enumerate(datasets.WaterFlow().take(300)):
        if t == 1:  # one value seen: step 1 has had no residual yet either
            assert model.forecast(1, with_interval=True) == [conf.Interval(-math.inf, math.inf)]
        model.learn_one(y)
        plain.learn_one(y)
        core.learn_one(y)
    point, lower, upper = core.forecast_interval()
    assert model.forecast(3) == plain.forecast(3) == point.tolist()
    assert model.forecast(3, with_interval=True) == [conf.Interval(lo, hi) for lo, hi in zip(lower[0], upper[0])]
    assert model.forecast(2, with_interval=True) == model.forecast(3, with_interval=True)[:2]
    assert all(i.lower < p < i.upper for i, p in zip(model.forecast(3, with_interval=True), point))


def test_forecaster_intervals_round_trip_and_refuse_what_is_not_calibrated() -> None:
    model = LSTMForecaster(horizon=2, seed=0)
    for _, y in datasets.WaterFlow().take(100):
        model.learn_one(y)
    model.learn_one(None)  # a missing value: nothing is stepped, nothing scored
    twin = pickle.loads(pickle.dumps(model))
    assert twin.forecast(2, with_interval=True) == model.forecast(2, with_interval=True)
    for m in (model, twin):
        m.learn_one(50.0)
    assert twin.engine.to_bytes() == model.engine.to_bytes()  # the calibration included
    assert twin.forecast(2, with_interval=True) == model.forecast(2, with_interval=True)
    with pytest.raises(ValueError, match=r"horizon=3"):
        model.forecast(3, with_interval=True)
    with pytest.raises(ValueError, match="interval_level"):
        LSTMForecaster(interval_level=None).forecast(1, with_interval=True)
    with pytest.raises(ValueError, match="horizon"):
        LSTMForecaster(horizon=0)


# ------------------------------------------------------------------------------- anomaly
def _nab_like(n: int = 1500) -> np.ndarray:
    rng = np.random.default_rng(7)
    y = 50.0 + 5.0 * np.sin(np.arange(n) / 12.0) + rng.normal(0, 0.5, n)
    y[int(0.6 * n)] += 15.0
    y[int(0.8 * n):] += 8.0
    return y


@pytest.mark.parametrize("series", ["waterflow", "synthetic"])
def test_anomaly_score_equals_the_core_detector(series: str) -> None:
    y = [v for _, v in datasets.WaterFlow()] if series == "waterflow" else _nab_like().tolist()
    river_model, core = LSTMAnomalyDetector(), AnomalyDetector()
    ours, theirs = [], []
    for v in y:
        ours.append(river_model.score_one({"value": v}))
        river_model.learn_one({"value": v})
        theirs.append(core.score_one(v))
    assert ours == theirs
    s = np.array(ours)
    assert ((s >= 0.0) & (s <= 1.0)).all() and s.max() >= DEFAULT_THRESHOLD


def test_anomaly_score_one_is_pure_and_learn_one_alone_gives_the_same() -> None:
    """learn_one adopts what score_one computed for the event; without a score_one before it
    (or after an unrelated one) it computes the same itself."""
    y = _nab_like(600)
    scoring, silent = LSTMAnomalyDetector(seed=2), LSTMAnomalyDetector(seed=2)
    for t, v in enumerate(y):
        s = scoring.score_one({"value": v})
        assert scoring.score_one({"value": v}) == s
        if t % 7 == 0:
            scoring.score_one({"value": v + 1.0})  # a look at another value in between
            scoring.score_one({"value": v})
        scoring.learn_one({"value": v})
        silent.learn_one({"value": v})
    assert np.array_equal(scoring._scorer.state, silent._scorer.state)
    assert scoring.score_one({"value": 99.0}) == silent.score_one({"value": 99.0})


def test_anomaly_score_of_several_features_is_their_largest_calibrated_score() -> None:
    rng = np.random.default_rng(3)
    model = LSTMAnomalyDetector(hidden=4, seed=0)
    reference = AnomalyScorer(n_keys=2)
    for t in range(400):
        event = {"a": float(rng.normal()), "b": float(10 + rng.normal())}
        if t == 350:
            event["b"] += 12.0
        pred = model._prediction
        s = model.score_one(event)
        model.learn_one(event)
        if pred is None:
            want = max(reference.score(event["a"], event["a"], 0), reference.score(event["b"], event["b"], 1))
        else:
            want = max(reference.score(event["a"], float(pred[0]), 0), reference.score(event["b"], float(pred[1]), 1))
        assert s == want, t
        if t == 350:
            assert s >= DEFAULT_THRESHOLD


def test_anomaly_detector_round_trips_and_keeps_0_1_scoring_on_request() -> None:
    y = _nab_like(400)
    model = LSTMAnomalyDetector()
    for v in y[:300]:
        model.score_one({"value": v})
        model.learn_one({"value": v})
    twins = [pickle.loads(pickle.dumps(model)), copy.deepcopy(model), model.clone(include_attributes=True)]
    for v in y[300:]:
        want = model.score_one({"value": v})
        assert all(t.score_one({"value": v}) == want for t in twins)
        for m in (model, *twins):
            m.learn_one({"value": v})
    assert model.clone().scoring == "calibrated"
    robust = LSTMAnomalyDetector(scoring="robust", grace_period=5)
    for v in y[:50]:
        robust.learn_one({"value": v})
    assert robust.score_one({"value": 500.0}) > 1.0  # unbounded, not a calibrated score
    with pytest.raises(ValueError, match="scoring"):
        LSTMAnomalyDetector(scoring="rank")
