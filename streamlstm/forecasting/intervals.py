"""Prediction intervals of the forecasting engine: its online calibrator, one row per stream.

:class:`~streamlstm.forecasting.Forecaster` owns one :class:`ForecastCalibration` when it is
given ``interval_levels``. Each value that arrives is the target of the forecasts made 1 ..
``horizon`` steps before it; their residuals are fed to an
:class:`~streamlstm.calibration.OnlineCalibrator` (one state row per stream, one tracker set
per horizon step), which turns the next forecasts into intervals. Nothing of this exists
(no state, no cost, no bytes in a saved file) without ``interval_levels``.

The residuals and the misses are those of the forecasts and intervals *as issued*: the engine
records the forecasts of a stream right after each of its values
(:meth:`ForecastCalibration.issue`: what ``forecast_interval(key)`` gives then) and each value
is compared with the forecasts and bounds recorded 1 .. ``horizon`` of its values before. On
a panel a key's forecast and interval are issued, then the other keys' values move the shared
aggregation weights and the shared (pooled) trackers before the key's next value arrives:
the forecast and bounds recomputed at that moment are not the ones the user got, and learning
from them under-covered the issued intervals (chick weights: 0.61 at 0.8).

A user who asks ``forecast_interval(key)`` later, when the value is due (on a panel, after
the other keys' values of the round), gets the forecast and interval of that moment (the
pooled autoregressions and trackers as they are then); that request is recorded
(:meth:`ForecastCalibration.record`) and replaces the one issued right after the key's value,
so the value is scored against what the user was last given. A consumer that never asks
again (the CLI, which writes each row's interval right after its value) keeps scoring the
interval issued then. Either way the calibrator learns from the misses of intervals as they
were handed out; on chick weights the interval asked just before the value is both narrower
(the refreshed autoregressions: one-step MAE 5.80 against 7.78) and covered per key
(``bench/bench_intervals.py``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from .._kernels import calibration as K
from .._kernels.state_check import MAX_STORED_COUNTER
from ..calibration import INTEGRATOR_SATURATION, OnlineCalibrator

#: the forecasting engine's calibrator settings (``Forecaster`` passes them; the CLI's and
#: Flink's regression and bare-LSTM paths keep ``OnlineCalibrator``'s defaults): the error
#: integrator saturates twice as early (``C_sat`` 0.1 instead of 0.2), so a lasting coverage
#: error is corrected about twice as fast. Chosen over the nine series of
#: ``bench/bench_intervals.py`` (ablations in ``docs/calibration.md``): every series within its
#: coverage tolerance with a margin (at most 0.61 of it, panels per key at most 0.87 of their
#: band; with 0.2 chick weights missed at 0.95 by 1.07-1.30 of it), at the price of some
#: width (no wider than River's jackknife in 4 of 27 cases instead of 6)
ENGINE_INTEGRATOR_SATURATION = 0.1
#: the engine's integrator dead band (``OnlineCalibrator(integrator_band=...)``) while it
#: calibrates one stream: a run of misses within 1.5 binomial standard deviations of chance
#: moves no bound, and the single series' intervals are 5-15% narrower at the same coverage
#: (``docs/calibration.md``). Pooled over the keys of a panel it is off: there the misses of a
#: key's interval arrive a round of keys late and the trackers' steps are divided by that
#: delay, so the integrator is the main corrector (with the band, the intervals the CLI writes
#: a round ahead covered chick weights 0.70 at 0.8)
ENGINE_INTEGRATOR_BAND = 1.5
STATE_ARRAY = "calibrator/state"
ISSUED_ARRAY = "calibrator/issued"


class ForecastCalibration:
    """The calibrator of a forecaster's ``horizon`` steps, with a state row per stream (key).

    Rows are given in order of the streams' first values (the forecaster's ``keys``); the
    state grows by doubling, so that a fleet of keys costs amortised O(1) per new key.
    ``integrator_saturation`` and ``integrator_band`` go to the
    :class:`~streamlstm.calibration.OnlineCalibrator` (the forecasting engine passes
    ``ENGINE_INTEGRATOR_SATURATION`` and ``ENGINE_INTEGRATOR_BAND``); the band is dropped when
    a second stream gets a row.

    >>> cal = ForecastCalibration([0.9], horizon=2)
    >>> cal.observe("a", np.array([0.5, np.nan]))        # the first value's 1-step residual
    >>> lo, hi = cal.bounds("a", np.array([10.0, 10.0]))
    >>> lo.shape, bool(np.isnan(lo[0, 1]))                # step 2 has no residual yet
    ((1, 2), True)
    """

    def __init__(self, levels: Sequence[float], horizon: int, pooled: bool = True,
                 integrator_saturation: float = INTEGRATOR_SATURATION, integrator_band: float = 0.0) -> None:
        self.calibrator = OnlineCalibrator(levels=levels, horizon=horizon, pooled=pooled,
                                           integrator_saturation=integrator_saturation, integrator_band=integrator_band)
        self.rows: dict[Hashable, int] = {}
        # per row, what was issued after each of the last ``horizon`` values (slot
        # ``(n - 1) % horizon`` after the n-th value): the forecasts, the count of tracker
        # steps then, the lower and the upper bounds of each level, for h = 1 .. horizon;
        # NaN: none issued
        J = len(self.calibrator.levels)
        self.issued = np.full((1, horizon, 2 + 2 * J, horizon), np.nan)
        self._residuals = np.empty(horizon)
        self._misses = np.empty((horizon, 2 * J + 1))
        # the last issue ``(key, point, lower, upper)``: what ``forecast_interval(key)`` gives
        # until the next value is learned (the engine of a model without features issues
        # after every value, so it is never stale; it spares recomputing it)
        self.last: tuple | None = None

    @property
    def levels(self) -> tuple[float, ...]:
        return self.calibrator.levels

    def row(self, key: Hashable) -> int:
        """The state row of ``key``, made (fresh) at its first use."""
        r = self.rows.get(key)
        if r is None:
            r = self.rows[key] = len(self.rows)
            cal = self.calibrator
            if r == 1 and cal.integrator_band:
                cal.retune(integrator_band=0.0)   # a second stream: no dead band (ENGINE_INTEGRATOR_BAND)
            state, pool = cal.state, int(cal.pooled)
            if r >= state.shape[0] - pool:  # the pooled trackers stay in the last row
                grown = np.zeros((max(2 * state.shape[0], r + 1 + pool), *state.shape[1:]))
                grown[:r] = state[:r]
                if pool:
                    grown[-1] = state[-1]
                cal.state = grown
            if r >= self.issued.shape[0]:
                more = np.full((max(2 * self.issued.shape[0], r + 1), *self.issued.shape[1:]), np.nan)
                more[:self.issued.shape[0]] = self.issued
                self.issued = more
        return r

    def issue(self, key: Hashable, point: np.ndarray, n: int) -> None:
        """Record the forecasts ``point`` (h = 1 .. horizon) of ``key`` issued after its
        ``n``-th value, and their bounds now: the next values are compared with them."""
        lo, hi = self.bounds(key, point)
        self.last = (key, point.copy(), lo.copy(), hi.copy())
        self.record(key, point, lo, hi, n)

    def record(self, key: Hashable, point: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: int) -> None:
        """Record ``point`` and its bounds ``lo``, ``hi`` as the key's forecasts and intervals
        issued after its ``n``-th value, replacing any issued earlier from that value: the
        next value is scored against the latest ones handed out (see the module's docstring)."""
        J = lo.shape[0]
        r = self.row(key)
        cal = self.calibrator
        slot = self.issued[r, (n - 1) % cal.horizon]
        slot[0] = point
        slot[1] = cal.state[cal.state.shape[0] - 1 if cal.pooled else r, :, K.F_N]   # the trackers' steps so far
        slot[2:2 + J] = lo
        slot[2 + J:] = hi

    def observe_value(self, key: Hashable, y: float, n: int) -> None:
        """Fold in the value ``y`` that follows the key's ``n``-th value: the residuals of
        the forecasts issued 1 .. horizon values before it, and whether it fell outside the
        bounds issued with them (a step without an issued forecast is skipped)."""
        r = self.row(key)
        cal = self.calibrator
        H, J = cal.horizon, len(cal.levels)
        steps = cal.state[cal.state.shape[0] - 1 if cal.pooled else r, :, K.F_N]
        res, misses = self._residuals, self._misses
        for h in range(1, H + 1):
            if h > n:
                res[h - 1] = np.nan
                continue
            issued = self.issued[r, (n - h) % H, :, h - 1]
            res[h - 1] = y - issued[0]
            if J and issued[2] == issued[2]:
                misses[h - 1, :J] = y < issued[2:2 + J]
                misses[h - 1, J:2 * J] = y > issued[2 + J:]
                misses[h - 1, 2 * J] = max(1.0, steps[h - 1] - issued[1] + 1.0)   # tracker steps since issued, this one included
            else:   # no bounds were issued (no residual of this step yet): the current ones
                misses[h - 1, 0] = np.nan
        K.observe_issued(cal.state, cal.params, r, res, misses)

    def observe(self, key: Hashable, residuals: np.ndarray) -> None:
        """Fold in the residuals of the forecasts of 1 .. horizon steps that the value just
        arrived was the target of (NaN: no forecast of that step was made yet)."""
        r = self.row(key)   # first: a new key may grow (replace) the state array
        cal = self.calibrator
        K.observe(cal.state, cal.params, r, residuals, cal._p)

    def bounds(self, key: Hashable, point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds ``(levels, horizon)`` around the forecasts ``point``; NaN
        for a step of a stream that has had no residual at that step yet (nothing is known)."""
        cal = self.calibrator
        J, H = len(cal.levels), cal.horizon
        r = self.rows.get(key)
        if r is None:
            return np.full((J, H), np.nan), np.full((J, H), np.nan)
        lo, hi = np.empty((H, J)), np.empty((H, J))
        K.intervals(cal.state, cal.params, r, np.ascontiguousarray(point, dtype=np.float64), lo, hi)
        unknown = cal.state[r, :, K.F_N] == 0.0
        lo[unknown] = np.nan
        hi[unknown] = np.nan
        return lo.T.copy(), hi.T.copy()

    def state_of(self, keys: list[Hashable]) -> np.ndarray:
        """The rows of ``keys`` (in that order), then the pooled trackers' row when pooled, as
        one ``(rows, horizon, width)`` array."""
        idx = [self.rows[k] for k in keys] + ([self.calibrator.state.shape[0] - 1] if self.calibrator.pooled else [])
        return self.calibrator.state[idx].copy()

    def load(self, keys: list[Hashable], arrays: dict[str, np.ndarray]) -> None:
        """Install a saved state, one row per key in ``keys`` (the streams' order), after
        checking its dtype, shape, finiteness and counts (a hostile file is refused, naming
        the field, before anything is used)."""
        cal = self.calibrator
        shape = (len(keys) + int(cal.pooled), cal.horizon, cal.width)
        a = arrays.get(STATE_ARRAY)
        if a is None:
            raise ValueError(f"array {STATE_ARRAY!r} (the interval calibrator's state) is missing")
        if a.dtype == np.float64:
            a = cal.upgrade(a)   # saved before the error integrator: zero integrals
        if a.dtype != np.float64 or a.shape != shape:
            raise ValueError(f"array {STATE_ARRAY!r} is {a.dtype} {a.shape}, expected float64 {shape}")
        flat = a.reshape(-1)
        bad = np.flatnonzero(~np.isfinite(flat))
        if bad.size:
            raise ValueError(f"array {STATE_ARRAY!r} holds a non-finite value at position {int(bad[0])}")
        n, scale = a[..., K.F_N], a[..., K.F_SCALE]
        if not ((n >= 0) & (n <= MAX_STORED_COUNTER) & (n == np.floor(n))).all():
            raise ValueError(f"array {STATE_ARRAY!r}: a residual count is not an integer in [0, {MAX_STORED_COUNTER}]")
        if not (scale >= 0).all() or not (a[..., cal.candidate_scales] >= 0).all():
            raise ValueError(f"array {STATE_ARRAY!r}: a residual scale is negative")
        issued = arrays.get(ISSUED_ARRAY)
        if issued is not None:   # absent from files saved before it existed: nothing recorded
            want = (len(keys), *self.issued.shape[1:])
            if issued.dtype != np.float64 or issued.shape != want:
                raise ValueError(f"array {ISSUED_ARRAY!r} is {issued.dtype} {issued.shape}, expected float64 {want}")
            if np.isinf(issued).any():
                raise ValueError(f"array {ISSUED_ARRAY!r} holds an infinite forecast (NaN: none issued)")
        for k in keys:
            self.row(k)
        cal.state[:len(keys)] = a[:len(keys)]
        if cal.pooled:
            cal.state[-1] = a[-1]
        if issued is not None:
            self.issued[:len(keys)] = issued

    def export(self, keys: list[Hashable]) -> dict[str, Any]:
        """The arrays :meth:`load` reads back, for the streams ``keys`` in that order."""
        return {STATE_ARRAY: self.state_of(keys), ISSUED_ARRAY: self.issued[[self.rows[k] for k in keys]].copy()}
