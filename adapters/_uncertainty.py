"""The ``--interval LEVEL`` and ``--anomaly`` columns of ``streamlstm run``, per key.

Every number comes from the core: the intervals from an
:class:`~streamlstm.OnlineCalibrator` (through
:class:`streamlstm.forecasting.intervals.ForecastCalibration`, one state row per key), or,
on the forecasting engine's path, from the engine's own :meth:`Forecaster.forecast_interval`;
the anomaly score from an :class:`~streamlstm.AnomalyScorer` (one state row per key). This
module only routes each row's prequential residual to its key's row and keeps those rows in
the checkpoint.

Order within a row (nothing is ever calibrated on the value it is scored or bounded by):

* regression (``pred`` is the prediction of this row's target): the interval around
  ``pred`` is taken first, then the residual ``y - pred`` is folded in;
* forecasting (``pred`` is the forecast for H rows later, ``prev`` the forecast made H rows
  earlier for this row): the residual ``y - prev`` of the H-step forecast is folded in, then
  the interval of ``pred`` (of step H) is taken.

The anomaly score of a row is that of its target value against the forecast made for it
(``pred`` or ``prev``); a row without a target value or without a forecast has none.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from streamlstm import AnomalyScorer
from streamlstm.forecasting.intervals import ForecastCalibration

from ._csvio import Block, CliError

ANOMALY_ARRAY = "anomaly/state"


def level_name(level: float) -> str:
    """The column suffix of a level: its shortest exact decimal (``0.9`` -> ``'0.9'``).

    >>> level_name(0.9), level_name(0.95)
    ('0.9', '0.95')
    """
    return repr(float(level))


def column_names(levels: Sequence[float], anomaly: bool) -> list[str]:
    """``lo_<level>``, ``hi_<level>`` per level, then ``anomaly_score``.

    >>> column_names([0.8, 0.95], True)
    ['lo_0.8', 'hi_0.8', 'lo_0.95', 'hi_0.95', 'anomaly_score']
    """
    names = [f"{side}_{level_name(v)}" for v in levels for side in ("lo", "hi")]
    return names + (["anomaly_score"] if anomaly else [])


class RowUncertainty:
    """The extra columns of each output row, per key (see the module's doc for the order).

    ``levels``: the ``--interval`` levels; ``anomaly``: ``--anomaly``; ``ahead``: H (0 for
    regression); ``own_intervals``: calibrate here (the bare LSTM's paths) rather than take
    the forecasting engine's bounds.

    >>> import numpy as np
    >>> unc = RowUncertainty([0.9], anomaly=True, ahead=0)
    >>> keys = [None] * 3
    >>> cols = unc.columns(keys, np.array([1.0, 2.0, 3.0]), np.ones(3, dtype=bool),
    ...                    np.array([1.1, 1.9, 3.2]), None)
    >>> len(cols), cols[0].shape                   # lo, hi, anomaly_score
    (3, (3,))
    """

    def __init__(self, levels: Sequence[float], anomaly: bool, ahead: int, own_intervals: bool = True) -> None:
        self.levels = tuple(float(v) for v in levels)
        self.anomaly = bool(anomaly)
        self.ahead = int(ahead)
        self.intervals = ForecastCalibration(self.levels, 1) if self.levels and own_intervals else None
        self.scorer = AnomalyScorer() if self.anomaly else None
        self.rows: dict[Hashable, int] = {}    # the anomaly scorer's state row of each key
        self._point = np.zeros(1)
        self._residual = np.zeros(1)

    @property
    def active(self) -> bool:
        return bool(self.levels) or self.anomaly

    def _scorer_row(self, key: Hashable) -> int:
        assert self.scorer is not None
        r = self.rows.get(key)
        if r is None:
            r = self.rows[key] = len(self.rows)
            cal = self.scorer.calibrator
            if r >= cal.state.shape[0]:  # doubling: a fleet of keys costs amortised O(1) per key
                grown = np.zeros((max(2 * cal.state.shape[0], r + 1), *cal.state.shape[1:]))
                grown[:cal.state.shape[0]] = cal.state
                cal.state = grown
        return r

    def columns(self, keys: Sequence[Hashable], y: np.ndarray, known: np.ndarray, pred: np.ndarray,
                prev: np.ndarray | None, bounds: tuple[np.ndarray, np.ndarray] | None = None) -> list[np.ndarray]:
        """The extra columns of a block of rows: per level a lower and an upper bound
        column, then the anomaly scores (NaN: none for that row).

        ``bounds``: the forecasting engine's ``(lower, upper)`` per row, ``(rows, levels)``,
        used instead of this object's own calibrator.
        """
        n = len(pred)
        J = len(self.levels)
        lo = np.full((J, n), np.nan)
        hi = np.full((J, n), np.nan)
        score = np.full(n, np.nan)
        forecasting = self.ahead > 0
        target_forecast = prev if forecasting and prev is not None else pred
        yl, kl, pl, tl = y.tolist(), known.tolist(), pred.tolist(), target_forecast.tolist()
        cal = self.intervals
        for i in range(n):
            key = keys[i]
            r_known = kl[i] and tl[i] == tl[i]
            if cal is not None:
                if not forecasting and pl[i] == pl[i]:
                    self._bounds(cal, key, pl[i], lo, hi, i)
                if r_known:
                    self._residual[0] = yl[i] - tl[i]
                    cal.observe(key, self._residual)
                if forecasting and pl[i] == pl[i]:
                    self._bounds(cal, key, pl[i], lo, hi, i)
            if self.scorer is not None and r_known:
                row = self._scorer_row(key)   # first: a new key may grow the state array
                score[i] = self.scorer.score(yl[i], tl[i], row)
        if bounds is not None and J:
            lo[:] = bounds[0].T
            hi[:] = bounds[1].T
        out: list[np.ndarray] = []
        for j in range(J):
            out += [lo[j], hi[j]]
        if self.scorer is not None:
            out.append(score)
        return out

    def _bounds(self, cal: ForecastCalibration, key: Hashable, point: float, lo: np.ndarray, hi: np.ndarray,
                i: int) -> None:
        self._point[0] = point
        lower, upper = cal.bounds(key, self._point)
        lo[:, i] = lower[:, 0]
        hi[:, i] = upper[:, 0]

    # --------------------------------------------------------- persistence
    def export(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(meta, arrays)`` for the checkpoint: the keys in row order and the states."""
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {}
        if self.intervals is not None:
            keys = list(self.intervals.rows)
            meta["interval_keys"] = keys
            arrays.update(self.intervals.export(keys))
        if self.scorer is not None:
            meta["anomaly_keys"] = list(self.rows)
            arrays[ANOMALY_ARRAY] = self.scorer.calibrator.state[:len(self.rows)].copy()
        return meta, arrays

    def restore(self, meta: Any, arrays: dict[str, np.ndarray], source: str = "the checkpoint") -> None:
        """Install what :meth:`export` wrote, every field checked first: a field that does
        not fit raises :class:`CliError` (exit 2) naming ``source`` and the field."""
        try:
            self._restore(meta, arrays)
        except ValueError as exc:
            raise CliError(f"{source}: corrupt checkpoint: {exc}") from None

    def _restore(self, meta: Any, arrays: dict[str, np.ndarray]) -> None:
        if not isinstance(meta, dict):
            raise ValueError(f"'uncertainty' must be an object, got {type(meta).__name__}")
        if self.intervals is not None:
            self.intervals.load(_keys(meta, "interval_keys"), arrays)
        if self.scorer is not None:
            keys = _keys(meta, "anomaly_keys")
            cal = self.scorer.calibrator
            shape = (len(keys), *cal.state.shape[1:])
            a = arrays.get(ANOMALY_ARRAY)
            if a is None or a.dtype != np.float64 or a.shape != shape:
                got = None if a is None else f"{a.dtype} {a.shape}"
                raise ValueError(f"array {ANOMALY_ARRAY!r} (the anomaly scorer's state) is {got}, expected float64 {shape}")
            if not np.isfinite(a).all():
                raise ValueError(f"array {ANOMALY_ARRAY!r} holds a non-finite value")
            trackers = a[:, :3]   # the residual, flat-line and recent-window channels (the 4th: fields)
            if not ((trackers[..., 0] >= 0).all() and (trackers[..., 1] >= 0).all()):
                raise ValueError(f"array {ANOMALY_ARRAY!r}: a count or scale of the scorer is negative")
            for k in keys:
                self._scorer_row(k)
            cal.state[:len(keys)] = a


def _keys(meta: dict[str, Any], name: str) -> list[Hashable]:
    keys = meta.get(name)
    if not isinstance(keys, list) or not all(k is None or type(k) in (str, int) for k in keys) \
            or len(set(keys)) != len(keys):
        raise ValueError(f"'uncertainty.{name}' must be a list of distinct keys, got {str(keys)[:60]}")
    return keys


def check_levels(levels: Any) -> list[float]:
    """The ``--interval`` levels of a job (saved or given), each in (0, 1), distinct.

    >>> check_levels([0.9, 0.8])
    [0.9, 0.8]
    >>> check_levels([1.5])
    Traceback (most recent call last):
    ...
    ValueError: --interval 1.5: a coverage level must lie strictly between 0 and 1 (e.g. --interval 0.9)
    """
    if not isinstance(levels, list):
        raise ValueError(f"--interval levels must be a list, got {levels!r}")
    out: list[float] = []
    for v in levels:
        if type(v) not in (int, float) or not math.isfinite(v) or not 0.0 < v < 1.0:
            raise ValueError(f"--interval {v!r}: a coverage level must lie strictly between 0 and 1 "
                             "(e.g. --interval 0.9)")
        if float(v) in out:
            raise ValueError(f"--interval {v!r} is given twice")
        out.append(float(v))
    return out


def block_keys(blk: Block) -> list[Hashable]:
    """The key of each row of a block (None for every row without --key)."""
    return list(blk.keys) if blk.keys is not None else [None] * len(blk)
