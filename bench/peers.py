"""Peer runners for the River-adapter benchmark (accuracy and per-event speed).

This module depends on River and the standard library only, so that the very same protocol
code runs in the dev venv (river 0.26) and in the deep-river venv (river 0.25, see
``bench/setup_deepriver_venv.sh``); ``bench/deepriver_runner.py`` imports it from there.

Protocol (identical for every model, ours included)
---------------------------------------------------
Forecasting series: River's ``AirlinePassengers`` (monthly, horizon h=12, season 12) and
``WaterFlow`` (hourly, h=24, season 24). Models are univariate: they only see the target
values ``y_0 .. y_{n-1}`` (no timestamps, no exogenous features; ``xs=None``). A warm-up of
``w = h`` values is learned unscored (as in ``river.evaluate.evaluate``). Then for every
``t = w .. n-1``, with the model having learned exactly ``y_0 .. y_{t-1}``:

* one-step MAE: ``|y_t - forecast(1)[0]|``, averaged over the ``n - w`` steps (prequential).
* horizon MAE: when ``t + h <= n`` also ``f = forecast(h)`` and the errors
  ``|y_{t+k} - f[k]|`` for ``k = 0 .. h-1``; averaged over all ``(n - h - w + 1) * h`` pairs
  (= the mean over horizons of River's per-horizon ``HorizonMetric`` MAEs).

then ``learn_one(y_t)``. Note: ``river.evaluate.evaluate`` (0.26.1) calls ``forecast`` *before*
learning the current value but scores it against the ``h`` values *after* it, i.e. its "+1" is
really two steps ahead; we use the aligned version above (``river_horizon_mae`` reproduces
River's own number for cross-checking).

Regression stream: ``TrumpApproval`` (1001 rows, 6 numeric features, target
``five_thirty_eight``): ``river.evaluate.progressive_val_score`` with ``metrics.MAE()``
(predict_one then learn_one on every row; a ``None`` prediction is not scored).
"""

from __future__ import annotations

import collections
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

from river import base, datasets, evaluate, linear_model, metrics, preprocessing, time_series

FORECAST_DATASETS = {"AirlinePassengers": 12, "WaterFlow": 24}  # name -> horizon (= season)
REGRESSION_DATASETS = ("TrumpApproval",)
DATASETS = tuple(FORECAST_DATASETS) + REGRESSION_DATASETS


def load_series(name: str) -> list[float]:
    return [float(y) for _, y in getattr(datasets, name)()]


def load_rows(name: str = "TrumpApproval") -> list[tuple[dict, float]]:
    return [(dict(x), float(y)) for x, y in getattr(datasets, name)()]


# --------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------


def forecast_metrics(model, series: list[float], horizon: int, warmup: int | None = None) -> dict:
    """One-step and horizon MAE of a River-style forecaster (``learn_one(y)``, ``forecast(h)``)."""
    w = horizon if warmup is None else warmup
    n = len(series)
    for y in series[:w]:
        model.learn_one(y)
    one_abs = 0.0
    one_n = 0
    hor_abs = 0.0
    hor_n = 0
    per_h = [0.0] * horizon
    n_steps = 0
    t0 = time.perf_counter()
    for t in range(w, n):
        y = series[t]
        one_abs += abs(y - float(model.forecast(1)[0]))
        one_n += 1
        if t + horizon <= n:
            f = model.forecast(horizon)
            for k in range(horizon):
                e = abs(series[t + k] - float(f[k]))
                hor_abs += e
                per_h[k] += e
            hor_n += horizon
            n_steps += 1
        model.learn_one(y)
    return {
        "one_step_mae": one_abs / one_n,
        "horizon_mae": hor_abs / hor_n,
        "horizon_mae_per_h": [s / n_steps for s in per_h],
        "n_one_step": one_n,
        "n_horizon_steps": n_steps,
        "seconds": time.perf_counter() - t0,
    }


