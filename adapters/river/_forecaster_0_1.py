"""0.1.0's River forecaster (the LSTM learns what moves a series away from a simple base, the last
value or a seasonal one), kept to load and continue the estimators 0.1.0 pickled; new code uses
:mod:`.forecaster`, a shell over the core forecasting engine."""

from __future__ import annotations

import collections
import copy
from typing import Any, ClassVar

import numpy as np
from river import conf
from river.time_series.base import Forecaster

from .base import LSTMEstimator, new_calibrator
from .features import Features, as_target
from .running_median import RunningMedianAbs

_CLIP_INPUT = 5.0       # robustly scaled series inputs of the forecaster are clipped to +-5
_SELECT_RATE = 0.02     # EW rate of the errors that choose the forecaster's base
_FORECAST_COPY_FROM = 48  # forecast horizons above this roll a deep copy of the network


class LSTMForecaster01(LSTMEstimator, Forecaster):
    """0.1.0's River forecaster, kept only so that estimators pickled by 0.1.0 load and go on
    exactly as they did (``LSTMForecaster.__setstate__`` hands such a pickle to this class).

    Its own design: the LSTM learns what moves the series from a base (the last value or a
    seasonal one) on robustly scaled lagged changes, and rolls a copy of its state forward to
    forecast; an :class:`~streamlstm.calibration.OnlineCalibrator` gives its intervals. New
    code uses :class:`streamlstm.adapters.river.LSTMForecaster` (the core engine).
    """

    residual: bool
    season: int | None
    multiplicative: bool
    season_smoothing: float
    n_lags: int
    exogenous: bool
    loss: str
    interval_level: float | None
    interval_horizon: int
    _added_settings: ClassVar[dict[str, Any]] = {"interval_level": 0.9, "interval_horizon": 1}
    _made: collections.deque[list[float]]

    def __init__(
        self,
        residual: bool = True,
        season: int | None = None,
        multiplicative: bool = True,
        season_smoothing: float = 0.5,
        n_lags: int = 24,
        exogenous: bool = True,
        hidden: int = 16,
        layers: int = 1,
        cell: str = "lstm",
        bptt: int = 16,
        update_every: int = 1,
        optimizer: str = "adam",
        lr: float = 3e-3,
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
        rho: float = 0.99,
        eps: float = 1e-8,
        clip: float | None = 1.0,
        l2: float = 0.0,
        loss: str = "squared",
        huber_delta: float = 1.0,
        dtype: str = "float32",
        seed: int | None = 0,
        interval_level: float | None = 0.9,
        interval_horizon: int = 1,
    ):
        self._set_params(locals())

    def _check(self) -> None:
        if self.loss not in ("squared", "huber"):
            raise ValueError(f"loss must be 'squared' or 'huber', got {self.loss!r}")
        if self.season is not None and (not isinstance(self.season, int) or self.season < 1):
            raise ValueError(f"season must be a positive integer or None, got {self.season!r}")
        if not isinstance(self.n_lags, int) or self.n_lags < 1:
            raise ValueError(f"n_lags must be a positive integer, got {self.n_lags!r}")
        if not 0.0 < self.season_smoothing <= 1.0:
            raise ValueError(f"season_smoothing must be in (0, 1], got {self.season_smoothing!r}")
        if isinstance(self.interval_horizon, bool) or not isinstance(self.interval_horizon, int) or self.interval_horizon < 1:
            raise ValueError(f"interval_horizon must be a positive integer, got {self.interval_horizon!r}")
        super()._check()

    def _core_kwargs(self) -> dict[str, Any]:
        kw = super()._core_kwargs()
        kw["standardize_inputs"] = True
        kw["standardize_targets"] = not self.residual
        return kw

    @classmethod
    def _unit_test_params(cls):
        yield {"hidden": 4, "bptt": 4, "n_lags": 2}
        yield {"hidden": 4, "n_lags": 3, "season": 2, "residual": False}
        yield {"hidden": 4, "n_lags": 2, "season": 3, "multiplicative": False}
        yield {"hidden": 4, "n_lags": 2, "interval_horizon": 3, "interval_level": 0.8}

    def _reset_learning(self) -> None:
        super()._reset_learning()
        self._features = Features("levels")
        self._reset_series()
        self._profile: dict[int, float] = {}
        self._err_last: float | None = None
        self._err_season: float | None = None
        self._scale_change = RunningMedianAbs()
        self._scale_error = RunningMedianAbs()
        self._calibrator = new_calibrator(self.interval_level, self.interval_horizon)

    def _upgrade_state(self) -> None:
        self._calibrator = new_calibrator(self.interval_level, self.interval_horizon)
        self._made = collections.deque(maxlen=self.interval_horizon)  # what _reset_series makes

    def _reset_series(self) -> None:
        size = max(self.n_lags, self.season or 0) + 1
        self._history: collections.deque = collections.deque(maxlen=size)  # values, latest last
        self._t = 0           # steps of the series seen (phase = t % season)
        self._error = 0.0     # error of the base at the last step
        # the forecasts made at the last interval_horizon events, latest last (for the calibrator)
        self._made = collections.deque(maxlen=self.interval_horizon)

    def reset_state(self) -> None:
        """Start a new series: zero the network's state and forget the last values (the
        weights, the seasonal profile and the scales are kept)."""
        super().reset_state()
        self._reset_series()

    # ------------------------------------------------------------------ pieces
    def _seasonal(self, last: float, t: int) -> float | None:
        if self.season is None:
            return None
        p = self._profile.get(t % self.season)
        if p is None:
            return None
        return last * (1.0 + p) if self.multiplicative else last + p

    def _base(self, last: float, t: int) -> float:
        if not self.residual:
            return 0.0
        if self._err_season is not None and self._err_last is not None and self._err_season < self._err_last:
            b = self._seasonal(last, t)
            if b is not None:
                return b
        return last

    def _series_inputs(self, history, error: float) -> list[float]:
        h = list(history)
        n = self.n_lags
        if not self.residual:
            vals = h[::-1][:n]
            return vals + [vals[-1]] * (n - len(vals))
        s = self._scale_change.get()
        c = _CLIP_INPUT
        out = []
        for l in range(1, n + 1):
            if l + 1 <= len(h):
                d = (h[-l] - h[-l - 1]) / s
                out.append(c if d > c else -c if d < -c else d)
            else:
                out.append(0.0)
        e = error / self._scale_error.get()
        out.append(c if e > c else -c if e < -c else e)
        return out

    def _exog(self, x: dict | None, learn: bool) -> tuple[list[float], int]:
        if not self.exogenous:
            return [], 0
        try:
            known, new = self._features.parse(x)
        except TypeError as exc:
            raise TypeError(f"{exc} (exogenous features must be numbers; encode it, or pass "
                            "exogenous=False to ignore x)") from None
        return self._features.row(known, new, learn=learn)

    def _target_scale(self) -> float:
        return self._scale_error.get() if self.residual else 1.0

    def _observe(self, y: float) -> None:
        """Update the base's statistics with y (the step's value) and move to the next step."""
        if self._history:
            last = self._history[-1]
            t = self._t
            b = self._base(last, t)
            self._error = y - b if self.residual else 0.0
            self._scale_error.update(y - b)
            self._scale_change.update(y - last)
            sb = self._seasonal(last, t)
            if sb is not None:
                el, es = abs(y - last), abs(y - sb)
                if self._err_season is None:
                    self._err_last, self._err_season = el, es
                else:
                    self._err_last += _SELECT_RATE * (el - self._err_last)
                    self._err_season += _SELECT_RATE * (es - self._err_season)
            if self.season is not None:
                if self.multiplicative:
                    v = (y - last) / last if last != 0.0 else None
                else:
                    v = y - last
                if v is not None:
                    phase = t % self.season
                    p = self._profile.get(phase)
                    self._profile[phase] = v if p is None else p + self.season_smoothing * (v - p)
        self._history.append(y)
        self._t += 1

    # ------------------------------------------------------------------ River API
    def learn_one(self, y: float | None, x: dict | None = None) -> None:
        """Learn the series' next value ``y`` (with its exogenous features ``x``). ``y=None``:
        the value is unknown; the state advances and the value is taken as the forecast."""
        if y is None:
            self.advance_one(x)
            return
        f = as_target(y)
        if f is None:
            self.advance_one(x)
            return
        ahead = self._forecast_to_calibrate(x)
        exog, n_new = self._exog(x, learn=True)
        if self._history:
            row = self._series_inputs(self._history, self._error) + exog
            if self._model is None:
                self._model = self._new_core(len(row))
            elif n_new:
                self._model.add_inputs(n_new)
            b = self._base(self._history[-1], self._t)
            scale = self._target_scale()
            out = float(self._model.learn_one(np.array(row, dtype=np.float64), (f - b) / scale))
            if self._calibrator is not None:
                self._calibrate(f, [b + out * scale] if ahead is None else ahead)
        self._observe(f)

    def _forecast_to_calibrate(self, x: dict | None) -> list[float] | None:
        """The forecast of the steps beyond the next one, made before the value arrives (None
        when only the next step is calibrated: learn_one's own prediction is that one)."""
        if self._calibrator is None or self.interval_horizon == 1 or not self._history:
            return None
        return self._forecast(self.interval_horizon, [x] if x is not None else None)

    def _calibrate(self, y: float, made_now: list[float]) -> None:
        """Keep the forecast made for ``y``'s step and the next ones (before ``y`` was known),
        then feed the calibrator the residual of every forecast whose step ``s`` is ``y``'s."""
        made = self._made
        made.append(made_now)
        if self.interval_horizon == 1:
            self._calibrator.update(float(y - made_now[0]))  # type: ignore[union-attr]
            return
        residuals = np.full(self.interval_horizon, np.nan)
        for s in range(len(made)):
            residuals[s] = y - made[-1 - s][s]  # the forecast made s events before this one
        self._calibrator.update(residuals)  # type: ignore[union-attr]

    def advance_one(self, x: dict | None = None) -> None:
        """Step the series without observing its value: the state advances and the one-step
        forecast stands in for the value."""
        ahead = self._forecast_to_calibrate(x)
        exog, n_new = self._exog(x, learn=True)
        if not self._history:
            return
        if self._calibrator is not None:
            # the value of this step never arrives: only the later steps of its forecast count
            self._made.append([np.nan] if ahead is None else ahead)
        row = self._series_inputs(self._history, self._error) + exog
        if self._model is None:
            self._model = self._new_core(len(row))
        elif n_new:
            self._model.add_inputs(n_new)
        last, t = self._history[-1], self._t
        out = float(self._model.advance(np.array(row, dtype=np.float64)))
        y_hat = self._base(last, t) + out * self._target_scale()
        self._history.append(y_hat)
        self._t += 1
        self._error = 0.0

    def forecast(self, horizon: int, xs: list[dict] | None = None,
                 with_interval: bool = False) -> list[float] | list[conf.Interval]:
        """Forecasts for the next ``horizon`` steps (``xs``: their exogenous features, any
        sequence; missing ones count as the features' means). Pure: a copy of the state rolls
        forward, each forecast feeding the next step.

        ``with_interval=True`` returns one ``river.conf.Interval`` per step instead, at
        ``interval_level`` around that step's forecast (as River's regressors do with
        ``predict_one(x, with_interval=True)``); ``horizon`` may not exceed
        ``interval_horizon``."""
        if with_interval:
            cal = self._calibrator
            if cal is None:
                raise ValueError("with_interval=True needs a calibrator: construct the forecaster with "
                                 "interval_level=0.9 (or another level in (0, 1)), not None")
            if horizon > cal.horizon:
                raise ValueError(f"intervals are calibrated up to interval_horizon={cal.horizon} steps, "
                                 f"{horizon} were asked: construct the forecaster with interval_horizon={horizon}")
            points = self._forecast(horizon, xs)
            if cal.horizon == 1:
                return [conf.Interval(*cal.bounds(p)) for p in points]
            lower, upper = cal.interval(points + [points[-1] if points else 0.0] * (cal.horizon - horizon))
            return [conf.Interval(float(lower[s, 0]), float(upper[s, 0])) for s in range(horizon)]
        return self._forecast(horizon, xs)

    def _forecast(self, horizon: int, xs: list[dict] | None) -> list[float]:
        if not self._history:
            return [0.0] * horizon
        xs = list(xs) if xs is not None else []
        if self._model is None:
            return [self._history[-1]] * horizon
        n_in = self._model.n_inputs
        history = collections.deque(self._history, maxlen=self._history.maxlen)
        t, error, scale = self._t, self._error, self._target_scale()
        rows: list[list[float]] = []
        out: list[float] = []
        copy_model = copy.deepcopy(self._model) if horizon > _FORECAST_COPY_FROM else None
        for k in range(horizon):
            exog, _ = self._exog(xs[k] if k < len(xs) else None, learn=False)
            row = self._series_inputs(history, error) + exog
            row += [0.0] * (n_in - len(row))  # features the network has not grown yet
            if copy_model is not None:
                o = float(copy_model.advance(np.array(row, dtype=np.float64)))
            elif k == 0:
                rows.append(row)
                o = float(self._model.predict_one(np.array(row, dtype=np.float64)))
            else:
                rows.append(row)
                o = float(self._model.predict_many(np.array(rows, dtype=np.float64))[-1, 0])
            last = history[-1]
            y_hat = self._base(last, t) + o * scale
            out.append(y_hat)
            history.append(y_hat)
            t += 1
            error = 0.0
        return out


