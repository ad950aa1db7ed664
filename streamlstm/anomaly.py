"""Anomaly scores in [0, 1] that mean the same on every stream, per key.

A score ``s`` says that the evidence against "this stream behaves as before" has a calibrated
tail probability of about ``10 ** (-decades * s)`` (``decades = 10`` by default): the same
number means the same rarity on a stream of any scale, noise level or quantisation, so one
threshold serves a fleet. ``DEFAULT_THRESHOLD = 0.5`` (a tail probability of 1e-5, about one
false alert per 100 000 ordinary events) turns scores into alerts. How the score is built and
what is guaranteed: ``docs/calibration.md``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from ._kernels import calibration as K
from .calibration import CLIP, DEFAULT_TAIL_GRID, OnlineCalibrator
from .persistence import FormatError, dumps, loads, write_atomic

#: score at or above which an event is an alert: a tail probability of 10**(-5)
DEFAULT_THRESHOLD = 0.5
#: log step of the scorer's tail trackers (``OnlineCalibrator(tail_lr=...)``): a stream's
#: recurring spikes become ordinary within a few dozen of them, where steps of ``lr`` scales
#: took hundreds (``docs/calibration.md``: what it is worth on the NAB dev streams)
TAIL_LR = 0.05


class AnomalyScorer:
    """Calibrated anomaly score of each value given its one-step forecast, per key.

    Three p-values, each calibrated online against its own history
    (:class:`~streamlstm.calibration.OnlineCalibrator`'s tracked tail quantiles of a
    studentised statistic):

    * **surprise**: the residual ``y - y_hat`` (a value far outside everything seen has a
      residual beyond every tracked quantile: its p-value comes from the extrapolated tail);
    * **recent window**: an exponential average (``1/window`` rate) of the surprisals
      ``-ln p`` of the residuals, so a run of moderately unusual values adds up, as Numenta's
      anomaly likelihood averages its recent raw scores;
    * **flat line**: the length of the current run of unchanged values, in a stream whose
      long-run mean absolute change (``1/memory`` rate) is positive; calibrated in run units
      (a stream that never repeated a value finds ``k`` repeats about ``e**-k`` times as
      likely as its rarest tracked run).

    The smallest p-value times the number of channels (Bonferroni: still a valid p-value)
    becomes the evidence ``min(1, -log10(p) / decades)``. An incident is reported once: the
    score is the evidence when it rises above the peak of the last ``holdoff`` events, else 0
    (so a lasting incident is reported again every ``holdoff`` events; ``holdoff=0`` gives
    the evidence of every event).

    Parameters
    ----------
    window
        Events over which recent surprise and recent variation are averaged.
    memory
        Events of the long-run variation the flat-line channel compares against.
    decades
        ``-log10`` of the tail probability that scores 1.
    holdoff
        Events during which a reported incident is only reported again if it gets worse.
    warmup
        Non-zero residuals of a key to learn before scoring (the values until then score
        0; default: ``window``). Before them the residuals' scale rests on a handful of
        residuals (at the second value, on the first one alone; on a stream that starts
        flat, on none), and a p-value against it is a guess, not evidence: without a
        warm-up the second to fourth value scored 1 on 11 of the 13 NAB dev streams.
        ``window`` is the natural length: the recent-window channel averages that many
        surprisals, and means nothing before it has seen them.
    levels
        Interval levels the residual channel also tracks, for :meth:`score_and_bounds`
        (the same intervals an ``OnlineCalibrator`` with these settings gives).
    use_window, use_flat
        Channel switches. The flat-line channel is off by default: on the NAB dev streams it
        catches the frozen stretches but its saturated run-length evidence on quantised
        streams raises the corpus threshold and costs 7.5 points (``bench/RESULTS.md``).
    lr, decay, clip, tail_grid, tail_lr
        Settings of the calibrating trackers (see ``OnlineCalibrator``). ``tail_lr``, the
        log step of the trackers that give the p-values, is what lets a stream's recurring
        spikes become ordinary: with steps of ``lr`` scales instead (``tail_lr=0``) a load
        balancer's regular spikes kept scoring 1 a hundred events apart for the whole stream.
    n_keys
        Streams scored side by side; grows with :meth:`add_keys`.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> scorer = AnomalyScorer()
    >>> y = rng.normal(size=2000)
    >>> y[1500] = 12.0                           # a value far outside everything seen
    >>> scores = [scorer.score(v, 0.0) for v in y]
    >>> bool(max(scores[200:1500]) < DEFAULT_THRESHOLD <= scores[1500])
    True
    """

    kind = "AnomalyScorer"

    def __init__(self, window: int = 10, memory: int = 1000, decades: float = 10.0, holdoff: int = 100,
                 levels: Sequence[float] = (), use_window: bool = True,
                 use_flat: bool = False, lr: float = 0.3, decay: float = 0.02, clip: float = CLIP,
                 tail_grid: Sequence[float] = DEFAULT_TAIL_GRID, n_keys: int = 1, warmup: int | None = None,
                 tail_lr: float = TAIL_LR) -> None:
        if warmup is None:
            warmup = window
        for name, value, low in (("window", window, 1), ("memory", memory, 1), ("holdoff", holdoff, 0),
                                 ("warmup", warmup, 0)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not (np.isfinite(decades) and decades > 0):
            raise ValueError(f"decades must be a positive number, got {decades!r}")
        self.window = int(window)
        self.memory = int(memory)
        self.decades = float(decades)
        self.holdoff = int(holdoff)
        self.warmup = int(warmup)
        self.use_window = bool(use_window)
        self.use_flat = bool(use_flat)
        # a calibrator state with a row per channel (residual, flat line, recent window) and a
        # row of the scorer's own fields per key; its parameters extended with the scorer's.
        # The scale is clipped at ``clip`` alone (``clip_tail=0``): with the tail-following
        # clip of the intervals the NAB dev score was 34.2 against 37.6 (docs/calibration.md),
        # and the clip would follow the log-step tail trackers up after every burst. One scale
        # rate, ``decay`` (``scale_rates=()``): the channels' layout (a row each, the
        # scorer's fields in the last) and those scores stand on it
        self.calibrator = OnlineCalibrator(levels=levels, horizon=4, lr=lr, decay=decay, clip=clip, tail_grid=tail_grid,
                                           tail_lr=tail_lr, n_keys=n_keys, clip_tail=0.0, scale_rates=())
        if self.calibrator.width < K.A_WIDTH:
            raise ValueError(f"tail_grid needs at least {K.A_WIDTH - K.F_TRACK} levels, got {len(self.calibrator.tail_grid)}")
        self._n_levels = len(self.calibrator.levels)
        self.params = np.concatenate([self.calibrator.params, [
            1.0 / self.memory, 1.0 / self.window, self.decades, float(self.use_flat), float(self.use_window),
            float(self.holdoff), float(self.warmup)]])

    def __setstate__(self, d: dict[str, Any]) -> None:
        # pickled by an older version: the calibrator rebuilt its parameters (its own
        # ``__setstate__`` ran first); the scorer's own parameters follow them
        self.__dict__.update(d)
        if self.calibrator.clip_tail != 0.0:   # pickled before clip_tail: the scorer clips at ``clip`` alone
            self.calibrator.retune(clip_tail=0.0)
        self._n_levels = len(self.calibrator.levels)
        self.params = np.concatenate([self.calibrator.params, d["params"][-(K.Q_WARMUP + 1):]])

    @property
    def state(self) -> np.ndarray:
        """All per-key state: ``(keys, 4, width)`` float64 (three tracker rows, one of fields)."""
        return self.calibrator.state

    @property
    def n_keys(self) -> int:
        """Rows of per-key state."""
        return int(self.calibrator.state.shape[0])

    def add_keys(self, k: int = 1) -> None:
        """Append ``k`` fresh key rows."""
        self.calibrator.add_keys(k)

    def key_state(self, key: int = 0) -> np.ndarray:
        """A copy of one key's whole state, ``(4, width)`` float64 (three tracker rows and the
        scorer's fields), for a per-key store outside the scorer (e.g. Flink keyed state).
        A fresh key's state is all zeros.

        >>> scorer = AnomalyScorer()
        >>> _ = scorer.score(1.0, 0.5)
        >>> twin = AnomalyScorer()
        >>> twin.set_key_state(0, scorer.key_state(0))
        >>> twin.score(3.0, 1.0) == scorer.score(3.0, 1.0)
        True
        """
        return self.calibrator.key_state(key)

    def set_key_state(self, key: int, values: np.ndarray) -> None:
        """Put back a state taken by :meth:`key_state` (a scorer with the same settings).

        Checked before anything is written, since it may come from outside the process: a
        float64 array of shape ``(4, width)``, every value finite, the tracker rows' counts
        integers in ``[0, 2**61]`` and their scales ``>= 0``, the scorer's counters (values
        seen, non-zero residuals, flat run, events since the last report) integers ``>= 0``
        and its reported peak in ``[0, 1]``; ``ValueError`` names what is wrong.

        >>> AnomalyScorer().set_key_state(0, np.full((4, 11), -1.0))
        Traceback (most recent call last):
        ...
        ValueError: anomaly scorer key state: tracker row 0: the count -1.0 is not an integer in [0, 2305843009213693952]
        """
        from ._kernels.state_check import MAX_STORED_COUNTER

        what = "anomaly scorer key state"
        a = np.asarray(values)
        shape = self.calibrator.state.shape[1:]
        if a.dtype != np.float64 or a.shape != shape:
            raise ValueError(f"{what}: expected float64 {shape}, got {a.dtype} {a.shape}")
        if not np.isfinite(a).all():
            at = np.argwhere(~np.isfinite(a))[0]
            raise ValueError(f"{what}: non-finite value at row {int(at[0])}, field {int(at[1])}")
        for c in (K.C_RESIDUAL, K.C_FLAT, K.C_WINDOW):
            n, scale = float(a[c, K.F_N]), float(a[c, K.F_SCALE])
            if not (0.0 <= n <= MAX_STORED_COUNTER and n == math.floor(n)):
                raise ValueError(f"{what}: tracker row {c}: the count {n!r} is not an integer in [0, {MAX_STORED_COUNTER}]")
            if scale < 0.0:
                raise ValueError(f"{what}: tracker row {c}: the scale {scale!r} is negative")
        fields = a[K.C_FIELDS]
        for name, i in (("values seen", K.A_N), ("non-zero residuals", K.A_NONZERO), ("flat run", K.A_RUN),
                        ("events since the last report", K.A_AGE)):
            v = float(fields[i])
            if not (0.0 <= v <= MAX_STORED_COUNTER and v == math.floor(v)):
                raise ValueError(f"{what}: {name} {v!r} is not an integer in [0, {MAX_STORED_COUNTER}]")
        peak, long_change = float(fields[K.A_PEAK]), float(fields[K.A_LONG])
        if not 0.0 <= peak <= 1.0:
            raise ValueError(f"{what}: the reported peak {peak!r} is outside [0, 1]")
        if long_change < 0.0:
            raise ValueError(f"{what}: the long-run mean change {long_change!r} is negative")
        self.calibrator.set_key_state(key, a)

    def score(self, y: float, y_hat: float, key: int = 0) -> float:
        """Score the value ``y`` whose forecast (made before ``y`` was seen) was ``y_hat``.

        Learns from the pair afterwards; the score of the first values of a stream, before
        anything is known of it, is 0.
        """
        state = self.calibrator.state
        if not (math.isfinite(y) and math.isfinite(y_hat) and 0 <= key < state.shape[0]):
            if not 0 <= key < state.shape[0]:
                raise IndexError(f"key row {key} outside [0, {state.shape[0]}): add_keys first")
            raise ValueError(f"value {y!r} and forecast {y_hat!r} must both be finite numbers")
        return K.anomaly_step(state, self.params, key, float(y), float(y_hat))

    def score_and_bounds(self, y: float, y_hat: float, y_hat_next: float, level: int = 0,
                         key: int = 0) -> tuple[float, float, float]:
        """:meth:`score` of ``(y, y_hat)``, then the interval at ``levels[level]`` around the
        next forecast ``y_hat_next``: ``(score, lower, upper)`` in one compiled call (the
        per-event path of a model serving predictions with intervals and anomaly scores;
        with an ``OnlineLSTM``, :meth:`~streamlstm.OnlineLSTM.predict_scored` makes the
        prediction in the same call).

        >>> scorer = AnomalyScorer(levels=[0.9])
        >>> for t in range(300):
        ...     s, lo, hi = scorer.score_and_bounds(float(t % 3), 1.0, 1.0)
        >>> bool(lo < 1.0 < hi)
        True
        """
        state = self.calibrator.state
        if type(y) is float and type(y_hat) is float and type(y_hat_next) is float and y - y == 0.0 \
                and y_hat - y_hat == 0.0 and 0 <= key < state.shape[0] and 0 <= level < self._n_levels:
            # the per-event path: finite floats (x - x is 0 only for those), nothing to convert
            return K.score_and_bounds(state, self.params, key, y, y_hat, y_hat_next, level)
        if not (math.isfinite(y) and math.isfinite(y_hat) and 0 <= key < state.shape[0]
                and 0 <= level < len(self.calibrator.levels)):
            if not 0 <= key < state.shape[0]:
                raise IndexError(f"key row {key} outside [0, {state.shape[0]}): add_keys first")
            if not 0 <= level < len(self.calibrator.levels):
                raise IndexError(f"level index {level} outside the {len(self.calibrator.levels)} levels {self.calibrator.levels}")
            raise ValueError(f"value {y!r} and forecast {y_hat!r} must both be finite numbers")
        return K.score_and_bounds(state, self.params, key, float(y), float(y_hat), float(y_hat_next), level)

    def score_many(self, keys: Any, y: Any, y_hat: Any) -> np.ndarray:
        """:meth:`score` for a block of events in arrival order, in one compiled call.

        >>> scorer = AnomalyScorer(n_keys=2)
        >>> scorer.score_many([0, 1, 0], [1.0, 5.0, 1.5], [0.0, 5.0, 1.0]).shape
        (3,)
        """
        keys = np.ascontiguousarray(keys, dtype=np.int64).reshape(-1)
        Y = np.ascontiguousarray(y, dtype=np.float64).reshape(-1)
        Y_hat = np.ascontiguousarray(y_hat, dtype=np.float64).reshape(-1)
        if not keys.shape == Y.shape == Y_hat.shape:
            raise ValueError(f"keys, y and y_hat differ in length: {keys.shape[0]}, {Y.shape[0]}, {Y_hat.shape[0]}")
        bad = ~(np.isfinite(Y) & np.isfinite(Y_hat))
        if bad.any():
            e = int(np.flatnonzero(bad)[0])
            raise ValueError(f"event {e}: value {Y[e]!r} / forecast {Y_hat[e]!r} is not finite; nothing was scored")
        if keys.size and (keys.min() < 0 or keys.max() >= self.n_keys):
            e = int(np.flatnonzero((keys < 0) | (keys >= self.n_keys))[0])
            raise IndexError(f"event {e}: key row {int(keys[e])} outside [0, {self.n_keys}): add_keys first")
        out = np.empty(Y.shape[0])
        K.anomaly_many(self.calibrator.state, self.params, keys, Y, Y_hat, out)
        return out

    # ------------------------------------------------------------------ persistence
    def _config(self) -> dict[str, Any]:
        cal = self.calibrator
        return {"window": self.window, "memory": self.memory, "decades": self.decades, "holdoff": self.holdoff,
                "warmup": self.warmup,
                "levels": list(cal.levels),
                "use_window": self.use_window,
                "use_flat": self.use_flat, "lr": cal.lr, "decay": cal.decay, "clip": cal.clip, "tail_grid": list(cal.tail_grid),
                "tail_lr": cal.tail_lr}

    def export(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(meta, arrays)`` for :func:`streamlstm.persistence.dumps`."""
        return self._config(), {"scorer_state": self.calibrator.state.copy()}

    @classmethod
    def from_export(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> AnomalyScorer:
        """Rebuild from :meth:`export`'s parts, bit-identical."""
        state = arrays["scorer_state"]
        # saved before the log-step tail trackers: steps of lr, as it was saved with
        scorer = cls(n_keys=max(1, state.shape[0]), **{"tail_lr": 0.0, **meta})
        state = scorer.calibrator.upgrade(state)
        if state.shape != scorer.calibrator.state.shape:
            raise ValueError(f"anomaly scorer state has shape {state.shape}, its settings want {scorer.calibrator.state.shape}")
        scorer.calibrator.state = np.array(state, dtype=np.float64)
        return scorer


class AnomalyDetector:
    """One-step forecaster + calibrated :class:`AnomalyScorer`: ``score_one(y)`` per event.

    The forecast of ``y_t`` is made from the values before it: ``base="lstm"`` (default) an
    :class:`~streamlstm.OnlineLSTM` fed the last value and learning online (prequential),
    ``"last"`` the last value itself, ``"engine"`` the forecasting engine's one-step forecast
    (:class:`~streamlstm.Forecaster`: simple experts, autoregressions and an LSTM, season
    found online), which is what ``streamlstm run FILE --anomaly`` scores: the same scores,
    row for row (the engine has no forecast of a stream's first value, which scores 0 and
    is only learned). The scorer calibrates the forecast's residuals, so the score means the
    same whatever the base; a better base only makes it sharper. The engine sees a season
    (a daily cycle of 5-minute values) that the LSTM fed the last value does not, at about
    five times the cost per event (NAB dev streams: ``docs/calibration.md``).

    Parameters
    ----------
    base
        ``"lstm"``, ``"last"`` or ``"engine"``.
    hidden, lr, seed
        Settings of the LSTM base (with ``"engine"``: of the engine's LSTM expert).
    threshold
        Score at or above which :meth:`alert` says yes.
    **scorer
        Passed to :class:`AnomalyScorer` (``window``, ``memory``, ``decades``...).

    Examples
    --------
    >>> import numpy as np
    >>> y = np.sin(np.arange(3000) / 20.0) + np.random.default_rng(1).normal(0, 0.05, 3000)
    >>> y[2500:2600] = y[2499]                    # the sensor freezes
    >>> det = AnomalyDetector(base="last", use_flat=True)
    >>> scores = np.array([det.score_one(v) for v in y])
    >>> bool(scores[300:2500].max() < det.threshold <= scores[2500:2600].max())
    True
    """

    kind = "AnomalyDetector"

    def __init__(self, base: Literal["lstm", "last", "engine"] = "lstm", hidden: int = 16, lr: float = 3e-3,
                 seed: int = 0, threshold: float = DEFAULT_THRESHOLD, **scorer: Any) -> None:
        if base not in ("lstm", "last", "engine"):
            raise ValueError(f"base must be 'lstm', 'last' or 'engine', got {base!r}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must lie in [0, 1], got {threshold!r}")
        self.base = base
        self.hidden = int(hidden)
        self.lr = float(lr)
        self.seed = int(seed)
        self.threshold = float(threshold)
        self.scorer = AnomalyScorer(**scorer)
        self.model: Any = None
        if base == "lstm":
            from .model import OnlineLSTM

            self.model = OnlineLSTM(n_inputs=1, hidden=self.hidden, lr=self.lr, seed=self.seed)
        elif base == "engine":
            from .forecasting import Forecaster

            self.model = Forecaster(lstm_hidden=self.hidden, lstm_lr=self.lr, seed=self.seed)
        self._x = np.zeros(1)
        self.last: float | None = None

    def forecast(self) -> float | None:
        """The forecast of the next value (None before the first value)."""
        if self.last is None:
            return None
        if self.model is None:
            return self.last
        if self.base == "engine":
            return float(self.model.forecast()[0])
        self._x[0] = self.last
        return float(self.model.predict_one(self._x))

    def score_one(self, y: float) -> float:
        """Score the value ``y`` (only the past was used to forecast it), then learn it."""
        y = float(y)
        if not np.isfinite(y):
            raise ValueError(f"value {y!r} is not a finite number")
        if self.last is None and self.base == "engine":   # no forecast of a first value: learned, not scored
            self.model.learn_one(y)
            self.last = y
            return 0.0
        if self.last is None:
            y_hat = y
        elif self.model is None:
            y_hat = self.last
        elif self.base == "engine":
            y_hat = float(self.model.forecast()[0])
            self.model.learn_one(y)
        else:
            self._x[0] = self.last
            y_hat = float(self.model.learn_one(self._x, y))
        s = self.scorer.score(y, y_hat)
        self.last = y
        return s

    def alert(self, score: float) -> bool:
        """Whether ``score`` is an alert at this detector's threshold."""
        return score >= self.threshold

    def to_bytes(self) -> bytes:
        """Everything (base model, scorer state, last value) as the versioned container bytes.

        >>> det = AnomalyDetector(base="last")
        >>> _ = [det.score_one(v) for v in (1.0, 2.0, 1.5)]
        >>> twin = AnomalyDetector.from_bytes(det.to_bytes())
        >>> twin.score_one(9.0) == det.score_one(9.0)
        True
        """
        meta, arrays = self.scorer.export()
        meta = {"scorer": meta, "base": self.base, "hidden": self.hidden, "lr": self.lr, "seed": self.seed,
                "threshold": self.threshold, "last": self.last}
        if self.model is not None:
            arrays["model"] = np.frombuffer(self.model.to_bytes(), dtype=np.uint8)
        return dumps(self.kind, meta, arrays)

    @classmethod
    def from_bytes(cls, blob: bytes) -> AnomalyDetector:
        """Inverse of :meth:`to_bytes`; continues bit-identically."""
        _, meta, arrays = loads(blob, expect_kind=cls.kind)
        det = cls(base=meta["base"], hidden=meta["hidden"], lr=meta["lr"], seed=meta["seed"], threshold=meta["threshold"])
        det.scorer = AnomalyScorer.from_export(meta["scorer"], arrays)
        det.last = meta["last"]
        if det.model is not None and "model" not in arrays:
            raise FormatError(f"an anomaly detector with the {det.base!r} base holds no model array")
        if "model" in arrays and det.base == "engine":
            from .forecasting import Forecaster

            det.model = Forecaster.from_bytes(arrays["model"].tobytes())
        elif "model" in arrays:
            from .model import OnlineLSTM

            det.model = OnlineLSTM.from_bytes(arrays["model"].tobytes())
        return det

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically."""
        write_atomic(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AnomalyDetector:
        """Read a file written by :meth:`save`."""
        with open(path, "rb") as fh:
            blob = fh.read()
        try:
            return cls.from_bytes(blob)
        except FormatError as exc:
            raise FormatError(f"{path}: {exc}") from None
