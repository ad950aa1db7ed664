"""The River forecaster: a thin shell over the core forecasting engine
(:class:`streamlstm.Forecaster`), the one that ``streamlstm run --ahead H`` runs.

Every number is the engine's: this module only turns River's dict features into the engine's
rows, keeps the engine's bytes when pickled, and turns the engine's calibrated intervals
(``Forecaster(interval_levels=...)``, ``forecast_interval``) into ``river.conf.Interval``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from river import conf
from river.time_series.base import Forecaster as RiverForecaster

from streamlstm import Forecaster

from ._forecaster_0_1 import LSTMForecaster01
from .base import check_interval_level
from .features import Features, as_target

#: the engine's settings, passed through under their own names (``Forecaster.__init__``)
ENGINE_SETTINGS = ("horizon", "season", "max_season", "ar_orders", "ar_units", "multi_step", "forgetting",
                   "ridge", "aggregation", "discount", "experts", "lstm", "lstm_hidden", "lstm_lr", "seed")


class LSTMForecaster(RiverForecaster):
    """River's forecaster over the core forecasting engine :class:`streamlstm.Forecaster`:
    simple experts, online autoregressions and an LSTM on their residual, aggregated with
    ML-Poly weights, the season found online; the same numbers as the core and as
    ``streamlstm run --ahead H`` fed the same values.

    ``learn_one(y, x)`` learns the series' next value ``y`` (``x``: the exogenous features of
    its time); ``forecast(h, xs)`` returns the forecasts of the next ``h`` values (``xs``: the
    features of those times), ``h`` at most ``horizon``: the engine forecasts each step with
    its own direct models, so the steps it forecasts are fixed at construction, and a larger
    ``h`` is refused with an error that says which ``horizon`` to construct with.

    Parameters
    ----------
    horizon
        How many steps ahead the engine forecasts (the largest ``h`` of ``forecast``).
    season, max_season
        Season length in steps, ``None``, or ``"auto"`` (found online in the recent values, up
        to ``max_season``, by default 288; the one in use is ``season_``).
    ar_orders, ar_units, multi_step, forgetting, ridge
        The online autoregressions: lagged changes per expert, ``"raw"``/``"log"`` units,
        ``"direct"`` or ``"recursive"`` multi-step, the forgetting factor and the prior
        precision of their recursive least squares.
    aggregation, discount
        ``"mlpoly+ewa"`` (ML-Poly one step ahead, EWA beyond, the far horizons learning from
        each other's losses too), ``"mlpoly"``, ``"ewa"`` or
        ``"mean"`` weights over the experts, and the forgetting of their regrets.
    experts
        The simple experts to use (``None``: all of ``streamlstm.forecasting.engine.SIMPLE``).
    lstm, lstm_hidden, lstm_lr
        The LSTM expert (on the residual of the last value): whether to use it, its units and
        its Adam learning rate.
    seed
        Seeds the LSTM's initial weights (``None``: fresh randomness).
    exogenous
        Use the features ``x`` (``False``: ignore them, e.g. when ``x`` only holds a date).
        The features are those of the first event with a value (the engine's input width is
        fixed then; features that appear later are ignored); a missing one counts as its
        running mean; a value that is not a real number raises ``TypeError`` naming it.
    interval_level
        Coverage of the intervals ``forecast(h, xs, with_interval=True)`` returns (``None``:
        none). The engine calibrates each step on its own residuals (``interval_levels``).

    The settings are the engine's, under the same names and with the same defaults (chosen on
    the whole suite of ``bench/bench_forecast.py``); the engine is built at the first value.
    A value ``None`` (or NaN) is no value: nothing is learned and the forecasts stay those made
    after the latest value, as in the command line.

    Examples
    --------
    The monthly airline passengers with River's own evaluation (its ``x`` holds only the
    month's date, hence ``exogenous=False``). River's ``evaluate.evaluate`` asks for the
    forecast before learning ``y_t`` and scores it against ``y_{t+1} .. y_{t+h}``:

    >>> import statistics
    >>> from river import datasets, evaluate, metrics
    >>> from streamlstm.adapters.river import LSTMForecaster
    >>> model = LSTMForecaster(horizon=12, exogenous=False)
    >>> metric = evaluate.evaluate(datasets.AirlinePassengers(), model, metrics.MAE(), horizon=12)
    >>> print(f"MAE +1: {metric.get()[0]:.1f}, +12: {metric.get()[-1]:.1f}, mean: {statistics.mean(metric.get()):.1f}")
    MAE +1: 26.7, +12: 34.8, mean: 29.3
    >>> model.season_                     # found online
    12

    (River's HoltWinters with the season given, in the same evaluation: 25.9, 34.0, 28.8.)
    Calibrated intervals, one ``river.conf.Interval`` per step:

    >>> [round(v) for v in model.forecast(3)]
    [419, 398, 467]
    >>> [f"{i.lower:.0f}-{i.upper:.0f}" for i in model.forecast(3, with_interval=True)]
    ['396-440', '371-425', '440-493']
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
        lstm: bool = True,
        lstm_hidden: int = 16,
        lstm_lr: float = 3e-3,
        seed: int | None = 0,
        exogenous: bool = True,
        interval_level: float | None = 0.9,
    ):
        self.horizon = horizon
        self.season = season
        self.max_season = max_season
        self.ar_orders = ar_orders
        self.ar_units = ar_units
        self.multi_step = multi_step
        self.forgetting = forgetting
        self.ridge = ridge
        self.aggregation = aggregation
        self.discount = discount
        self.experts = experts
        self.lstm = lstm
        self.lstm_hidden = lstm_hidden
        self.lstm_lr = lstm_lr
        self.seed = seed
        self.exogenous = exogenous
        self.interval_level = interval_level
        check_interval_level(interval_level)
        self._new_engine(0)  # refuses a bad setting now, with the engine's message
        self._engine: Forecaster | None = None
        self._features = Features("levels")
        self._key: int | None = None   # the engine's key of the current series (reset_state: the next)

    @classmethod
    def _unit_test_params(cls):
        # river.checks forecasts 3 steps: each is built for them (a larger horizon is refused)
        yield {"horizon": 3, "lstm_hidden": 4}
        yield {"horizon": 3, "lstm_hidden": 4, "season": 3, "ar_orders": (2,), "interval_level": 0.8}
        yield {"horizon": 3, "lstm": False, "season": None, "experts": ("last_value", "damped_trend"),
               "interval_level": None}

    def _new_engine(self, n_features: int) -> Forecaster:
        levels = () if self.interval_level is None else (self.interval_level,)
        return Forecaster(n_features=n_features, interval_levels=levels,
                          **{name: getattr(self, name) for name in ENGINE_SETTINGS})

    @property
    def engine(self) -> Forecaster | None:
        """The core :class:`streamlstm.Forecaster` doing the work (``None`` before the first value)."""
        return self._engine

    @property
    def season_(self) -> int | None:
        """The season the engine uses (``None``: none found or given)."""
        if self._engine is None:
            return self.season if isinstance(self.season, int) else None
        return self._engine.season_of(self._key)

    # ------------------------------------------------------------------ features
    def _row(self, x: dict | None, learn: bool) -> np.ndarray | None:
        """The engine's exogenous row of ``x`` (``None`` when the engine takes none)."""
        if not self.exogenous:
            return None
        try:
            known, new = self._features.parse(x)
        except TypeError as exc:
            raise TypeError(f"{exc} (exogenous features must be numbers; encode it, or pass "
                            "exogenous=False to ignore x)") from None
        if self._engine is not None and self._engine.n_features == 0:
            return None
        row, _ = self._features.row(known, new if self._engine is None else None, learn=learn)
        return np.array(row, dtype=np.float64)

    # ------------------------------------------------------------------ River API
    def learn_one(self, y: float | None, x: dict | None = None) -> None:
        """Learn the series' next value ``y`` (``x``: the features of its time). ``None`` or
        NaN: no value, nothing is learned (the features are still checked)."""
        value = as_target(y)
        if value is None:
            self._row(x, learn=False)
            return
        row = self._row(x, learn=True)
        if self._engine is None:
            self._engine = self._new_engine(0 if row is None else len(row))
        self._engine.learn_one(value, row, self._key)

    def forecast(self, horizon: int, xs: Sequence[dict] | None = None,
                 with_interval: bool = False) -> list[float] | list[conf.Interval]:
        """The engine's forecasts of the next ``horizon`` values (pure). ``xs``: the features of
        those times (missing ones count as the features' means). ``horizon`` may not exceed
        the ``horizon`` setting.

        ``with_interval=True`` returns one ``river.conf.Interval`` per step instead, at
        ``interval_level`` around that step's forecast (as River's regressors do with
        ``predict_one(x, with_interval=True)``).

        >>> model = LSTMForecaster(horizon=2)
        >>> model.forecast(3)
        Traceback (most recent call last):
        ...
        ValueError: forecast(horizon=3): this forecaster forecasts up to 2 steps; construct it with LSTMForecaster(horizon=3)
        """
        if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
            raise ValueError(f"forecast(horizon={horizon!r}): the horizon must be an integer >= 1")
        if horizon > self.horizon:
            raise ValueError(f"forecast(horizon={horizon}): this forecaster forecasts up to {self.horizon} steps; "
                             f"construct it with LSTMForecaster(horizon={horizon})")
        if with_interval and self.interval_level is None:
            raise ValueError("with_interval=True needs intervals: construct the forecaster with "
                             "interval_level=0.9 (or another level in (0, 1)), not None")
        if self._engine is None:
            if with_interval:  # nothing is known of the errors yet
                return [conf.Interval(-np.inf, np.inf) for _ in range(horizon)]
            return [0.0] * horizon
        rows = None
        if xs is not None and self._engine.n_features:
            rows = [self._row(x, learn=False).tolist() for x in list(xs)[:horizon]]  # type: ignore[union-attr]
        if not with_interval:
            return self._engine.forecast(self._key, rows)[:horizon].tolist()
        _, lower, upper = self._engine.forecast_interval(self._key, rows)
        # NaN: a step without a residual yet, about whose errors nothing is known
        return [conf.Interval(-np.inf if lo != lo else float(lo), np.inf if hi != hi else float(hi))
                for lo, hi in zip(lower[0, :horizon], upper[0, :horizon])]

    # ------------------------------------------------------------------ state
    def reset_state(self) -> None:
        """Start a new series, keeping what was learned across series (the autoregressions, the
        LSTM's weights, the aggregation weights, the interval calibration): the engine serves
        the new series under a key of its own, whose values, season and LSTM state start empty.
        The previous series' values stay in the engine (about 4 kB each).

        >>> model = LSTMForecaster()
        >>> model.learn_one(5.0)
        >>> model.reset_state()
        >>> model.forecast(1)
        [0.0]
        """
        if self._engine is not None:
            self._key = 0 if self._key is None else self._key + 1

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self._engine is not None:  # the engine's own versioned, checked bytes
            state["_engine"] = self._engine.to_bytes()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "_engine" not in state:  # pickled by 0.1.0: its own design, kept in LSTMForecaster01
            self.__class__ = LSTMForecaster01  # type: ignore[assignment]
            self.__setstate__(state)
            return
        if isinstance(state["_engine"], bytes):
            state = {**state, "_engine": Forecaster.from_bytes(state["_engine"])}
        self.__dict__.update(state)