def river_horizon_mae(model, dataset_name: str) -> float:
    """River's own ``evaluate.evaluate`` (mean over horizons), for cross-checking only."""
    h = FORECAST_DATASETS[dataset_name]
    ds: list[tuple[dict, float]] = [({}, y) for y in load_series(dataset_name)]  # univariate, like forecast_metrics
    m = evaluate.evaluate(ds, model, metrics.MAE(), horizon=h, agg_func=statistics.mean)
    return m.get()


def regression_metrics(model, dataset_name: str = "TrumpApproval") -> dict:
    t0 = time.perf_counter()
    mae = evaluate.progressive_val_score(getattr(datasets, dataset_name)(), model, metrics.MAE())
    return {"mae": mae.get(), "n": mae._n if hasattr(mae, "_n") else None,
            "seconds": time.perf_counter() - t0}


def time_per_event(make_model: Callable[[], Any], rows, repeats: int = 5, warm: int = 100) -> dict:
    """Per-event adapter latency on dict rows, in microseconds.

    Each repeat builds a fresh model and streams all rows: ``predict_one(x)`` then
    ``learn_one(x, y)``. The first ``warm`` rows are untimed (JIT compilation, lazy
    initialisation); every later event is timed alone with ``perf_counter_ns``. Per repeat we
    take the median event time; reported is the median over repeats (and the min/max of the
    per-repeat medians).
    """
    pred_meds, both_meds = [], []
    for _ in range(repeats):
        model = make_model()
        for x, y in rows[:warm]:
            model.predict_one(x)
            model.learn_one(x, y)
        pred, both = [], []
        clock = time.perf_counter_ns
        for x, y in rows[warm:]:
            a = clock()
            model.predict_one(x)
            b = clock()
            model.learn_one(x, y)
            c = clock()
            pred.append(b - a)
            both.append(c - a)
        pred_meds.append(statistics.median(pred) / 1e3)
        both_meds.append(statistics.median(both) / 1e3)
    return {
        "learn_predict_us": statistics.median(both_meds),
        "predict_us": statistics.median(pred_meds),
        "learn_predict_us_range": [min(both_meds), max(both_meds)],
        "predict_us_range": [min(pred_meds), max(pred_meds)],
        "repeats": repeats,
        "events_timed": len(rows) - warm,
    }


# --------------------------------------------------------------------------------------------
# Models that are not in River as such
# --------------------------------------------------------------------------------------------


class LastValue(time_series.base.Forecaster):
    """Naive forecaster: every horizon gets the last seen value."""

    def __init__(self):
        self.last = None

    def learn_one(self, y, x=None):
        self.last = y

    def forecast(self, horizon, xs=None):
        return [self.last if self.last is not None else 0.0] * horizon


class LastTarget(base.Regressor):
    """Naive regressor: predicts the previous row's target (None before the first row)."""

    def __init__(self):
        self.last = None

    def learn_one(self, x, y):
        self.last = y

    def predict_one(self, x):
        return self.last


class LagRegressorForecaster(time_series.base.Forecaster):
    """Turns a River regressor into a recursive forecaster on lag features.

    Features at step t are ``{"lag_k": y_{t-k}}`` for k = 1 .. n_lags (missing lags are left
    out, which River's StandardScaler/LinearRegression treat as 0). ``forecast(h)`` feeds its own
    predictions back as lags.
    """

    def __init__(self, regressor, n_lags: int):
        self.regressor = regressor
        self.n_lags = n_lags
        self.hist: collections.deque = collections.deque(maxlen=n_lags)  # most recent first

    def _features(self, hist):
        return {f"lag_{k + 1}": v for k, v in enumerate(hist)}

    def learn_one(self, y, x=None):
        if self.hist:
            self.regressor.learn_one(self._features(self.hist), y)
        self.hist.appendleft(y)

    def forecast(self, horizon, xs=None):
        hist = collections.deque(self.hist, maxlen=self.n_lags)
        out = []
        for _ in range(horizon):
            p = self.regressor.predict_one(self._features(hist)) if hist else 0.0
            out.append(p)
            hist.appendleft(p)
        return out


