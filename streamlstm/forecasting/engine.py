"""The forecasting engine: simple experts, an LSTM on their residual, online aggregation.

Alignment (label-then-advance): ``learn_one(y, x)`` receives the value of the series at the
next time step (and the exogenous features of that time). It is first the target of every
forecast made up to ``horizon`` steps before (the experts, the autoregressions and the
aggregation weights learn from it), then the input of the next forecasts, which
``forecast()`` returns for h = 1 .. ``horizon``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from .. import persistence
from .aggregation import Aggregator, earlier_forecasts
from .experts import (
    SES_ALPHA,
    damped_trend,
    holt_update,
    holt_winters_forecast,
    holt_winters_init,
    holt_winters_run,
    holt_winters_trend_rate,
    holt_winters_update,
    keep_in_range,
    lag_changes,
    mean_of_awake,
    recent_median,
    rls_predict,
    rls_update,
    seasonal_drift,
    seasonal_drift_run,
    seasonal_drift_update,
    seasonal_median,
    seasonal_naive,
)
from .intervals import ENGINE_INTEGRATOR_BAND, ENGINE_INTEGRATOR_SATURATION, ForecastCalibration
from .lstm_expert import _NOBODY, LSTMExpert
from .season import LEVEL_CYCLES, detect_season

_KIND = "streamlstm.Forecaster"
CLIP = 5.0              # robustly scaled changes are clipped to +-5 (a sensor's drop must not rule the fit)
LEVEL_LIMIT = 50.0      # the level feature (in typical changes from the first value) is clipped to this
SCALE_RATE = 0.02       # relative step of the running median of |changes|
LSTM_LAGS = 24          # changes the LSTM expert sees (a day of hourly values)
ASLEEP = np.nan         # the forecast of an expert that has not started (left out of the aggregate)
AWAKE_AFTER = 2         # an autoregression joins after this many updates per coefficient
LSTM_AWAKE_AFTER = 24   # the LSTM joins after this many updates
SEASON_EVERY = 8        # steps between two season detections (``season="auto"``)
SEASON_EVERY_STEP_UNTIL = 64  # ... except over the first values: found a few steps sooner on short series
REPLAY_SEASON = True    # a season found: the seasonal experts are replayed over the history kept
REPLAY_WEIGHTS = True   # ... and so are the simple experts' aggregation weights (one stream, no features)
SEASON_WINDOW = 400     # values the season detection looks at (the latest) ...
SHORT_SEASONS = 48      # ... for seasons up to this long, every SEASON_EVERY steps; longer ones (up to
LONG_SEASON_EVERY = 32  # max_season) every this many steps, in the latest LEVEL_CYCLES seasons (_refresh_season)
MAX_SEASON_LIMIT = 1 << 20   # the largest max_season (the history kept is twice it)
#: settings whose default changed, and their default before: a model saved under the old
#: default keeps it (its params are saved), and a keyed job whose key states were written
#: under it may resume them (adapters.flink)
EARLIER_DEFAULTS = {"max_season": 48}
SIMPLE = ("last_value", "seasonal_naive", "exp_smoothing", "damped_trend", "seasonal_drift", "holt_winters",
          "seasonal_median", "recent_median", "holt_winters_log", "seasonal_mean")
SEASONAL_MODELS = ("seasonal_drift", "holt_winters", "holt_winters_log")   # what "seasonal_mean" averages
REFRESH_KEYED_AR = True  # a key's autoregression forecasts use the coefficients of now (see _ar_forecasts)
LOG_WITHOUT_FEATURES = True   # the log autoregressions learn without the exogenous features (see _learn_targets)
MEDIAN_CYCLES = 3       # seasons behind the seasonal median
MEDIAN_WINDOW = 96      # values (at least) behind the recent median
EARLIER_LOSSES = True   # season given: a late expert's far-horizon loss from its shorter forecasts (_learn_targets)
SANE_SPREADS = 100.0    # an expert's forecast is kept within this many spreads of the values kept (keep_in_range)


def _track_median(tracker: np.ndarray, a: float) -> None:
    """Running median of ``a`` by relative steps (robust scale, O(1) memory)."""
    if tracker[0] <= 0.0:
        tracker[0] = a
    elif a > tracker[0]:
        tracker[0] *= 1.0 + SCALE_RATE
    elif a < tracker[0]:
        tracker[0] *= 1.0 - SCALE_RATE


class _Stream:
    """What one series (one key) owns: its recent values, its experts' running numbers and
    the forecasts still waiting for their targets."""

    def __init__(self, capacity: int, horizon: int, n_experts: int, n_features: int, n_exog: int,
                 n_units: int) -> None:
        self.history = np.zeros(capacity)      # latest value last; valid: the last min(n, capacity)
        self.n = 0
        self.season = 0                        # 0: none (yet)
        self.level = 0.0                       # exponential smoothing
        self.anchor = 0.0                      # first value: origin of the level feature
        self.exog = np.zeros(n_exog)           # scaled exogenous features of the latest value
        self.x = np.zeros(n_exog)              # the same, as given
        self.lstm_state: Any = None            # the LSTM's (h, c) while another stream holds the network
        self.holt = np.zeros(2)                # damped trend: level, trend
        self.profile = np.zeros(1)             # seasonal drift: smoothed change per phase
        self.known = np.zeros(1, dtype=bool)
        self.positive = True                   # every value so far > 0: relative seasonal changes
        self.hw = np.zeros(2)                  # Holt-Winters level and trend
        self.hw_indices = np.zeros(1)          # Holt-Winters seasonal indices (by phase)
        self.hw_ready = False                  # initialised for the current season
        self.hwl = np.zeros(2)                 # Holt-Winters on the logs: level and trend
        self.hwl_indices = np.zeros(1)         # ... and its additive seasonal indices (of the logs)
        self.hwl_ready = False                 # initialised for the current season (positive values only)
        self.weights_replayed_at = -1          # n at the last replay of the aggregation weights (-1: never)
        self.forecasts = np.zeros((horizon, horizon, n_experts))  # [origin slot, h-1, expert]
        self.features = np.zeros((n_units, horizon, n_features))  # autoregression inputs at each origin
        self.origin = np.zeros((n_units, horizon))                # value at each origin (their units)

    SCALARS = ("n", "season", "level", "anchor", "positive", "hw_ready", "hwl_ready", "weights_replayed_at")
    ARRAYS = ("history", "exog", "x", "holt", "hw", "hw_indices", "hwl", "hwl_indices", "profile", "known", "forecasts",
              "features", "origin")
    LOG_HW_STATE = ("hwl_ready", "hwl", "hwl_indices")   # absent from files saved before that expert: unset then


class Forecaster:
    """Forecasts of a stream of values (or of many keyed streams) for 1 .. ``horizon`` steps
    ahead, learning online as the values arrive.

    Each forecast aggregates simple experts (last value, seasonal naive, exponential
    smoothing, damped trend, seasonal drift, Holt-Winters on the values and on their logs,
    the mean of those three seasonal models, medians) and autoregressions fitted online by recursive
    least squares, one direct model per horizon, with ML-Poly weights learned per horizon.
    With ``lstm``, an LSTM on the recent changes (and the exogenous features) forecasts the
    residual of the last value and joins the experts. With ``keys``, every key keeps its own
    values and experts while the autoregressions, the LSTM's weights and the aggregation
    weights are shared (pooled) over all keys.

    Parameters
    ----------
    horizon
        How many steps ahead to forecast (``forecast()`` returns that many values).
    season
        Season length in steps, ``None`` for none, or ``"auto"`` (default): found online from
        the autocorrelation of the recent changes, or the dip of the values' differences at a
        season (:mod:`streamlstm.forecasting.season`), refreshed every few steps (``season_``).
    max_season
        Longest season that ``"auto"`` looks for (default 288: a day of 5-minute values). Seasons
        up to 48 steps are looked for every 8 steps in the latest 400 values, longer ones every
        32 steps in the latest ``2 * max_season``: a stream keeps ``max(400, 2 * max_season + 2)``
        values, and a look costs O(``max_season**2``).
    ar_orders
        Lagged changes seen by each autoregression expert (one expert per order).
    ar_units
        Units of the autoregressions: ``"raw"`` (the series' own: additive dynamics) and/or
        ``"log"`` (relative dynamics, e.g. growth and seasonal swings that scale with the level;
        these experts sleep for good once a value <= 0 arrives).
    multi_step
        ``"direct"``: one autoregression per horizon; ``"recursive"``: the one-step model fed
        its own forecasts (an ablation: direct is the default because it measured better).
    forgetting
        Forgetting factor of the recursive least squares (1: an ever-growing window).
    ridge
        Prior precision of the autoregression coefficients (shrinks them towards the last value).
    aggregation, discount
        ``"mlpoly+ewa"`` (ML-Poly one step ahead, EWA beyond: each far horizon mixes EWA on
        its own losses and on the far horizons' pooled losses, the mixture learned by ML-Poly),
        ``"mlpoly"``, ``"ewa"`` or ``"mean"``, and the forgetting of the aggregation's regrets.
    experts
        Names of the simple experts to use (a subset of ``SIMPLE``); ``None``: all.
    n_features
        Exogenous features per event (``x`` of ``learn_one`` and ``xs`` of ``forecast``).
    interval_levels
        Coverage levels (each in (0, 1)) of the prediction intervals of
        :meth:`forecast_interval`: each value's residuals (of the forecasts made 1 ..
        ``horizon`` steps before it) calibrate, per key and per horizon step, an
        :class:`~streamlstm.OnlineCalibrator` (conformal quantile tracking,
        ``docs/calibration.md``). Empty (default): no calibrator, no cost.

    Defaults, chosen on the whole suite of ``bench/bench_forecast.py`` (9 public series, none
    tuned alone; ``bench/RESULTS.md`` has the tables and an ablation): every simple expert,
    autoregressions of orders 2 and 13 in raw and log units (forgetting 0.995, ridge 1),
    ML-Poly weights one step ahead and EWA weights beyond (the far horizons learning from
    each other's losses too: ``forecasting/aggregation.py``), the LSTM expert (16 units, Adam
    3e-3), season found online once 1.5 cycles show it (the seasonal experts then start as if
    it had been known since the oldest value kept: they are replayed over the history, and
    so are the simple experts' aggregation weights on one stream without features).
    With keys, a key's autoregression forecasts are made with the pooled coefficients of the
    time they are asked (other keys moved them since the key's previous value); the log
    autoregressions learn without the exogenous features.
    Each moves the one-step error by a few percent on average and by 5-25% on some series;
    the aggregation rule matters most (the plain mean of the experts is 1.8x worse).

    Examples
    --------
    A monthly series with a yearly cycle: the season is found and the forecasts follow it.

    >>> import math
    >>> model = Forecaster(horizon=3)
    >>> for t in range(120):
    ...     model.learn_one(100 + 10 * math.sin(2 * math.pi * t / 12) + 0.1 * t)
    >>> model.season_
    12
    >>> model.forecast().round(1).tolist()          # truth: 112.0, 117.0, 119.0
    [112.0, 117.2, 121.1]
    """

    def __init__(
        self,
        horizon: int = 1,
        season: int | str | None = "auto",
        max_season: int = 288,
        ar_orders: Sequence[int] = (2, 13),
        ar_units: Sequence[str] = ("raw", "log"),
        multi_step: str = "direct",
        forgetting: float = 0.995,
        ridge: float = 1.0,
        aggregation: str = "mlpoly+ewa",
        discount: float = 1.0,
        experts: Sequence[str] | None = None,
        n_features: int = 0,
        lstm: bool = True,
        lstm_hidden: int = 16,
        lstm_lr: float = 3e-3,
        seed: int | None = 0,
        interval_levels: Sequence[float] = (),
    ) -> None:
        if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon < 1:
            raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
        if not (season is None or season == "auto" or (isinstance(season, int) and not isinstance(season, bool)
                                                          and season >= 2)):
            raise ValueError(f"season must be an integer >= 2, None or 'auto', got {season!r}")
        if not isinstance(max_season, int) or isinstance(max_season, bool) or not 2 <= max_season <= MAX_SEASON_LIMIT:
            raise ValueError(f"max_season must be an integer in [2, {MAX_SEASON_LIMIT}], got {max_season!r}")
        orders = tuple(int(k) for k in ar_orders)
        if any(k < 1 for k in orders):
            raise ValueError(f"ar_orders must be integers >= 1, got {ar_orders!r}")
        units = tuple(ar_units)
        if not units or any(u not in ("raw", "log") for u in units) or len(set(units)) < len(units):
            raise ValueError(f"ar_units must be distinct 'raw' / 'log', got {ar_units!r}")
        if not 0.0 < forgetting <= 1.0:
            raise ValueError(f"forgetting must be in (0, 1], got {forgetting!r}")
        if not ridge > 0.0:
            raise ValueError(f"ridge must be > 0, got {ridge!r}")
        names = SIMPLE if experts is None else tuple(experts)
        unknown = [e for e in names if e not in SIMPLE]
        if unknown:
            raise ValueError(f"unknown experts {unknown}; choose among {SIMPLE}")
        if not isinstance(n_features, int) or n_features < 0:
            raise ValueError(f"n_features must be an integer >= 0, got {n_features!r}")
        self.horizon = horizon
        self.season = season
        self.max_season = max_season
        self.ar_orders = orders
        self.ar_units = units
        if multi_step not in ("direct", "recursive"):
            raise ValueError(f"multi_step must be 'direct' or 'recursive', got {multi_step!r}")
        self.multi_step = multi_step
        self.forgetting = float(forgetting)
        self.ridge = float(ridge)
        self.aggregation = aggregation
        self.discount = float(discount)
        self.experts = names
        self.n_features = n_features
        self.lstm = bool(lstm)
        self.lstm_hidden = lstm_hidden
        self.lstm_lr = lstm_lr
        self.seed = seed
        self.interval_levels = tuple(float(v) for v in interval_levels)
        if self.interval_levels:
            ForecastCalibration(self.interval_levels, horizon)   # checks the levels before anything is built
        self._reset()

    # ------------------------------------------------------------------ set-up
    def _reset(self) -> None:
        H = self.horizon
        self._n_lags = max(self.ar_orders, default=0)
        # Autoregression inputs: [1, level, features, feature changes since the origin, changes]
        self._o = 2 + 2 * self.n_features
        self._d = self._o + self._n_lags
        self._capacity = max(max(SEASON_WINDOW, LEVEL_CYCLES * self.max_season + 2) if self.season == "auto" else 0,
                             MEDIAN_CYCLES * (self.season if isinstance(self.season, int) else 4) + 1,
                             self._n_lags + 1, LSTM_LAGS + 1)
        # autoregressions: every order in every unit (the series' own, or log while positive)
        self._ar = [(g, k) for g in range(len(self.ar_units)) for k in self.ar_orders]
        self.expert_names = (list(self.experts)
                             + [f"ar{k}" + ("_log" if self.ar_units[g] == "log" else "") for g, k in self._ar]
                             + (["lstm"] if self.lstm else []))
        self._n_simple = len(self.experts)
        self._mean_of = np.array([e for e, n in enumerate(self.experts) if n in SEASONAL_MODELS], dtype=np.int64)
        self._mean_at = self.experts.index("seasonal_mean") if "seasonal_mean" in self.experts else -1
        self._log_hw = "holt_winters_log" in self.experts
        self._ar_end = self._n_simple + len(self._ar)
        self._lstm = LSTMExpert(LSTM_LAGS, self.n_features, self.lstm_hidden, self.lstm_lr, self.seed) \
            if self.lstm else None
        self._agg = Aggregator(len(self.expert_names), H, self.aggregation, self.discount)
        # An expert asleep at a far horizon's origin is charged the loss of its nearest shorter
        # forecast of the same target (see _learn_targets) unless the season is found online
        # (nor in the replaying shadow engine of a season found: see _replay_weights).
        self._earlier_losses = EARLIER_LOSSES and self.season != "auto"
        self._shorter = np.zeros((H, len(self.expert_names)))   # the value's forecasts at the steps learned so far
        # Shared statistics: scale of the changes (running median of |change|), mean and
        # variance of the values and of the exogenous features (Welford).
        self._scale = np.zeros(1)
        G = len(self.ar_units)
        self._scale_u = np.zeros(G)                  # the same in each autoregression unit
        self._positive = np.ones(1, dtype=bool)      # every value so far > 0 (log units usable)
        self._moments = np.zeros((1 + self.n_features, 3))   # count, mean, M2 per column
        self._P = [np.zeros((H, self._o + k, self._o + k)) for _, k in self._ar]
        self._P_ready = np.zeros(G, dtype=bool)
        self._updates = np.zeros(G, dtype=np.int64)   # one-step updates of the autoregressions, per unit
        self._W = [np.zeros((H, self._o + k)) for _, k in self._ar]
        self._streams: dict[Hashable, _Stream] = {}
        self._calibration = (ForecastCalibration(self.interval_levels, H, integrator_saturation=ENGINE_INTEGRATOR_SATURATION,
                                                 integrator_band=ENGINE_INTEGRATOR_BAND)
                             if self.interval_levels else None)
        self._z = np.zeros(self._d)
        self._row = np.zeros(H)

    def _stream(self, key: Hashable) -> _Stream:
        s = self._streams.get(key)
        if s is None:
            s = self._streams[key] = _Stream(self._capacity, self.horizon, len(self.expert_names), self._d,
                                               self.n_features, len(self.ar_units))
            if self._calibration is not None:
                self._calibration.row(key)
        return s

    # ------------------------------------------------------------------ inputs
    def _value(self, y: Any) -> float:
        try:
            v = float(y)
        except (TypeError, ValueError):
            raise TypeError(f"the series' value must be a number, got {y!r}") from None
        if not math.isfinite(v):
            raise ValueError(f"the series' value must be finite, got {y!r}")
        return v

    def _exogenous(self, x: Any, what: str) -> np.ndarray | None:
        if x is None:
            return None
        try:
            a = np.asarray(x, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise TypeError(f"{what} must be {self.n_features} numbers, got {x!r}") from None
        if a.shape[0] != self.n_features:
            raise ValueError(f"{what} must hold n_features={self.n_features} numbers, got {a.shape[0]}: {x!r}")
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise ValueError(f"{what}: feature {int(bad[0])} is {float(a[bad[0]])!r}, not a finite number")
        return a

    def _scaled_exogenous(self, x: np.ndarray | None) -> np.ndarray | None:
        if x is None or self.n_features == 0:
            return None
        m = self._moments[1:]
        std = np.sqrt(np.where(m[:, 0] > 1, m[:, 2] / np.maximum(m[:, 0], 1.0), 1.0))
        std = np.where(std > 0, std, 1.0)
        return np.clip((x - m[:, 1]) / std, -CLIP, CLIP)

    def _exogenous_part(self, xz: np.ndarray, origin_xz: np.ndarray, h: int) -> np.ndarray:
        """What the exogenous features ``xz`` of the target time add to each autoregression's
        forecast at horizon index h (their levels and their changes since the origin)."""
        nf = self.n_features
        change = xz - origin_xz
        return np.array([float(W[h, 2:2 + nf] @ xz) + float(W[h, 2 + nf:self._o] @ change) for W in self._W])

    # ------------------------------------------------------------------ learning
    def learn_one(self, y: float, x: Sequence[float] | np.ndarray | None = None, key: Hashable = None) -> None:
        """Learn the series' next value ``y`` (with the exogenous features ``x`` of its time,
        ``n_features`` numbers, or ``None``) for the stream ``key``; afterwards ``forecast(key=key)``
        gives the forecasts of the following values.

        A bad value or feature raises ``ValueError``/``TypeError`` naming it and changes nothing.

        >>> model = Forecaster()
        >>> model.learn_one(1.0); model.learn_one(2.0)
        >>> model.forecast().round(2).tolist()   # the experts mixed equally until errors are known
        [1.59]
        """
        v = self._value(y)
        xa = self._exogenous(x, "x")
        s = self._streams.get(key)
        made = None   # the one-step forecasts as made at the key's previous value (see _learn_targets)
        if REFRESH_KEYED_AR and s is not None and s.n and self._ar and len(self._streams) > 1:  # one stream: nothing moved
            slot = (s.n - 1) % self.horizon
            if self._calibration is not None:
                made = s.forecasts[slot, 0].copy()
            self._ar_forecasts(s, slot, s.forecasts[slot])
        if v <= 0.0:
            self._positive[0] = False   # the log autoregressions sleep from now on
        s = self._stream(key)
        lstm_forecast = self._lstm_learn(key, s, v, xa) if (self._lstm is not None and s.n) else 0.0
        if s.n:
            residuals = self._learn_targets(s, v, xa, lstm_forecast, made)
            if self._calibration is not None and residuals is not None:
                if self.n_features:   # the forecasts given the target's own features (not issued)
                    self._calibration.observe(key, residuals)
                else:                 # the forecasts as issued (intervals.py)
                    self._calibration.observe_value(key, v, s.n)
        if xa is not None:
            s.x[:] = xa
        xz = self._scaled_exogenous(xa)
        if xz is not None:
            s.exog[:] = xz
        self._update_statistics(s, v, xa)
        self._update_stream(s, v)
        self._make_forecasts(key, s)
        if self._calibration is not None and not self.n_features:
            self._calibration.issue(key, self.forecast(key), s.n)

    def _lstm_hold(self, key: Hashable, s: _Stream) -> LSTMExpert:
        lstm = self._lstm
        assert lstm is not None
        if not lstm.holds(key):
            before_owner = lstm.owner
            before = lstm.use(key, s.lstm_state)
            if before is not None and before_owner is not _NOBODY and before_owner in self._streams:
                self._streams[before_owner].lstm_state = before
        return lstm

    def _lstm_learn(self, key: Hashable, s: _Stream, y: float, x: np.ndarray | None) -> float:
        lstm = self._lstm_hold(key, s)
        scale = self._scale[0] if self._scale[0] > 0.0 else 1.0
        last = s.history[-1]
        row = lstm.row(s.history, s.n, scale, x if x is not None else s.x, s.x)
        return last + lstm.learn(row, y - last, scale)

    def _lstm_predict(self, key: Hashable, s: _Stream, x: np.ndarray | None) -> float:
        lstm = self._lstm_hold(key, s)
        scale = self._scale[0] if self._scale[0] > 0.0 else 1.0
        row = lstm.row(s.history, s.n, scale, x if x is not None else s.x, s.x)
        return s.history[-1] + lstm.predict(row, scale)

    def _learn_targets(self, s: _Stream, y: float, x: np.ndarray | None, lstm_forecast: float,
                       made: np.ndarray | None = None) -> np.ndarray | None:
        """Learn ``y`` as the target of the forecasts made 1 .. horizon steps before; returns
        their residuals (NaN for a step not forecast yet) when intervals are calibrated.

        ``made``: the experts' one-step forecasts as they were at the key's previous value
        (before its autoregressions were made again with the pooled coefficients of now):
        the residuals calibrate the intervals written then (the CLI writes a key's bounds on
        its row), while the weights learn from the forecasts of now."""
        H = self.horizon
        xz = self._scaled_exogenous(x)
        nf = self.n_features
        count = min(H, s.n)
        residuals = None if self._calibration is None else np.full(H, np.nan)
        shorter = self._shorter if self._earlier_losses and count > 1 and self.aggregation != "mean" else None
        for h in range(1, count + 1):
            slot = (s.n - h) % H
            f = s.forecasts[slot, h - 1].copy()
            if h == 1 and self._lstm is not None and not math.isnan(f[-1]):
                f[-1] = lstm_forecast   # made with this value's features
            if xz is not None and self._ar:
                self._add_exogenous(f, self._exogenous_part(xz, s.features[0, slot, 2 + nf:self._o], h - 1))
            if residuals is not None:  # the aggregate forecast of this step, before its weights learn y
                if h == 1 and made is not None:
                    written = made.copy()
                    if self._lstm is not None and not math.isnan(written[-1]):
                        written[-1] = lstm_forecast
                    if xz is not None and self._ar:
                        self._add_exogenous(written, self._exogenous_part(xz, s.features[0, slot, 2 + nf:self._o], 0))
                    residuals[0] = y - self._agg.combine(0, written)
                else:
                    residuals[h - 1] = y - self._agg.combine(h - 1, f)
            if shorter is not None:
                shorter[h - 1] = f   # (f is this step's own copy)
                if h > 1:
                    earlier_forecasts(f, shorter, h)
            self._agg.update(h - 1, f, y)
        if not self._ar:
            return residuals
        Z = np.zeros((H, self._d))
        targets = np.zeros(H)
        active = np.zeros(H, dtype=np.bool_)
        for g, unit in enumerate(self.ar_units):
            if unit == "log" and not self._positive[0]:
                continue
            u = self._u(y, g)
            for h in range(1, count + 1):
                slot = (s.n - h) % H
                Z[h - 1] = s.features[g, slot]
                if xz is not None and (unit == "raw" or not LOG_WITHOUT_FEATURES):
                    origin_xz = s.features[g, slot, 2 + nf:self._o]
                    Z[h - 1, 2:2 + nf] = xz
                    Z[h - 1, 2 + nf:self._o] = xz - origin_xz
                elif xz is not None:
                    # Relative dynamics learn from the target alone: a feature's level (scaled
                    # over every key) tells the keys apart and the pooled log model fitted it
                    # (Grunfeld with value and capital: 26.8 against 24.9 without, below the
                    # last value's 26.0; chick weights and Trump within 0.7%)
                    Z[h - 1, 2:self._o] = 0.0
                targets[h - 1] = u - s.origin[g, slot]
                active[h - 1] = h == 1 or self.multi_step == "direct"
            scale = self._scale_u[g] if self._scale_u[g] > 0.0 else 1.0
            if not self._P_ready[g]:
                self._init_covariances(g, scale)
            self._updates[g] += 1
            for (gj, k), P, W in zip(self._ar, self._P, self._W):
                if gj == g:
                    rls_update(P, W, Z, targets, active, self._o + k, self.forgetting, CLIP * scale)
        return residuals

    def _aggregator_updates(self) -> None:
        """The aggregation's count of updates per horizon (its EWA learning rate), from the
        streams: the weights of step ``h`` learn once per value of a stream after its ``h``-th."""
        H = self.horizon
        self._agg.updates[:] = [sum(max(0, s.n - h) for s in self._streams.values()) for h in range(1, H + 1)]

    def _u(self, y: float, g: int) -> float:
        """``y`` in the units of autoregression group ``g``."""
        return math.log(y) if self.ar_units[g] == "log" else y

    def _add_exogenous(self, f: np.ndarray, part: np.ndarray) -> None:
        for j, (g, _) in enumerate(self._ar):
            e = self._n_simple + j
            if self.ar_units[g] == "log":
                f[e] *= math.exp(part[j])
            else:
                f[e] += part[j]

    def _init_covariances(self, g: int, scale: float) -> None:
        # The prior is set at the first update, in the series' units, so that ``ridge`` means
        # the same on every series: the coefficients of the level and of the changes are
        # ratios, the intercept's and the exogenous features' are in the series' units.
        o = self._o
        for (gj, _), P in zip(self._ar, self._P):
            if gj == g:
                diag = np.full(P.shape[1], 1.0 / self.ridge)
                diag[1] = diag[o:] = 1.0 / (self.ridge * scale * scale)
                P[:] = np.diag(diag)[None]
        self._P_ready[g] = True

    def _update_statistics(self, s: _Stream, y: float, x: np.ndarray | None) -> None:
        if s.n:
            a = abs(y - s.history[-1])
            _track_median(self._scale, a)
            for g, unit in enumerate(self.ar_units):
                if unit == "raw":
                    self._scale_u[g] = self._scale[0]
                elif self._positive[0] and y > 0.0:
                    _track_median(self._scale_u[g:g + 1], abs(math.log(y) - math.log(s.history[-1])))
        cols = [y] if x is None else [y, *x.tolist()]
        for j, v in enumerate(cols):
            m = self._moments[j]
            m[0] += 1.0
            d = v - m[1]
            m[1] += d / m[0]
            m[2] += d * (v - m[1])

    def _update_stream(self, s: _Stream, y: float) -> None:
        if s.n == 0:
            s.anchor = y
            s.level = y
            s.holt[0], s.holt[1] = y, 0.0
        else:
            last = s.history[-1]
            s.level += SES_ALPHA * (y - s.level)
            s.holt[0], s.holt[1] = holt_update(s.holt[0], s.holt[1], y)
            if s.season:
                if y <= 0.0 and s.positive:
                    s.positive = False
                    s.known[:] = False
                seasonal_drift_update(s.profile, s.known, y, last, s.n, s.positive)
            trend_rate = holt_winters_trend_rate(s.season) if s.season else 0.0
            if s.hw_ready:
                holt_winters_update(s.hw, s.hw_indices, y, s.n, s.positive, trend_rate)
            if s.hwl_ready:
                if y > 0.0:
                    holt_winters_update(s.hwl, s.hwl_indices, math.log(y), s.n, False, trend_rate)
                else:
                    s.hwl_ready = False
        if y <= 0.0 and s.positive:
            s.positive = False
            s.hw_ready = False   # relative indices would now divide by 0: start again, additive
        s.history[:-1] = s.history[1:]
        s.history[-1] = y
        s.n += 1
        self._refresh_season(s)
        if s.season and not s.hw_ready and min(s.n, self._capacity) >= s.season:
            level, trend, s.hw_indices = holt_winters_init(s.history, s.n, s.season, s.positive)
            s.hw[0], s.hw[1] = level, trend
            s.hw_ready = True
        if self._log_hw and s.season and s.positive and not s.hwl_ready and min(s.n, self._capacity) >= s.season:
            level, trend, s.hwl_indices = holt_winters_init(np.log(s.history[-s.season:]), s.n, s.season, False)
            s.hwl[0], s.hwl[1] = level, trend
            s.hwl_ready = True

    def _replay_season(self, s: _Stream) -> None:
        """A season just found: the seasonal experts start as if it had been known since the
        oldest value kept (the drift profile and Holt-Winters run over the history), not
        from nothing."""
        m = s.season
        size = min(s.n, self._capacity)
        v = s.history[self._capacity - size:]
        a0 = s.n - size   # index of v[0]
        seasonal_drift_run(s.profile, s.known, v, a0, s.positive)
        if size >= m:
            level, trend, s.hw_indices = holt_winters_init(v[:m], a0 + m, m, s.positive)
            s.hw[0], s.hw[1] = level, trend
            trend_rate = holt_winters_trend_rate(m)
            holt_winters_run(s.hw, s.hw_indices, v[m:], a0 + m, s.positive, trend_rate)
            s.hw_ready = True
            if s.positive and self._log_hw:
                lv = np.log(v)
                level, trend, s.hwl_indices = holt_winters_init(lv[:m], a0 + m, m, False)
                s.hwl[0], s.hwl[1] = level, trend
                holt_winters_run(s.hwl, s.hwl_indices, lv[m:], a0 + m, False, trend_rate)
                s.hwl_ready = True

    def _refresh_season(self, s: _Stream) -> None:
        if self.season == "auto":
            if s.n % SEASON_EVERY and s.n > SEASON_EVERY_STEP_UNTIL:
                return
            found = 0
            if self.max_season > SHORT_SEASONS and s.n % LONG_SEASON_EVERY == 0:
                # every season up to max_season, in a longer window: a look costs O(window x
                # lags), so it is taken less often; it finds the short seasons too, and
                # prefers the strongest (a spike every 100 values over a ripple of 6)
                found = detect_season(s.history[-min(s.n, self._capacity):], self.max_season, current=s.season) or 0
            elif s.season > SHORT_SEASONS:
                found = s.season   # a long season stands till the next long look
            if not found:
                found = detect_season(s.history[-min(s.n, SEASON_WINDOW):], min(self.max_season, SHORT_SEASONS),
                                      current=s.season) or 0
        else:
            found = self.season if isinstance(self.season, int) else 0
        if found != s.season:
            before = s.season
            s.season = found
            s.profile = np.zeros(max(found, 1))
            s.known = np.zeros(max(found, 1), dtype=bool)
            s.hw_ready = s.hwl_ready = False
            if found and REPLAY_SEASON:
                self._replay_season(s)
            if (REPLAY_WEIGHTS and found and not before and self.season == "auto"
                    and (s.weights_replayed_at < 0 or s.n - s.weights_replayed_at >= SEASON_WINDOW)):
                self._replay_weights(s)

    def _replay_weights(self, s: _Stream) -> None:
        """A season found where there was none: the simple experts' aggregation regrets become
        those they would have earned over the history kept had the season been known (an
        engine with that season, fed that history), so that the seasonal experts, replayed
        too, are trusted as their record deserves and not only from now on (sleeping experts
        wake at no regret). The autoregressions' and the LSTM's regrets stay; the replaying
        engine has no LSTM (it would learn the history again for a column not taken).

        At most once per ``SEASON_WINDOW`` values (a season that comes and goes on a noisy
        stream must not replay the history at every detection: one replay costs about as
        many events as it replays), and not once a second key exists (the weights are pooled
        over the keys: one key's history must not rewrite them; the first key of a keyed job
        is replayed while it is the only one) nor with exogenous features (their history is
        not kept).

        Measured over the suite (bench/RESULTS.md, ablation): one step ahead AirlinePassengers
        9.01 -> 8.80, sunspots 12.71 -> 12.58; elnino and Nile 0.4% worse, the others within
        0.1%; h=1..12 on Airline 15.25 -> 14.63. Replaying also when a season changes
        (12 -> 11) or is dropped, with no limit, was worse overall (Nile's spurious season for
        32 values cost it 2.5%) and cost 20x more per event on a noisy daily cycle."""
        if len(self._streams) > 1 or self.n_features:
            return
        params = self.get_params()
        params.update(season=s.season, interval_levels=(), lstm=False)
        shadow = Forecaster(**params)
        shadow._earlier_losses = False   # the season is found, not given (see aggregation.earlier_forecasts)
        size = min(s.n, self._capacity)
        for v in s.history[self._capacity - size:]:
            shadow.learn_one(float(v))
        self._agg.adopt(shadow._agg, self._n_simple)
        s.weights_replayed_at = s.n

    def _make_forecasts(self, key: Hashable, s: _Stream) -> None:
        H = self.horizon
        slot = (s.n - 1) % H
        out = s.forecasts[slot]
        last = s.history[-1]
        row = self._row
        for e, name in enumerate(self.experts):
            if name == "last_value":
                out[:, e] = last
            elif name == "seasonal_naive":
                if s.season and s.n >= s.season:
                    seasonal_naive(s.history, s.n, s.season, H, row)
                    out[:, e] = row
                else:
                    out[:, e] = ASLEEP
            elif name == "exp_smoothing":
                out[:, e] = s.level
            elif name == "damped_trend":
                damped_trend(s.holt[0], s.holt[1], H, row)
                out[:, e] = row
            elif name == "holt_winters":
                if s.hw_ready:
                    holt_winters_forecast(s.hw, s.hw_indices, s.n, H, s.positive, row)
                    out[:, e] = row
                else:
                    out[:, e] = ASLEEP
            elif name == "seasonal_mean":
                continue   # below, from the others
            elif name == "holt_winters_log":
                if s.hwl_ready:
                    holt_winters_forecast(s.hwl, s.hwl_indices, s.n, H, False, row)
                    out[:, e] = np.exp(row)
                else:
                    out[:, e] = ASLEEP
            elif name == "seasonal_median":
                if s.season and s.n >= s.season:
                    seasonal_median(s.history, s.n, s.season, H, MEDIAN_CYCLES, row)
                    out[:, e] = row
                else:
                    out[:, e] = ASLEEP
            elif name == "recent_median":
                out[:, e] = recent_median(s.history, s.n, max(MEDIAN_CYCLES * s.season, MEDIAN_WINDOW))
            else:  # seasonal_drift
                if s.season and s.known.all():
                    seasonal_drift(last, s.profile, s.known, s.n % s.season, H, row, s.positive)
                    out[:, e] = row
                else:
                    out[:, e] = ASLEEP
        if self._mean_at >= 0:
            mean_of_awake(out, self._mean_of, self._mean_at)
        for g, unit in enumerate(self.ar_units):
            if unit == "raw" or self._positive[0]:
                self._fill_features(s, self._scale_u[g] if self._scale_u[g] > 0.0 else 1.0, s.features[g, slot], g)
                s.origin[g, slot] = self._u(last, g)
        self._ar_forecasts(s, slot, out)
        if self._lstm is not None:
            if self._lstm.model.n_updates >= LSTM_AWAKE_AFTER:
                out[:, -1] = self._lstm_predict(key, s, None)
            else:
                out[:, -1] = ASLEEP
        keep_in_range(out, s.history, min(s.n, self._capacity), SANE_SPREADS)

    def _ar_forecasts(self, s: _Stream, slot: int, out: np.ndarray) -> None:
        """The autoregressions' forecasts (their columns of ``out``) from the inputs kept at
        origin ``slot``, with the shared coefficients as they are now. With keys, other keys
        move the coefficients between two values of this one: a key's forecasts are made
        again when asked and when scored (pooled least squares refit at every row does the
        same; with the coefficients of the key's previous value, chick weights erred 8.0
        instead of 6.8 one step ahead)."""
        row = self._row
        for j, ((g, k), W) in enumerate(zip(self._ar, self._W)):
            log = self.ar_units[g] == "log"
            col = out[:, self._n_simple + j]
            if (not log or self._positive[0]) and self._updates[g] >= AWAKE_AFTER * (self._o + k):
                rls_predict(W, s.features[g, slot], self._o + k, row)
                u_last = s.origin[g, slot]
                col[:] = np.exp(u_last + row) if log else u_last + row
                if self.multi_step == "recursive" and self.horizon > 1:
                    self._feed_back(s, g, k, W, col)
            else:
                col[:] = ASLEEP

    def _feed_back(self, s: _Stream, g: int, k: int, W: np.ndarray, col: np.ndarray) -> None:
        """Recursive multi-step (the ablation of direct models): the one-step model applied
        to its own forecasts, ``col[0]`` being the first."""
        H = self.horizon
        ext = np.concatenate([s.history, np.zeros(H)])
        size = len(s.history)
        scale = self._scale_u[g] if self._scale_u[g] > 0.0 else 1.0
        log = self.ar_units[g] == "log"
        z = np.zeros(self._o + k)
        pred = np.zeros(1)
        for h in range(1, H):
            ext[size + h - 1] = col[h - 1]
            view = ext[h:size + h]
            z[:] = 0.0
            z[0] = 1.0
            lim = LEVEL_LIMIT * scale
            u_last = self._u(view[-1], g)
            z[1] = max(-lim, min(lim, u_last - self._u(s.anchor, g)))
            lag_changes(view, s.n + h, k, 1.0, CLIP * scale, log, z, self._o)
            rls_predict(W[:1], z, self._o + k, pred)
            col[h] = math.exp(u_last + pred[0]) if log else u_last + pred[0]

    def _fill_features(self, s: _Stream, scale: float, z: np.ndarray, g: int) -> None:
        z[:] = 0.0
        z[0] = 1.0
        # Raw units (a running scale would change the coefficients' meaning as it moves): the
        # level since the stream's first value (a fixed anchor, unlike a running mean) and
        # the recent changes, clipped to a multiple of the typical change.
        lim = LEVEL_LIMIT * scale
        z[1] = max(-lim, min(lim, self._u(s.history[-1], g) - self._u(s.anchor, g)))
        # The features' slots hold 0 (their contribution is added when they are known) and
        # the change slots the features of this origin (the changes are taken at learning).
        if self.n_features:
            z[2 + self.n_features:self._o] = s.exog
        lag_changes(s.history, s.n, self._n_lags, 1.0, CLIP * scale, self.ar_units[g] == "log", z, self._o)

    # ------------------------------------------------------------------ forecasting
    def forecast(self, key: Hashable = None, xs: Sequence[Sequence[float]] | None = None) -> np.ndarray:
        """Forecasts of the next ``horizon`` values of stream ``key`` (h = 1 .. horizon).

        ``xs``: exogenous features of those times (a sequence of up to ``horizon`` rows;
        missing rows count as the features' means). Pure: nothing changes. Before the stream's
        first value, the forecasts are 0.

        >>> model = Forecaster(horizon=2)
        >>> for v in (1.0, 2.0, 3.0):
        ...     model.learn_one(v)
        >>> model.forecast().shape
        (2,)
        """
        H = self.horizon
        s = self._streams.get(key)
        if s is None or s.n == 0:
            return np.zeros(H)
        slot = (s.n - 1) % H
        F = self._latest_forecasts(s)
        F_z = s.features[0, slot]
        rows = list(xs) if xs is not None else []
        out = np.empty(H)
        for h in range(H):
            f = F[h]
            if h < len(rows) and self.n_features:
                xh = self._exogenous(rows[h], f"xs[{h}]")
                xz = self._scaled_exogenous(xh)
                f = f.copy()
                if self._ar and xz is not None:
                    self._add_exogenous(f, self._exogenous_part(xz, F_z[2 + self.n_features:self._o], h))
                if h == 0 and self._lstm is not None and not math.isnan(f[-1]):
                    f[-1] = self._lstm_predict(key, s, xh)
            out[h] = self._agg.combine(h, f)
        return out

    def forecast_interval(self, key: Hashable = None, xs: Sequence[Sequence[float]] | None = None
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`forecast` with its prediction intervals: ``(point, lower, upper)``, the
        point forecasts ``(horizon,)`` and the bounds ``(len(interval_levels), horizon)``.

        Row ``j`` of the bounds is the interval at ``interval_levels[j]``, calibrated on this
        key's own residuals at each horizon step (long-run coverage guaranteed whatever the
        forecasts, ``docs/calibration.md``). A step whose forecasts of this key have had no
        residual yet has NaN bounds (nothing is known of its errors). Needs ``interval_levels``.

        Asked when the key's next value is due (on a panel, after the other keys' values),
        it gives the forecast and interval of that moment; the forecasts are unchanged
        (pure, like :meth:`forecast`), and the interval is recorded as the one the next value
        is scored against (the calibrator learns from the intervals as handed out).

        >>> import math
        >>> model = Forecaster(horizon=2, interval_levels=[0.8, 0.95], lstm=False)
        >>> for t in range(300):
        ...     model.learn_one(10 + math.sin(t / 3) + 0.3 * math.cos(7 * t))
        >>> point, lower, upper = model.forecast_interval()
        >>> point.shape, lower.shape
        ((2,), (2, 2))
        >>> bool((lower[1] <= lower[0]).all() and (lower[0] < point).all() and (point < upper[0]).all())
        True
        """
        if self._calibration is None:
            raise ValueError("forecast_interval needs interval_levels: e.g. Forecaster(interval_levels=[0.9])")
        last = self._calibration.last
        if xs is None and last is not None and not self.n_features and last[0] == key:
            return last[1].copy(), last[2].copy(), last[3].copy()   # issued after the last value
        point = self.forecast(key, xs)
        lower, upper = self._calibration.bounds(key, point)
        s = self._streams.get(key)
        if xs is None and not self.n_features and s is not None and s.n:
            # the latest interval handed out is the one its value is scored against (intervals.py)
            self._calibration.record(key, point, lower, upper, s.n)
        return point, lower, upper

    def expert_forecasts(self, key: Hashable = None) -> dict[str, np.ndarray]:
        """Each expert's forecasts for h = 1 .. horizon (without exogenous features).

        >>> model = Forecaster(experts=("last_value",), ar_orders=())
        >>> model.learn_one(3.0)
        >>> model.expert_forecasts()["last_value"].tolist()
        [3.0]
        """
        s = self._streams.get(key)
        if s is None or s.n == 0:
            return {name: np.zeros(self.horizon) for name in self.expert_names}
        F = self._latest_forecasts(s)
        return {name: F[:, e].copy() for e, name in enumerate(self.expert_names)}

    def _latest_forecasts(self, s: _Stream) -> np.ndarray:
        """The experts' forecasts from the stream's latest value, the autoregressions' made
        with the pooled coefficients of now (with keys; one stream: nothing moved them since)."""
        slot = (s.n - 1) % self.horizon
        F = s.forecasts[slot]
        if REFRESH_KEYED_AR and self._ar and len(self._streams) > 1:
            F = F.copy()
            self._ar_forecasts(s, slot, F)
        return F

    @property
    def weights(self) -> np.ndarray:
        """Aggregation weights, one row per horizon, one column per ``expert_names`` entry."""
        return self._agg.weights.copy()

    @property
    def season_(self) -> int | None:
        """The season in use for the default stream (key ``None``; the first key otherwise)."""
        return self.season_of(None if None in self._streams or not self._streams else next(iter(self._streams)))

    def season_of(self, key: Hashable) -> int | None:
        """The season in use for stream ``key`` (``None``: none found or given).

        >>> Forecaster(season=7).season_of("unseen")
        7
        """
        s = self._streams.get(key)
        if s is None:
            return self.season if isinstance(self.season, int) else None
        return s.season or None

    @property
    def keys(self) -> list:
        """The streams seen, in order of first arrival."""
        return list(self._streams)

    # ------------------------------------------------------------------ persistence
    def get_params(self) -> dict[str, Any]:
        """The constructor's arguments.

        >>> Forecaster(horizon=4).get_params()["horizon"]
        4
        """
        return {"horizon": self.horizon, "season": self.season, "max_season": self.max_season,
                "ar_orders": list(self.ar_orders), "ar_units": list(self.ar_units), "multi_step": self.multi_step, "forgetting": self.forgetting, "ridge": self.ridge,
                "aggregation": self.aggregation, "discount": self.discount, "experts": list(self.experts),
                "n_features": self.n_features, "lstm": self.lstm, "lstm_hidden": self.lstm_hidden,
                "lstm_lr": self.lstm_lr, "seed": self.seed, "interval_levels": list(self.interval_levels)}

    def to_bytes(self) -> bytes:
        """Everything (settings, shared statistics, autoregressions, weights, every stream) as
        one versioned, pickle-free byte string. Keys must be strings, integers or ``None``.

        >>> model = Forecaster(); model.learn_one(1.0)
        >>> twin = Forecaster.from_bytes(model.to_bytes())
        >>> twin.learn_one(2.0); model.learn_one(2.0)
        >>> bool(twin.forecast() == model.forecast())
        True
        """
        keys = list(self._streams)
        for k in keys:
            if not (k is None or isinstance(k, (str, int))) or isinstance(k, bool):
                raise TypeError(f"only str, int or None keys can be saved, got {k!r}")
        arrays: dict[str, np.ndarray] = {
            "scale": self._scale, "scale_u": self._scale_u, "positive": self._positive, "moments": self._moments, "ar/ready": self._P_ready, "ar/updates": self._updates, "agg/weights": self._agg.weights,
            "agg/regret": self._agg.regret, "agg/squares": self._agg.squares, "agg/scale": self._agg.scale,
            "agg/meta": self._agg.meta}
        for j in range(len(self._ar)):
            arrays[f"ar/{j}/P"] = self._P[j]
            arrays[f"ar/{j}/W"] = self._W[j]
        streams = []
        for i, k in enumerate(keys):
            s = self._streams[k]
            streams.append({"key": k, **{a: getattr(s, a) for a in _Stream.SCALARS}})
            for a in _Stream.ARRAYS:
                arrays[f"stream/{i}/{a}"] = getattr(s, a)
        owner = -1
        if self._lstm is not None:
            arrays["lstm/model"] = np.frombuffer(self._lstm.model.to_bytes(), dtype=np.uint8)
            owner = keys.index(self._lstm.owner) if self._lstm.owner in self._streams else -1
            for i, k in enumerate(keys):
                st = self._streams[k].lstm_state
                if st is not None:
                    arrays[f"stream/{i}/lstm_buffer"] = st.buffer
                    arrays[f"stream/{i}/lstm_counters"] = st.counters
        params = self.get_params()
        if self._calibration is None:
            del params["interval_levels"]   # a file without intervals is the same as before they existed
        else:
            arrays.update(self._calibration.export(keys))
        meta = {"params": params, "streams": streams, "lstm_owner": owner}
        return persistence.dumps(_KIND, meta, arrays)

    @classmethod
    def from_bytes(cls, blob: bytes) -> Forecaster:
        """Rebuild a forecaster from :meth:`to_bytes`; it continues bit-identically.

        Every setting, count, shape, dtype and number is checked before it is used or sized
        from: a damaged or hostile byte string raises :class:`persistence.FormatError` naming
        the field, and never crashes the process, exhausts memory or loads a model that runs
        wrong (see ``_loading.py``).

        >>> Forecaster.from_bytes(b"not a forecaster")
        Traceback (most recent call last):
        ...
        streamlstm.persistence.FormatError: not a streamlstm file (bad magic bytes)
        """
        from ._loading import checked_forecaster

        _, meta, arrays = persistence.loads(blob, expect_kind=_KIND)
        with persistence.format_errors("streamlstm forecaster"):
            return checked_forecaster(cls, meta, arrays)
