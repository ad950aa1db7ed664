"""Forecasting benchmark: the core's ``streamlstm.Forecaster`` against simple and statistical peers.

    .venv/bin/python bench/bench_forecast.py                 # everything, writes bench/RESULTS.md
    .venv/bin/python bench/bench_forecast.py --no-write --only ours
    .venv/bin/python bench/bench_forecast.py --no-statsforecast

Series (all scored one step ahead, prequentially: forecast, then learn the value):

* River's AirlinePassengers and WaterFlow: the first h values (12 / 24) learned unscored
  (``bench/peers.py`` protocol); also scored at h = 12 / 24 (mean over horizons, every origin
  with a full horizon), with the season given to every model as in ``bench/bench_river.py``;
* River's TrumpApproval: a regression on its 6 features (first row unscored: nothing seen yet);
* the six series of ``../shared/data/series`` (``/work/shared/data/series`` as fallback), with
  the scoring rows of that folder's README: elnino t>=24, sunspots t>=20, nile t>=10,
  unemp t>=20, grunfeld from the 4th year of each firm, chick weights from the 3rd weighing of
  each chick (the two panels are keyed: every key is its own series).

Peers run in this process on the same rows. The results go to bench/RESULTS.md between
``<!-- forecast:start -->`` and ``<!-- forecast:end -->``, the raw numbers to
bench/forecast_results.json and the plot to bench/forecast_relative_mae.png.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import csv
import datetime as dt
import json
import math
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import _results

from streamlstm import Forecaster

RESULTS_JSON = HERE / "forecast_results.json"
PLOT = HERE / "forecast_relative_mae.png"


def data_dir() -> Path | None:
    for p in (ROOT.parent / "shared" / "data" / "series", Path("/work/shared/data/series")):
        if p.is_dir():
            return p
    return None


# ----------------------------------------------------------------------------------- series
# name -> dict(kind="series"|"keyed"|"regression", ...). "season" is what seasonal peers are
# given (None: they run without one); ours finds its own.
def load_all() -> dict[str, dict]:
    from river import datasets

    out: dict[str, dict] = {}
    out["airline"] = {"kind": "series", "y": [float(y) for _, y in datasets.AirlinePassengers()], "start": 12,
                      "season": 12, "horizon": 12}
    out["waterflow"] = {"kind": "series", "y": [float(y) for _, y in datasets.WaterFlow()], "start": 24,
                        "season": 24, "horizon": 24}
    rows = [(list(map(float, x.values())), float(y)) for x, y in datasets.TrumpApproval()]
    out["trump"] = {"kind": "regression", "rows": rows, "start": 1, "season": None}
    d = data_dir()
    if d is None:
        print("../shared/data/series not found: the six real series are left out", file=sys.stderr)
        return out

    def column(f, c):
        with open(d / f) as fh:
            return [float(r[c]) for r in csv.DictReader(fh)]

    out["elnino"] = {"kind": "series", "y": column("elnino.csv", "sst"), "start": 24, "season": 12}
    out["sunspots"] = {"kind": "series", "y": column("sunspots_yearly.csv", "sunactivity"), "start": 20,
                       "season": 11}
    out["nile"] = {"kind": "series", "y": column("nile.csv", "volume"), "start": 10, "season": None}
    out["unemp"] = {"kind": "series", "y": column("macro.csv", "unemp"), "start": 20, "season": None}

    def keyed(f, key, target, feats, start):
        with open(d / f) as fh:
            rows = [(r[key], float(r[target]), [float(r[c]) for c in feats]) for r in csv.DictReader(fh)]
        return {"kind": "keyed", "rows": rows, "start": start, "season": None}

    out["grunfeld"] = keyed("grunfeld.csv", "firm", "invest", ("value", "capital"), 3)
    out["chick"] = keyed("chickweights.csv", "chick", "weight", ("diet",), 2)
    return out


# ------------------------------------------------------------------------------------ peers
class LastValue:
    def __init__(self):
        self.last = None

    def learn_one(self, y, x=None):
        self.last = y

    def forecast(self, horizon):
        return [self.last if self.last is not None else 0.0] * horizon


class SeasonalNaive:
    def __init__(self, season):
        self.m = season
        self.ys: list[float] = []

    def learn_one(self, y, x=None):
        self.ys.append(y)

    def forecast(self, horizon):
        if not self.ys:
            return [0.0] * horizon
        if len(self.ys) < self.m:
            return [self.ys[-1]] * horizon
        return [self.ys[len(self.ys) - self.m * math.ceil(h / self.m) + h - 1] for h in range(1, horizon + 1)]


class OnlineAR:
    """AR(k) with intercept, least squares on every value seen, refit at every step (normal
    equations accumulated per order, solved afresh each step); the order k in 1..K is the one
    whose own one-step forecasts erred least so far (no hindsight)."""

    def __init__(self, max_order=12):
        self.K = max_order
        self.ys: list[float] = []
        self.err = np.zeros(max_order + 1)
        self.pending: dict[int, float] = {}
        self.coef: dict[int, np.ndarray] = {}
        self.xtx = {k: np.zeros((k + 1, k + 1)) for k in range(1, max_order + 1)}
        self.xty = {k: np.zeros(k + 1) for k in range(1, max_order + 1)}
        self.rows = dict.fromkeys(range(1, max_order + 1), 0)

    def _design(self, k, hist):
        return np.array([1.0, *hist[-1:-k - 1:-1]])

    def _predict(self, k, hist, horizon):
        h = list(hist)
        out = []
        c = self.coef[k]
        for _ in range(horizon):
            v = float(c @ self._design(k, h))
            out.append(v)
            h.append(v)
        return out

    def learn_one(self, y, x=None):
        for k, f in self.pending.items():
            self.err[k] += abs(y - f)
        for k in range(1, self.K + 1):
            if len(self.ys) >= k:
                z = self._design(k, self.ys)
                self.xtx[k] += np.outer(z, z)
                self.xty[k] += z * y
                self.rows[k] += 1
        self.ys.append(y)
        self.coef = {}
        for k in range(1, self.K + 1):
            if self.rows[k] >= k + 3:
                self.coef[k] = np.linalg.lstsq(self.xtx[k], self.xty[k], rcond=None)[0]
        self.pending = {k: self._predict(k, self.ys, 1)[0] for k in self.coef}

    def forecast(self, horizon):
        if not self.coef:
            return [self.ys[-1] if self.ys else 0.0] * horizon
        k = min(self.coef, key=lambda k: self.err[k])
        return self._predict(k, self.ys, horizon)


class RiverForecaster:
    """A River forecaster with learn_one(y)/forecast(h); non-finite forecasts count as diverged."""

    def __init__(self, model):
        self.model = model

    def learn_one(self, y, x=None):
        self.model.learn_one(y)

    def forecast(self, horizon):
        return [float(v) for v in self.model.forecast(horizon)]


def snarimax(season):
    from river import time_series

    if season:
        return RiverForecaster(time_series.SNARIMAX(p=2, d=0, q=0, m=season, sp=1, sd=1))
    return RiverForecaster(time_series.SNARIMAX(p=2, d=1, q=0))


def holt_winters(season, positive=True):
    from river import time_series

    if season:
        return RiverForecaster(time_series.HoltWinters(alpha=0.3, beta=0.1, gamma=0.6, seasonality=season,
                                                       multiplicative=positive))
    return RiverForecaster(time_series.HoltWinters(alpha=0.3, beta=0.1))


class StatsForecast:
    """A statsforecast model fitted on every value seen, refit every ``every`` values; between
    refits the fitted model is applied to the new values with ``forward`` (no refit)."""

    def __init__(self, make, every, min_values):
        self.make = make
        self.every = every
        self.min_values = min_values
        self.ys: list[float] = []
        self.model = None
        self.fitted_at = 0

    def learn_one(self, y, x=None):
        self.ys.append(y)
        if len(self.ys) >= self.min_values and (self.model is None or len(self.ys) - self.fitted_at >= self.every):
            try:
                self.model = self.make().fit(np.asarray(self.ys))
                self.fitted_at = len(self.ys)
            except Exception:  # noqa: BLE001 - a failed fit keeps the previous behaviour (last value)
                self.model = None

    def forecast(self, horizon):
        if self.model is None:
            return [self.ys[-1] if self.ys else 0.0] * horizon
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                f = self.model.forward(y=np.asarray(self.ys), h=horizon)["mean"]
            return [float(v) for v in f]
        except Exception:  # noqa: BLE001 - statsforecast raises many kinds on short or flat series
            return [self.ys[-1]] * horizon


def statsforecast_peers(season, every):
    try:
        from statsforecast.models import MSTL, AutoARIMA, AutoETS
    except ImportError:
        return {}
    m = season or 1
    peers = {
        f"statsforecast AutoETS (refit every {every})": lambda: StatsForecast(lambda: AutoETS(season_length=m), every, max(2 * m, 10)),
        f"statsforecast AutoARIMA (refit every {every})": lambda: StatsForecast(lambda: AutoARIMA(season_length=m), every, max(2 * m, 10)),
    }
    if season:
        peers[f"statsforecast MSTL (refit every {every})"] = lambda: StatsForecast(
            lambda: MSTL(season_length=m), every, 2 * m + 1)
    return peers


class Ours:
    """The engine behind the River-style protocol (learn_one(y), forecast(h))."""

    def __init__(self, **kw):
        self.model = Forecaster(**kw)

    def learn_one(self, y, x=None):
        self.model.learn_one(y)

    def forecast(self, horizon):
        return self.model.forecast()[:horizon].tolist()


# Our configurations: name -> kwargs (horizon added per series); the first is the default.
OURS = {
    "ours (defaults)": {},
    "ours, no LSTM": {"lstm": False},
    "ours, no autoregressions": {"ar_orders": ()},
    "ours, no season (season=None)": {"season": None},
    "ours, EWA aggregation": {"aggregation": "ewa"},
    "ours, mean of experts": {"aggregation": "mean"},
    "ours, simple experts only": {"ar_orders": (), "lstm": False},
    "ours, autoregressions + LSTM only": {"experts": ()},
    "ours, raw-unit autoregressions only": {"ar_units": ("raw",)},
    # engine choices that are not settings: run with the engine's constant changed
    "ours, no season replay (seasonal experts start when found)": {"_engine": {"REPLAY_SEASON": False}},
    "ours, no weight replay on a season change": {"_engine": {"REPLAY_WEIGHTS": False}},
    "ours, season looked for every 8 steps from the start": {"_engine": {"SEASON_EVERY_STEP_UNTIL": 0}},
    "ours, no log Holt-Winters nor seasonal mean": {"experts": ("last_value", "seasonal_naive", "exp_smoothing",
                                                               "damped_trend", "seasonal_drift", "holt_winters",
                                                               "seasonal_median", "recent_median")},
    "ours, season confirmed after 2 cycles and 24 changes (was 1.5 and 20)": {"_season": {"MIN_CYCLES": 2, "MIN_CHANGES": 24}},
    "ours, keyed autoregressions forecast with their coefficients of the key's previous value": {
        "_engine": {"REFRESH_KEYED_AR": False}},
    "ours, log autoregressions with the exogenous features": {"_engine": {"LOG_WITHOUT_FEATURES": False}},
}


@contextlib.contextmanager
def engine_constants(kw: dict):
    """``kw`` without its ``"_engine"``, ``"_season"`` and ``"_aggregation"`` entries, with those
    constants of the engine, of the season detection and of the aggregation set meanwhile."""
    from streamlstm.forecasting import aggregation, engine, season

    changes = [(engine, k, v) for k, v in kw.get("_engine", {}).items()]
    changes += [(season, k, v) for k, v in kw.get("_season", {}).items()]
    changes += [(aggregation, k, v) for k, v in kw.get("_aggregation", {}).items()]
    saved = [(mod, k, getattr(mod, k)) for mod, k, _ in changes]
    for mod, k, v in changes:
        setattr(mod, k, v)
    try:
        yield {k: v for k, v in kw.items() if k not in ("_engine", "_season", "_aggregation")}
    finally:
        for mod, k, v in saved:
            setattr(mod, k, v)


# keyed panels: one River forecaster per key (the 0.1 design without a season there, as on Trump)
RIVER_ENGINE = "River LSTMForecaster (the engine, defaults)"
RIVER_0_1 = "River LSTMForecaster, 0.1 design (season given)"


def score_regression_river_forecaster(make, rows, start):
    """A River forecaster on a regression stream: the row's features as the exogenous ``xs`` of
    the value forecast, then learned with it (as ``score_regression_ours`` feeds the engine)."""
    m = make()
    err = []
    for t, (x, y) in enumerate(rows):
        xd = {f"x{i}": v for i, v in enumerate(x)}
        if t >= start:
            err.append(abs(y - float(m.forecast(1, xs=[xd])[0])))
        m.learn_one(y, xd)
    return {"mae": float(np.mean(err))}


def river_lstm_forecaster(season, horizon=1, design="engine"):
    """River's LSTMForecaster: today's shell over the engine (its defaults), or the 0.1 design
    it replaced (kept for 0.1 pickles in ``_forecaster_0_1``) with the season given."""
    try:
        from streamlstm.adapters.river import LSTMForecaster
        from streamlstm.adapters.river._forecaster_0_1 import LSTMForecaster01
    except ImportError:
        return None
    if design == "regression":  # the engine, with the features
        return LSTMForecaster
    if design == "0.1 regression":
        return LSTMForecaster01
    if design == "engine":
        return lambda: RiverForecaster(LSTMForecaster(horizon=horizon, exogenous=False))
    return lambda: RiverForecaster(LSTMForecaster01(season=season, exogenous=False))


# ---------------------------------------------------------------------------------- scoring
def score_series(make: Callable[[], object], ys, start, horizon=1):
    m = make()
    one, hor = [], []
    for t, y in enumerate(ys):
        if t >= start:
            f = m.forecast(horizon)
            one.append(abs(y - f[0]))
            if horizon > 1 and t + horizon <= len(ys):
                hor.extend(abs(ys[t + k] - f[k]) for k in range(horizon))
        m.learn_one(y)
    r = {"mae": float(np.mean(one)) if all(map(math.isfinite, one)) else float("inf")}
    if horizon > 1:
        r["horizon_mae"] = float(np.mean(hor)) if all(map(math.isfinite, hor)) else float("inf")
    return r


def score_keyed_ours(kw, rows, start, features):
    m = Forecaster(n_features=len(rows[0][2]) if features else 0, **kw)
    seen = collections.Counter()
    prev: dict = {}
    err = []
    for k, y, x in rows:
        xf = prev.get(k) if features else None  # features of the key's previous row (known then)
        if seen[k] >= start:
            err.append(abs(y - m.forecast(key=k, xs=[xf] if xf is not None else None)[0]))
        m.learn_one(y, x=xf if xf is not None else (np.zeros(len(x)) if features else None), key=k)
        prev[k] = x
        seen[k] += 1
    return {"mae": float(np.mean(err))}


def score_keyed_peer(make, rows, start):
    models: dict = {}
    seen = collections.Counter()
    err = []
    for k, y, _ in rows:
        m = models.setdefault(k, make())
        if seen[k] >= start:
            err.append(abs(y - m.forecast(1)[0]))
        m.learn_one(y)
        seen[k] += 1
    return {"mae": float(np.mean(err))}


def pooled_least_squares(rows, start):
    """Least squares on y[t-1], y[t-2] and the features of t-1, pooled over keys, refit every row."""
    hist: dict = collections.defaultdict(list)
    X, Y, err = [], [], []
    seen = collections.Counter()
    coef = None
    for k, y, x in rows:
        h = hist[k]
        if len(h) >= 2:
            z = [1.0, h[-1][0], h[-2][0], *h[-1][1]]
            if seen[k] >= start:
                err.append(abs(y - (float(np.dot(coef, z)) if coef is not None else h[-1][0])))
            X.append(z)
            Y.append(y)
            if len(Y) >= len(z) + 2:
                coef = np.linalg.lstsq(np.asarray(X), np.asarray(Y), rcond=None)[0]
        elif seen[k] >= start:
            err.append(abs(y - h[-1][0]))
        h.append((y, x))
        seen[k] += 1
    return {"mae": float(np.mean(err))}


def score_regression_ours(kw, rows, start):
    m = Forecaster(n_features=len(rows[0][0]), **kw)
    err = []
    for t, (x, y) in enumerate(rows):
        if t >= start:
            err.append(abs(y - m.forecast(xs=[x])[0]))
        m.learn_one(y, x)
    return {"mae": float(np.mean(err))}


def score_regression_river(make, rows, start):
    m = make()
    err = []
    for t, (x, y) in enumerate(rows):
        xd = {f"x{i}": v for i, v in enumerate(x)}
        if t >= start:
            p = m.predict_one(xd)
            err.append(abs(y - (p if p is not None else 0.0)))
        m.learn_one(xd, y)
    return {"mae": float(np.mean(err))}


class PreviousTarget:
    def __init__(self):
        self.last = 0.0

    def predict_one(self, x):
        return self.last

    def learn_one(self, x, y):
        self.last = y


# ------------------------------------------------------------------------------------ speed
def per_event_cost(make, ys, repeats=3):
    """Median µs per event of forecast(1) + learn_one(y) over the series (first 50 untimed)."""
    meds = []
    for _ in range(repeats):
        m = make()
        times = []
        clock = time.perf_counter_ns
        for t, y in enumerate(ys):
            a = clock()
            m.forecast(1)
            m.learn_one(y)
            if t >= 50:
                times.append(clock() - a)
        meds.append(statistics.median(times) / 1e3)
    return statistics.median(meds)


# ------------------------------------------------------------------------------------- main
SIMPLE_ONLINE = ("AR(k) online k", "River SNARIMAX", "River HoltWinters")


def run(only: str | None, use_statsforecast: bool, every: int, speed_only: bool = False) -> dict:
    data = load_all()
    acc: dict = collections.defaultdict(dict)   # method -> series -> mae
    multi: dict = collections.defaultdict(dict)  # method -> series -> horizon mae
    want = (lambda name: only is None or only in name)
    for name, d in ({} if speed_only else data).items():
        print(f"== {name}", file=sys.stderr)
        t0 = time.perf_counter()
        if d["kind"] == "series":
            ys, start, m = d["y"], d["start"], d["season"]
            positive = min(ys) > 0
            peers: dict[str, Callable] = {"last value": LastValue}
            if m:
                peers["seasonal naive"] = lambda m=m: SeasonalNaive(m)
            max_order = 12 if len(ys) < 400 else 24
            peers["AR(k) online k"] = lambda k=max_order: OnlineAR(k)
            peers["River SNARIMAX"] = lambda m=m: snarimax(m)
            peers["River HoltWinters"] = lambda m=m, p=positive: holt_winters(m, p)
            if use_statsforecast:  # long series: fewer refits (each costs seconds on 2 shared cores)
                sf = statsforecast_peers(m, max(every, len(ys) // 5))
                if len(ys) > 1000:  # AutoARIMA's forward pass refilters all values at every step: O(n^2)
                    sf = {k: v for k, v in sf.items() if "AutoARIMA" not in k}
                peers.update(sf)
            if river_lstm_forecaster(m) is not None:
                peers[RIVER_0_1] = river_lstm_forecaster(m, design="0.1")
                peers[RIVER_ENGINE] = river_lstm_forecaster(m)
            for pname, make in peers.items():
                if want(pname):
                    acc[pname][name] = score_series(make, ys, start)["mae"]
            for oname, kw in OURS.items():
                if want(oname):
                    with engine_constants(kw) as kw:
                        acc[oname][name] = score_series(lambda kw=kw: Ours(**kw), ys, start)["mae"]
            if "horizon" in d:
                h = d["horizon"]
                for pname, make in peers.items():
                    if pname == RIVER_ENGINE:  # built for the horizon it is asked
                        make = river_lstm_forecaster(m, h)
                    if want(pname) and "AutoARIMA" not in pname and "MSTL" not in pname:  # minutes each
                        multi[pname][name] = score_series(make, ys, h, h)["horizon_mae"]
                for oname, kw in (("ours (defaults)", {}), ("ours (season given)", {"season": m}),
                                  ("ours, no LSTM (season given)", {"season": m, "lstm": False}),
                                  ("ours, recursive autoregressions (season given)", {"season": m, "multi_step": "recursive"}),
                                  ("ours, no season (season=None)", {"season": None}),
                                  ("ours, ML-Poly at every horizon", {"aggregation": "mlpoly"}),
                                  ("ours, EWA at every horizon", {"aggregation": "ewa"}),
                                  ("ours, EWA aggregation (season given)", {"season": m, "aggregation": "ewa"}),
                                  ("ours, no season replay", OURS["ours, no season replay (seasonal experts start when found)"]),
                                  ("ours, no weight replay on a season change", OURS["ours, no weight replay on a season change"]),
                                  ("ours, season looked for every 8 steps from the start",
                                   OURS["ours, season looked for every 8 steps from the start"]),
                                  ("ours, no log Holt-Winters nor seasonal mean",
                                   OURS["ours, no log Holt-Winters nor seasonal mean"]),
                                  ("ours, season confirmed after 2 cycles and 24 changes",
                                   OURS["ours, season confirmed after 2 cycles and 24 changes (was 1.5 and 20)"]),
                                  ("ours, far horizons on their own losses only",
                                   {"_aggregation": {"FAR_SECOND_LEVEL": False}}),
                                  ("ours, far horizons on their own losses only (season given)",
                                   {"season": m, "_aggregation": {"FAR_SECOND_LEVEL": False}})):
                    if want(oname):
                        with engine_constants(kw) as kw:
                            multi[oname][name] = score_series(lambda kw=kw, h=h: Ours(horizon=h, **kw), ys, h, h)["horizon_mae"]
        elif d["kind"] == "keyed":
            rows, start = d["rows"], d["start"]
            if want("last value"):
                acc["last value"][name] = score_keyed_peer(LastValue, rows, start)["mae"]
            if want("pooled"):
                acc["pooled least squares"][name] = pooled_least_squares(rows, start)["mae"]
            if want("AR(k)"):
                acc["AR(k) online k"][name] = score_keyed_peer(lambda: OnlineAR(3), rows, start)["mae"]
            if want("SNARIMAX"):
                acc["River SNARIMAX"][name] = score_keyed_peer(lambda: snarimax(None), rows, start)["mae"]
            if want("HoltWinters"):
                acc["River HoltWinters"][name] = score_keyed_peer(lambda: holt_winters(None), rows, start)["mae"]
            for oname, kw in OURS.items():
                if want(oname):
                    with engine_constants(kw) as kw:
                        acc[oname][name] = score_keyed_ours(kw, rows, start, features=False)["mae"]
            if want("ours (defaults)"):
                acc["ours (defaults, with the features)"][name] = score_keyed_ours({}, rows, start, True)["mae"]
            if want("ours with the features"):
                with engine_constants(OURS["ours, log autoregressions with the exogenous features"]) as kw:
                    acc["ours with the features, log autoregressions with them too"][name] = score_keyed_ours(
                        kw, rows, start, True)["mae"]
            if river_lstm_forecaster(None) is not None:  # a River forecaster is one series: one per key
                for rname, design in ((RIVER_0_1, "0.1"), (RIVER_ENGINE, "engine")):
                    if want(rname):
                        acc[rname][name] = score_keyed_peer(river_lstm_forecaster(None, design=design), rows,
                                                            start)["mae"]
        else:  # regression
            from river import linear_model, preprocessing

            rows, start = d["rows"], d["start"]
            if want("last value"):
                acc["last value"][name] = score_regression_river(PreviousTarget, rows, start)["mae"]
            if want("LinearRegression"):
                acc["River StandardScaler | LinearRegression"][name] = score_regression_river(
                    lambda: preprocessing.StandardScaler() | linear_model.LinearRegression(), rows, start)["mae"]
            for oname, kw in OURS.items():
                if want(oname):
                    with engine_constants(kw) as kw:
                        acc[oname][name] = score_regression_ours(kw, rows, start)["mae"]
            if river_lstm_forecaster(None) is not None:
                for rname, design in ((RIVER_0_1, "0.1 regression"), (RIVER_ENGINE, "regression")):
                    if want(rname):
                        acc[rname][name] = score_regression_river_forecaster(
                            river_lstm_forecaster(None, design=design), rows, start)["mae"]
        print(f"   {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    speed = {}
    if "waterflow" in data:
        ys = data["waterflow"]["y"]
        if want("ours (defaults)"):
            speed["ours (defaults)"] = per_event_cost(lambda: Ours(), ys)
            speed["ours, no LSTM"] = per_event_cost(lambda: Ours(lstm=False), ys)
        if river_lstm_forecaster(24) is not None:
            for rname, design in ((RIVER_0_1, "0.1"), (RIVER_ENGINE, "engine")):
                if want(rname):  # one step ahead; the engine's row includes its intervals (interval_level=0.9)
                    speed[rname.replace(" (season given)", "")] = per_event_cost(
                        river_lstm_forecaster(24, design=design), ys)
    return {"accuracy": acc, "multi": multi, "speed": speed, "series": list(data),
            "seasons_found": seasons_found(data)}


def seasons_found(data) -> dict:
    out = {}
    for name, d in data.items():
        if d["kind"] == "series":
            m = Forecaster(lstm=False)
            for y in d["y"]:
                m.learn_one(y)
            out[name] = m.season_
    return out


# ----------------------------------------------------------------------------------- report
def _fmt(v):
    if v is None:
        return "-"
    if not math.isfinite(v) or v > 1e6:
        return "diverged"
    return f"{v:.4g}"


def acceptance(acc) -> dict:
    ours = acc.get("ours (defaults)", {})
    lv = acc.get("last value", {})
    rows = {}
    for s, v in ours.items():
        simple = {p: acc.get(p, {}).get(s) for p in SIMPLE_ONLINE}
        simple = {p: x for p, x in simple.items() if x is not None and math.isfinite(x)}
        best = min(simple.values()) if simple else None
        rows[s] = {"ours": v, "last": lv.get(s), "vs_last": v / lv[s] if s in lv else None,
                   "best_simple": best, "best_simple_name": min(simple, key=simple.get) if simple else None,
                   "vs_best_simple": v / best if best else None}
    return rows


def render(res, meta) -> str:
    acc, multi, speed = res["accuracy"], res["multi"], res["speed"]
    series = [s for s in res["series"] if any(s in v for v in acc.values())]
    lines = ["<!-- forecast:start -->", "## Forecasting engine (`streamlstm.Forecaster`): accuracy against peers", "",
             (f"Generated by `bench/bench_forecast.py` on {meta['date']}, {meta['machine']} (shared, timings noisy), "
              f"Python {meta['python']}, commit {meta['commit']}."), "",
             "### One step ahead (MAE, lower is better; best per column in bold)", "",
             "| method | " + " | ".join(series) + " |", "|---|" + "---:|" * len(series)]
    best = {s: min((v[s] for v in acc.values() if s in v and math.isfinite(v[s])), default=None) for s in series}
    for name, vals in acc.items():
        cells = []
        for s in series:
            v = vals.get(s)
            c = _fmt(v)
            if v is not None and v == best[s]:
                c = f"**{c}**"
            cells.append(c)
        lines.append(f"| {name.replace('|', chr(92) + '|')} | " + " | ".join(cells) + " |")
    lines += ["", "### Acceptance (defaults)", "",
              "| series | ours | last value | ours / last | best online simple (AR(k), SNARIMAX, HoltWinters) | ours / best simple |",
              "|---|---:|---:|---:|---|---:|"]
    ac = acceptance(acc)
    for s, r in ac.items():
        lines.append(f"| {s} | {_fmt(r['ours'])} | {_fmt(r['last'])} | "
                     f"{r['vs_last']:.3f} | {r['best_simple_name']}: {_fmt(r['best_simple'])} | "
                     f"{r['vs_best_simple']:.3f} |" if r["vs_best_simple"] else
                     f"| {s} | {_fmt(r['ours'])} | {_fmt(r['last'])} | {r['vs_last']:.3f} | - | - |")
    n_better = sum(1 for r in ac.values() if r["vs_last"] is not None and r["vs_last"] < 1.0)
    n_bad = sum(1 for r in ac.values() if r["vs_last"] is not None and r["vs_last"] > 1.02)
    n_beat = sum(1 for r in ac.values() if r["vs_best_simple"] is not None and r["vs_best_simple"] < 1.0)
    n_within = sum(1 for r in ac.values() if r["vs_best_simple"] is not None and r["vs_best_simple"] <= 1.05)
    n_simple = sum(1 for r in ac.values() if r["vs_best_simple"] is not None)
    lines += ["", (f"Better than the last value on {n_better} of {len(ac)} series, more than 2% worse on {n_bad}; "
                   f"better than the best online simple method on {n_beat} of {n_simple}, within 5% of it on {n_within} "
                   f"of {n_simple} (Trump has no such peer: its peers are the previous target and River's linear "
                   "regression)."), ""]
    base = acc.get("ours (defaults)", {})
    ablations = [n for n in acc if n.startswith("ours,")]
    if base and ablations:
        lines += ["### Ablation: what each choice is worth (one step, the 9 series)", "",
                  ("Each row removes or replaces one choice of the defaults. Ratio = MAE of the variant / MAE of the "
                   "defaults (> 1: the choice helps); geometric mean over the series and the worst and best series."), "",
                  "| variant | geometric mean ratio | worst for the variant | best for the variant |",
                  "|---|---:|---|---|"]
        for n in ablations:
            r = {k: acc[n][k] / base[k] for k in base if k in acc[n] and math.isfinite(acc[n][k])}
            if not r:
                continue
            gm = math.exp(sum(math.log(v) for v in r.values()) / len(r))
            hi, lo = max(r, key=r.get), min(r, key=r.get)
            lines.append(f"| {n[6:]} | {gm:.3f} | {hi} {r[hi]:.3f} | {lo} {r[lo]:.3f} |")
        lines.append("")
    if multi:
        hs = [s for s in ("airline", "waterflow") if any(s in v for v in multi.values())]
        lines += ["### Multi-step (mean MAE over h = 1..H; Airline H=12, WaterFlow H=24; `bench/peers.py` protocol)", "",
                  "| method | " + " | ".join(f"{s} h=1..{12 if s == 'airline' else 24}" for s in hs) + " |",
                  "|---|" + "---:|" * len(hs)]
        for name, vals in multi.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(vals.get(s)) for s in hs) + " |")
        lines += ["", ("Reference (bench/RESULTS.md, River section): deep-river LSTM WaterFlow h=24 3.348, "
                       "River HoltWinters Airline h=12 13.456."), ""]
    if speed:
        lines += ["### Per-event cost (WaterFlow, forecast(1) + learn_one, median µs over 3 runs)", "",
                  "| model | µs / event |", "|---|---:|"]
        for name, v in speed.items():
            lines.append(f"| {name} | {v:.1f} |")
        lines.append("")
    lines += [f"Seasons found online by the defaults (whole series): {res['seasons_found']}.", "",
              ("Notes: seasonal peers get the season (airline 12, waterflow 24, elnino 12, sunspots 11) as given; "
              "ours finds it. SNARIMAX = (2,1,0), or (2,0,0)x(1,1,0)m with a season; HoltWinters = River's docstring "
              "(0.3, 0.1, 0.6, multiplicative) with a season, Holt (0.3, 0.1) without. AR(k): least squares on all "
              "values, refit every step, k in 1..12 (24 for WaterFlow) chosen by its past one-step error. statsforecast "
              f"models are refit every {meta['every']} values (every n/5 on longer series: WaterFlow every 253, "
              "elnino every 146) and move forward in between without refit; AutoARIMA is left out on WaterFlow (its forward pass "
              "refilters every value at each step: hours on this box). Keyed series: "
              "one peer model per key; pooled least squares on y[t-1], y[t-2] and the features of t-1, refit every row. "
              "deep-river is left out here: it needs its own venv (torch 2.5, `bench/setup_deepriver_venv.sh`); its "
              "River-series numbers are in the River section."),
              "", f"![MAE relative to the last value]({PLOT.name})", "<!-- forecast:end -->"]
    return "\n".join(lines)


def plot(res) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    acc = res["accuracy"]
    lv = acc.get("last value", {})
    series = [s for s in res["series"] if s in lv]
    # peers and our defaults (the ablations are in the tables)
    names = [n for n in acc if any(s in acc[n] for s in series) and not n.startswith("ours,")]
    fig, ax = plt.subplots(figsize=(12, 5))
    width = 0.8 / max(len(names), 1)
    colours = plt.get_cmap("tab20")
    for i, n in enumerate(names):
        vals = [acc[n][s] / lv[s] if s in acc[n] and math.isfinite(acc[n][s]) else np.nan for s in series]
        ax.bar(np.arange(len(series)) + i * width, np.minimum(vals, 2.0), width, label=n,
               color="black" if n.startswith("ours") else colours(i % 20))
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(series)) + 0.4)
    ax.set_xticklabels(series)
    ax.set_ylabel("MAE / last value's MAE (capped at 2)")
    ax.legend(fontsize=6, ncol=3)
    fig.tight_layout()
    fig.savefig(PLOT, dpi=110)


def _merge_refit_names(res: dict) -> dict:
    """One row per statsforecast model: its refit interval (which depends on the series' length)
    goes to the notes, not the row's name."""
    import re

    for part in ("accuracy", "multi"):
        merged: dict = {}
        for name, vals in res[part].items():
            merged.setdefault(re.sub(r" \(refit every \d+\)", "", name), {}).update(vals)
        res[part] = merged
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="methods whose name contains this")
    ap.add_argument("--no-statsforecast", action="store_true")
    ap.add_argument("--every", type=int, default=24, help="statsforecast refit interval (values)")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--render-only", action="store_true", help="rewrite the section from the saved JSON")
    ap.add_argument("--speed-only", action="store_true",
                    help="only the per-event costs, every model in this one process (merged into the saved JSON)")
    a = ap.parse_args()
    if a.render_only:
        saved = json.loads(RESULTS_JSON.read_text())
        meta = saved.pop("meta")
        res = _merge_refit_names(saved)
        _results.write_section("forecast", render(res, meta))
        plot(res)
        return
    res = _merge_refit_names(run(a.only, not a.no_statsforecast, a.every, a.speed_only))
    if (a.only or a.speed_only) and RESULTS_JSON.exists():  # a partial run updates the rows it computed
        old = json.loads(RESULTS_JSON.read_text())
        for part in ("accuracy", "multi", "speed"):
            merged = old.get(part, {})
            for name, vals in res[part].items():
                if isinstance(vals, dict):
                    merged.setdefault(name, {}).update(vals)
                else:
                    merged[name] = vals
            res[part] = merged
        res["series"] = old.get("series", res["series"])
        res = _merge_refit_names(res)   # the saved rows carry their refit interval in the name
    meta = {"date": dt.date.today().isoformat(), "machine": f"{platform.machine()} {_results.cpu_model()}",
            "python": platform.python_version(), "commit": _results.git_head(ROOT), "every": a.every,
            "load": _results.load_average()}
    text = render(res, meta)
    print(text)
    if not a.no_write:
        RESULTS_JSON.write_text(json.dumps({"meta": meta, **res}, indent=1, default=float))
        plot(res)
        _results.write_section("forecast", text)


if __name__ == "__main__":
    main()