class ScaledForecaster(time_series.base.Forecaster):
    """Online z-scoring of the target around any forecaster (for peers without target scaling).

    Running mean/variance (Welford) are updated with y first, then the wrapped forecaster learns
    ``(y - mean) / std``; forecasts are mapped back with the current statistics.
    """

    def __init__(self, forecaster):
        self.forecaster = forecaster
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0

    @property
    def std(self):
        return math.sqrt(self.m2 / self.n) if self.n > 1 and self.m2 > 0 else 1.0

    def learn_one(self, y, x=None):
        self.n += 1
        d = y - self.mean
        self.mean += d / self.n
        self.m2 += d * (y - self.mean)
        self.forecaster.learn_one((y - self.mean) / self.std, x)

    def forecast(self, horizon, xs=None):
        f = self.forecaster.forecast(horizon, xs)
        return [self.mean + self.std * v for v in f]


# --------------------------------------------------------------------------------------------
# River peers (settings from the installed docstrings)
# --------------------------------------------------------------------------------------------


def snarimax(dataset: str):
    # river/time_series/snarimax.py docstring: SNARIMAX(p=period, d=1, q=period, m=period, sd=1),
    # period = 12 on AirlinePassengers; we use period = the season (12, or 24 for hourly WaterFlow).
    m = FORECAST_DATASETS[dataset]
    return time_series.SNARIMAX(p=m, d=1, q=m, m=m, sd=1)


def holt_winters(dataset: str):
    # river/time_series/holt_winters.py docstring:
    # HoltWinters(alpha=0.3, beta=0.1, gamma=0.6, seasonality=12, multiplicative=True);
    # seasonality = the season (12, or 24 for WaterFlow).
    return time_series.HoltWinters(alpha=0.3, beta=0.1, gamma=0.6,
                                   seasonality=FORECAST_DATASETS[dataset], multiplicative=True)


def linreg_lags(dataset: str):
    # StandardScaler | LinearRegression (River defaults: SGD lr 0.01, intercept_lr 0.01) on
    # lags 1..season of the target (12 lags for AirlinePassengers, 24 for WaterFlow).
    return LagRegressorForecaster(preprocessing.StandardScaler() | linear_model.LinearRegression(),
                                  n_lags=FORECAST_DATASETS[dataset])


def linreg_regressor():
    return preprocessing.StandardScaler() | linear_model.LinearRegression()


class Peer:
    """One row of the accuracy table.

    ``forecaster(dataset_name)`` -> fresh River-style forecaster, ``regressor()`` -> fresh River
    regressor; either may be None (cell shown as "-"). ``speed()`` -> fresh regressor for the
    per-event timing (None = not timed). ``note`` goes under the tables.
    """

    def __init__(self, name, forecaster=None, regressor=None, speed=None, note=""):
        self.name = name
        self.forecaster = forecaster
        self.regressor = regressor
        self.speed = speed
        self.note = note

    def accuracy(self, dataset: str) -> dict | None:
        if dataset in FORECAST_DATASETS:
            if self.forecaster is None:
                return None
            return forecast_metrics(self.forecaster(dataset), load_series(dataset),
                                    FORECAST_DATASETS[dataset])
        if self.regressor is None:
            return None
        return regression_metrics(self.regressor(), dataset)

    def timing(self, repeats: int = 5) -> dict | None:
        if self.speed is None:
            return None
        return time_per_event(self.speed, load_rows("TrumpApproval"), repeats=repeats)


RIVER_PEERS = [
    Peer("last value", forecaster=lambda ds: LastValue(), regressor=LastTarget,
         note="forecast = last seen value; regression = previous row's target (first row unscored)"),
    Peer("River SNARIMAX", forecaster=snarimax,
         note="SNARIMAX(p=m, d=1, q=m, m=m, sd=1), m = 12 / 24 (docstring settings)"),
    Peer("River HoltWinters", forecaster=holt_winters,
         note="HoltWinters(alpha=0.3, beta=0.1, gamma=0.6, seasonality=m, multiplicative=True)"),
    Peer("River StandardScaler | LinearRegression", forecaster=linreg_lags,
         regressor=linreg_regressor, speed=linreg_regressor,
         note="forecasting: recursive on lags 1..m of y; TrumpApproval: the 6 given features"),
]
