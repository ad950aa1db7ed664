"""River estimators over the streamlstm core: a regressor, a classifier, a forecaster and an
anomaly detector, each a stateful LSTM that predicts and learns one event at a time.

    pip install "streamlstm[river]"

>>> from streamlstm.adapters.river import LSTMRegressor, LSTMClassifier, LSTMForecaster, LSTMAnomalyDetector

Conventions shared by the four estimators
-----------------------------------------
* **State.** Every ``learn_one`` advances the recurrent state by one event; ``predict_one`` /
  ``predict_proba_one`` / ``score_one`` / ``forecast`` are pure (state, weights and statistics
  unchanged). ``reset_state()`` starts a new stream with the learned weights. The wrapped
  :class:`streamlstm.OnlineLSTM` is ``estimator.lstm`` (``None`` until the first event).
* **Events without a label.** ``advance_one(x)`` moves the state (and the input statistics)
  without learning; ``learn_one(x, None)`` does the same for the regressor and the classifier,
  ``learn_one(None, x)`` for the forecaster (the missing value is replaced by the forecaster's
  own one-step forecast).
* **Features** are mapped to input columns by order of first arrival (features new in the same
  event are ordered by type and name), so dict order never matters. A feature that emerges
  mid-stream grows the input weights (``OnlineLSTM.add_inputs``: zero weights, so predictions
  do not jump). A missing feature (absent, ``None`` or NaN) counts as its running mean, i.e. it
  standardises to about 0 (with ``inputs="changes"``: as no change). A value that is not a real number raises a ``TypeError`` naming the
  feature and the value; an infinite value raises a ``ValueError``. Features seen only by
  ``predict_one`` are ignored (their weights would be zero).
* **Hyper-parameters** are the core's (see ``docs/core-api.md``), each stored under its own
  name; the network is built at the first event with features (the forecaster's at its second
  value), with ``seed`` drawing its weights
  (two estimators with one seed are identical). ``clone()`` gives a fresh estimator with the same
  parameters; ``clone(include_attributes=True)``, ``copy.deepcopy`` and pickling keep the weights,
  the optimizer moments, the statistics and the state.
* **Mini-batches** (regressor, classifier): ``learn_many(X, y)`` runs the core's compiled block
  call and gives exactly the results of the ``learn_one`` loop over the rows (missing values are
  NaN). ``predict_many`` / ``predict_proba_many`` follow River's meaning: one independent
  look-ahead per row from the current state, i.e. ``predict_one`` of each row.
"""

from __future__ import annotations

import collections
import copy
import math
import numbers
from typing import Any

import numpy as np
from river import base
from river.time_series.base import Forecaster as _ForecasterBase

try:  # river >= 0.26
    from river.base import AnomalyDetector as _AnomalyDetectorBase
except ImportError:  # pragma: no cover - river < 0.26
    from river.anomaly.base import AnomalyDetector as _AnomalyDetectorBase

from streamlstm import OnlineLSTM

__all__ = ["LSTMRegressor", "LSTMClassifier", "LSTMForecaster", "LSTMAnomalyDetector"]

_CLIP_INPUT = 5.0       # robustly scaled series inputs of the forecaster are clipped to +-5
_SCALE_RATE = 0.02      # step of the running-median trackers (relative, per event)
_SELECT_RATE = 0.02     # EW rate of the errors that choose the forecaster's base
_FORECAST_COPY_FROM = 48  # forecast horizons above this roll a deep copy of the network


# ------------------------------------------------------------------------------------ values
def _number(name: Any, value: Any) -> float | None:
    """``float(value)``, or ``None`` for a missing value (None, NaN)."""
    if type(value) is float:
        f = value
    elif value is None:
        return None
    elif isinstance(value, (numbers.Real, np.bool_, np.integer, np.floating)):
        f = float(value)
    else:
        raise TypeError(f"feature {name!r} has value {value!r} ({type(value).__name__}), "
                        "which is not a real number")
    if f != f:
        return None
    if f in (math.inf, -math.inf):
        raise ValueError(f"feature {name!r} has value {value!r}, which is not finite")
    return f


def _key(name: Any) -> tuple[str, str]:
    return type(name).__name__, repr(name)


def _column(values: Any, name: Any) -> np.ndarray:
    """A DataFrame column as float64 with NaN for missing values (None, NaN)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "fiub":
        out = arr.astype(np.float64)
    else:
        out = np.empty(len(arr), dtype=np.float64)
        for i, v in enumerate(arr):
            f = _number(name, v)
            out[i] = np.nan if f is None else f
    if np.isinf(out).any():
        bad = out[np.isinf(out)][0]
        raise ValueError(f"feature {name!r} has value {bad!r}, which is not finite")
    return out


class _Features:
    """Feature name -> column, by order of first arrival, with running statistics per feature.

    ``mode`` is ``"levels"`` (the value), ``"changes"`` (the change since the feature's last
    observed value; 0 when missing or new) or ``"both"`` (two columns per feature). ``count``,
    ``mean`` and ``m2`` are Welford's statistics of the observed values; a missing level is
    replaced by ``mean``.
    """

    def __init__(self, mode: str = "levels"):
        if mode not in ("levels", "changes", "both"):
            raise ValueError(f"inputs must be 'levels', 'changes' or 'both', got {mode!r}")
        self.mode = mode
        self.names: list = []
        self.index: dict = {}
        self.count: list[int] = []
        self.mean: list[float] = []
        self.m2: list[float] = []
        self.last: list[float] = []

    @property
    def width(self) -> int:
        """Input columns per feature."""
        return 2 if self.mode == "both" else 1

    @property
    def n_columns(self) -> int:
        return self.width * len(self.names)

    def std(self, j: int) -> float:
        n = self.count[j]
        if n < 2:
            return 1.0
        v = self.m2[j] / n
        return math.sqrt(v) if v > 0 else 1.0

    def _observe(self, j: int, f: float) -> None:
        n = self.count[j] + 1
        self.count[j] = n
        mean = self.mean[j]
        delta = f - mean
        mean += delta / n
        self.mean[j] = mean
        self.m2[j] += delta * (f - mean)
        self.last[j] = f

    def _append(self, name: Any, f: float) -> None:
        self.index[name] = len(self.names)
        self.names.append(name)
        self.count.append(1)
        self.mean.append(f)
        self.m2.append(0.0)
        self.last.append(f)

    def fast_row(self, x: dict, learn: bool) -> list[float] | None:
        """``row(*parse(x), learn)`` for the common event, built without its bookkeeping: ``x``
        holds exactly the known features, each a real number and all finite. ``None`` for
        anything else (the general path then decides, and raises for bad values)."""
        names = self.names
        if len(x) != len(names) or not names:
            return None
        try:
            vals = [x[k] for k in names]
            total = sum(vals)  # a str or None raises here
        except (KeyError, TypeError):
            return None
        if type(total) is not float and type(total) is not int:
            return None  # complex, Decimal, numpy scalars...: the general path converts or refuses
        if total - total != 0:  # a NaN or an infinity anywhere (or an overflowing sum)
            return None
        if self.mode == "levels":
            row = vals
        else:
            ch = [v - last for v, last in zip(vals, self.last)]
            if self.mode == "changes":
                row = ch
            else:
                row = [0.0] * (2 * len(vals))
                row[0::2] = vals
                row[1::2] = ch
        if learn:
            count, mean, m2 = self.count, self.mean, self.m2
            for j, f in enumerate(vals):  # _observe, inlined
                n = count[j] + 1
                count[j] = n
                mu = mean[j]
                delta = f - mu
                mu += delta / n
                mean[j] = mu
                m2[j] += delta * (f - mu)
            self.last = vals if row is not vals else vals[:]
        return row

    def fast_changes(self, x: dict) -> list[float] | None:
        """``fast_row(x, learn=False)`` in ``"changes"`` mode, in one pass: the differences are
        computed first and their sum checks them all (a str or None raises, a NaN or infinity
        propagates, anything exotic changes the sum's type). ``None``: use the general path."""
        names = self.names
        if len(x) != len(names) or not names:
            return None
        try:
            ch = [x[k] - last for k, last in zip(names, self.last)]
            total = sum(ch)
        except (KeyError, TypeError):
            return None
        if (type(total) is not float and type(total) is not int) or total - total != 0:
            return None
        return ch

    def parse(self, x: dict | None) -> tuple[dict[int, float], dict[Any, float]]:
        """Validate every value: ``({column: value} of known features, {name: value} of new ones)``."""
        known: dict[int, float] = {}
        new: dict[Any, float] = {}
        if not x:
            return known, new
        index = self.index
        for k, v in x.items():
            f = _number(k, v)
            if f is None:
                continue
            j = index.get(k)
            if j is None:
                new[k] = f
            else:
                known[j] = f
        return known, new

    def row(self, known: dict[int, float], learn: bool, new: dict[Any, float] | None = None) -> tuple[list[float], int]:
        """The input row of an event (after ``parse``). With ``learn`` the statistics take the
        values in and new features are appended; returns ``(row, number of new features)``."""
        lv = self.mean[:]
        ch = [0.0] * len(lv) if self.mode != "levels" else None
        for j, f in known.items():
            lv[j] = f
            if ch is not None:
                ch[j] = f - self.last[j]
        n_new = 0
        if learn:
            for j, f in known.items():
                self._observe(j, f)
            if new:
                for name in sorted(new, key=_key):
                    self._append(name, new[name])
                    lv.append(new[name])
                    if ch is not None:
                        ch.append(0.0)
                n_new = len(new)
        return self._assemble(lv, ch), n_new

    def _assemble(self, lv: list[float], ch: list[float] | None) -> list[float]:
        if self.mode == "levels":
            return lv
        if self.mode == "changes":
            return ch  # type: ignore[return-value]
        out = [0.0] * (2 * len(lv))
        out[0::2] = lv
        out[1::2] = ch  # type: ignore[assignment]
        return out

    # ------------------------------------------------------------------ blocks
    def block(self, A: np.ndarray, cols: list[int | None], start: int, end: int) -> np.ndarray:
        """Rows ``start:end`` of ``A`` (NaN = missing; ``cols[i]`` the column of ``A``'s i-th
        feature, None = unknown and ignored) as input rows, exactly as ``row(.., learn=True)``
        one by one would build them, provided no known feature is missing after it was observed
        within the block (the caller cuts blocks so). The statistics take the values in."""
        n = len(self.names)
        T = end - start
        lv = np.tile(np.asarray(self.mean, dtype=np.float64), (T, 1)) if n else np.zeros((T, 0))
        ch = np.zeros((T, n)) if self.mode != "levels" else None
        for i, j in enumerate(cols):
            if j is None:
                continue
            a = A[start:end, i]
            obs = ~np.isnan(a)
            if not obs.any():
                continue
            lv[obs, j] = a[obs]
            if ch is not None:
                rows = np.flatnonzero(obs)
                prev = np.empty(len(rows))
                prev[0] = self.last[j]
                prev[1:] = a[rows[:-1]]
                ch[rows, j] = a[rows] - prev
            for f in a[obs].tolist():
                self._observe(j, f)
        if self.mode == "levels":
            return np.ascontiguousarray(lv)
        if self.mode == "changes":
            return np.ascontiguousarray(ch)
        out = np.empty((T, 2 * n))
        out[:, 0::2] = lv
        out[:, 1::2] = ch
        return out


def _block_end(A: np.ndarray, cols: list[int | None], start: int, stop: int) -> int:
    """First row r in (start, stop] such that some known feature observed in rows start..r-1
    is missing at row r (its imputed mean would have moved), else ``stop``."""
    end = stop
    for i, j in enumerate(cols):
        if j is None:
            continue
        obs = ~np.isnan(A[start:stop, i])
        first = int(np.argmax(obs)) if obs.any() else None
        if first is None:
            continue
        gaps = np.flatnonzero(~obs[first:])
        if len(gaps):
            end = min(end, start + first + int(gaps[0]))
    return end


def _frame(X: Any) -> tuple[list, np.ndarray]:
    """(feature names, float64 matrix with NaN for missing) of a DataFrame."""
    names = list(X.columns)
    A = np.empty((len(X), len(names)), dtype=np.float64)
    for i, name in enumerate(names):
        A[:, i] = _column(X[name].to_numpy(), name)
    return names, A


class _RunningMedianAbs:
    """Tracks the median of |v| by relative stochastic steps (robust scale, O(1) memory)."""

    def __init__(self) -> None:
        self.value = 0.0

    def update(self, v: float) -> None:
        a = abs(v)
        if self.value <= 0.0:
            self.value = a
        elif a > self.value:
            self.value *= 1.0 + _SCALE_RATE
        elif a < self.value:
            self.value *= 1.0 - _SCALE_RATE

    def get(self) -> float:
        return self.value if self.value > 0.0 else 1.0


# --------------------------------------------------------------------------- shared parts
_CORE = ("hidden", "layers", "cell", "bptt", "update_every", "optimizer", "lr", "momentum", "betas",
         "rho", "eps", "clip", "l2", "dtype", "seed")

_PARAMS_DOC = """
    hidden, layers, cell
        Units per layer, stacked layers, ``"lstm"`` or ``"rnn"`` (vanilla tanh RNN).
    bptt, update_every
        Truncated BPTT: every ``update_every`` events the losses of the labelled steps are
        backpropagated through at most ``bptt`` steps.
    optimizer, lr, momentum, betas, rho, eps, clip, l2
        ``"adam"``, ``"sgd"`` or ``"rmsprop"`` and their settings; ``clip`` is the global
        gradient-norm clip (``None`` disables it), ``l2`` an L2 penalty.
    dtype
        ``"float32"`` (default here: per-event latency is what a River estimator is measured
        by, and float32 learns about 25% faster at ``hidden=32``; the running normalisers
        stay float64) or ``"float64"``.
    seed
        Seeds the initial weights (``None``: fresh randomness).
"""


def _with_params_doc(cls):
    """Put the shared hyper-parameter documentation in place of ``{params}``."""
    cls.__doc__ = cls.__doc__.replace("    {params}\n", _PARAMS_DOC.lstrip("\n") + "\n")
    return cls


class _LSTMEstimator:
    """Shared machinery: hyper-parameters, the lazily built core, features, state."""

    _loss_kind = "squared"

    def _set_params(self, params: dict[str, Any]) -> None:
        for name, value in params.items():
            if name not in ("self", "__class__"):
                setattr(self, name, value)
        self._check()
        self._reset_learning()

    def _core_kwargs(self) -> dict[str, Any]:
        kw = {name: getattr(self, name) for name in _CORE}
        kw["betas"] = tuple(kw["betas"])
        for name in ("loss", "huber_delta", "standardize_inputs", "standardize_targets"):
            if hasattr(self, name):
                kw[name] = getattr(self, name)
        return kw

    def _new_core(self, n_inputs: int, n_outputs: int = 1, **overrides: Any) -> OnlineLSTM:
        kw = self._core_kwargs()
        kw.update(overrides)
        return OnlineLSTM(n_inputs=n_inputs, n_outputs=n_outputs, **kw)

    def _check(self) -> None:
        """Fail at construction on a bad hyper-parameter (the core validates; a one-unit
        network so that a large ``hidden`` costs nothing here)."""
        h = self.hidden
        if not isinstance(h, (int, np.integer)) or isinstance(h, bool) or h < 1:
            raise ValueError(f"hidden must be an integer >= 1, got {h!r}")
        self._new_core(1, 2 if self._loss_kind == "cross_entropy" else 1, hidden=1, seed=0)

    def _reset_learning(self) -> None:
        self._model: OnlineLSTM | None = None

    @property
    def lstm(self) -> OnlineLSTM | None:
        """The wrapped :class:`streamlstm.OnlineLSTM` (``None`` before the first event)."""
        return self._model

    def reset_state(self) -> None:
        """Start a new stream: zero the recurrent state and drop the TBPTT history; the
        weights and the statistics are kept."""
        if self._model is not None:
            self._model.reset_state()

    def _grow(self, n_new: int) -> None:
        if n_new and self._model is not None:
            self._model.add_inputs(self._features.width * n_new)


class _SupervisedFeatures(_LSTMEstimator):
    """Regressor and classifier: features in, the core's prediction out."""

    def _reset_learning(self) -> None:
        super()._reset_learning()
        self._features = _Features(self.inputs)

    def _encode(self, x: dict, learn: bool) -> np.ndarray | None:
        """Input row of ``x``; with ``learn`` grow features / build the network. None when the
        network does not exist (yet)."""
        if self._model is not None and x:
            row = self._features.fast_row(x, learn)
            if row is not None:
                return np.array(row, dtype=np.float64)
        known, new = self._features.parse(x)
        if not learn:
            if self._model is None:
                return None
            row, _ = self._features.row(known, False)
            return np.array(row, dtype=np.float64)
        if self._model is None and not new and not self._features.names:
            return None
        row, n_new = self._features.row(known, True, new)
        if self._model is None:
            self._model = self._build(len(row))
        else:
            self._grow(n_new)
        return np.array(row, dtype=np.float64)

    def advance_one(self, x: dict) -> None:
        """Advance the state by an event whose label is unknown (no learning)."""
        row = self._encode(x, learn=True)
        if row is not None:
            self._model.advance(row)

    # ---------------------------------------------------------------- blocks
    def _learn_frame(self, X: Any, labels: list, special_rows: set[int], single, block) -> None:
        """Drive ``learn_many``: rows where a feature emerges or ``special_rows`` (and every row
        while the network does not exist) go through ``single(i)`` (the ``learn_one`` path);
        the stretches between them through ``block(Xcore, start, end)``."""
        names, A = _frame(X)
        T = A.shape[0]
        feats = self._features
        known0 = set(feats.index)
        emerge = set()
        for i, name in enumerate(names):
            if name not in known0:
                obs = np.flatnonzero(~np.isnan(A[:, i]))
                if len(obs):
                    emerge.add(int(obs[0]))
        cuts = sorted(emerge | set(special_rows))
        records = None
        t = 0
        ci = 0
        while t < T:
            while ci < len(cuts) and cuts[ci] < t:
                ci += 1
            if self._model is None or (ci < len(cuts) and cuts[ci] == t):
                if records is None:
                    records = X.to_dict("records")
                single(records[t], t)
                t += 1
                continue
            stop = cuts[ci] if ci < len(cuts) else T
            cols = [feats.index.get(name) for name in names]
            end = _block_end(A, cols, t, stop)
            block(feats.block(A, cols, t, end), t, end)
            t = end


# ----------------------------------------------------------------------------- regressor
@_with_params_doc
class LSTMRegressor(_SupervisedFeatures, base.MiniBatchRegressor):
    """A stateful LSTM regressor: each ``learn_one(x, y)`` advances the state by ``x`` and learns
    ``y``; ``predict_one(x)`` is a pure look-ahead (what ``learn_one`` would predict).

    The events of a stream are steps of one sequence: the state carries what came before, so
    the model can use the history of the features (and, with ``residual``, of the target).

    Parameters
    ----------
    residual
        Predict the change of the target since the last labelled event (the output is that
        last target plus the network's prediction) instead of the target itself. The last
        target is a strong baseline on smooth series; the network learns what moves it. Until a
        first target is learned ``predict_one`` returns ``None`` (no prediction).
    inputs
        What the network sees of each feature: ``"levels"`` (the value), ``"changes"`` (the
        change since the feature's previous observed value; 0 when missing or new) or
        ``"both"``. Changes pair with ``residual``: a change of the inputs explains a change of
        the target.
    loss, huber_delta
        ``"squared"`` or ``"huber"`` (in standardised units).
    standardize_inputs, standardize_targets
        The core's online standardisation of inputs and targets (running mean and variance).
    {params}
    Defaults (tuned on TrumpApproval and synthetic series, see ``bench/RESULTS.md``): the target
    of a sequence regression usually moves little from one event to the next, so
    ``residual=True`` with ``inputs="changes"``; 16 units and a learning rate of 3e-3 learn from
    a few hundred events; ``bptt=16``.

    Examples
    --------
    Progressive validation on River's TrumpApproval poll aggregates (1001 days, 6 features):

    >>> from river import datasets, evaluate, metrics
    >>> from streamlstm.adapters.river import LSTMRegressor
    >>> model = LSTMRegressor(seed=42)
    >>> metric = evaluate.progressive_val_score(datasets.TrumpApproval(), model, metrics.MAE())
    >>> print(f"MAE: {metric.get():.2f}")
    MAE: 0.14

    An event whose target is unknown still moves the state:

    >>> model.advance_one({"gallup": 41.0, "ipsos": 40.5})
    """

    def __init__(
        self,
        residual: bool = True,
        inputs: str = "changes",
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
        standardize_inputs: bool = True,
        standardize_targets: bool = True,
        dtype: str = "float32",
        seed: int | None = 0,
    ):
        self._set_params(locals())

    def _check(self) -> None:
        if self.loss not in ("squared", "huber"):
            raise ValueError(f"loss must be 'squared' or 'huber', got {self.loss!r}")
        _Features(self.inputs)
        super()._check()

    def _reset_learning(self) -> None:
        super()._reset_learning()
        self._last_y: float | None = None

    def _build(self, n_inputs: int) -> OnlineLSTM:
        return self._new_core(n_inputs)

    @classmethod
    def _unit_test_params(cls):
        yield {"hidden": 4, "bptt": 4}
        yield {"hidden": 4, "residual": False, "inputs": "both", "seed": None, "loss": "huber"}

    @staticmethod
    def _target(y: Any) -> float | None:
        """``float(y)``; ``None`` for a missing target (None, NaN)."""
        if y is None:
            return None
        if isinstance(y, (str, bytes)) or not isinstance(y, (numbers.Real, np.number)):
            raise TypeError(f"target must be a real number, got {y!r}")
        f = float(y)
        if f != f:
            return None
        if f in (math.inf, -math.inf):
            raise ValueError(f"target {y!r} is not finite")
        return f

    def learn_one(self, x: dict, y: Any) -> None:
        """Advance the state by ``x`` and learn ``y`` (``y=None``: advance only)."""
        f = self._target(y)
        if f is None:
            self.advance_one(x)
            return
        row = self._encode(x, learn=True)
        if row is not None:
            if self.residual:
                if self._last_y is None:
                    self._model.advance(row)
                else:
                    self._model.learn_one(row, f - self._last_y)
            else:
                self._model.learn_one(row, f)
        self._last_y = f

    def predict_one(self, x: dict) -> float | None:
        """The prediction ``learn_one(x, y)`` would make for ``x``; pure. ``None`` until a first
        target has been learned."""
        if self._last_y is None:
            return None
        model = self._model
        if model is not None and x and self._features.mode == "changes":
            ch = self._features.fast_changes(x)  # the common event, on its shortest path
            if ch is not None:
                out = model.predict_one(np.array(ch, dtype=np.float64))
                return self._last_y + out if self.residual else out
        row = self._encode(x, learn=False)
        out = 0.0 if row is None else float(self._model.predict_one(row))
        if self.residual:
            return self._last_y + out
        return out if row is not None else self._last_y

    def learn_many(self, X, y) -> None:
        """``learn_one`` over the rows of ``X`` (missing values NaN) with targets ``y``
        (None/NaN: advance only), as one compiled block call per stretch of rows."""
        Y = np.array([np.nan if (f := self._target(v)) is None else f for v in y], dtype=np.float64)

        def single(rec, i):
            self.learn_one(rec, None if np.isnan(Y[i]) else Y[i])

        def block(Xc, start, end):
            ys = Y[start:end]
            mask = ~np.isnan(ys)
            target = np.zeros(end - start)
            last = self._last_y
            if self.residual:
                for i in np.flatnonzero(mask).tolist():
                    if last is None:
                        mask[i] = False
                    else:
                        target[i] = ys[i] - last
                    last = ys[i]
            else:
                target[mask] = ys[mask]
                if mask.any():
                    last = float(ys[np.flatnonzero(mask)[-1]])
            self._model.learn_many(Xc, target, mask)
            self._last_y = last

        self._learn_frame(X, Y, set(), single, block)

    def predict_many(self, X):
        """``predict_one`` of each row (independent look-aheads from the current state)."""
        import pandas as pd

        preds = [self.predict_one(rec) for rec in X.to_dict("records")]
        return pd.Series(preds, index=X.index, dtype=float if None not in preds else object)


# ---------------------------------------------------------------------------- classifier
@_with_params_doc
class LSTMClassifier(_SupervisedFeatures, base.MiniBatchClassifier):
    """A stateful LSTM classifier with a softmax head that grows with the classes.

    Classes (ints, strings, bools, ...) are mapped by order of first arrival. A class seen for
    the first time gets a new output (``OnlineLSTM.add_outputs``) whose bias is chosen so that
    its probability at that event is ``min(0.01, 1 / (n + 1))`` (``n`` labelled events so far):
    the known classes' probabilities shrink by at most that factor and keep their ratios;
    learning then raises the new class. While a single class has been seen there is nothing to
    discriminate: events advance the state without learning, and ``predict_proba_one`` gives that
    class probability 1. ``predict_proba_one`` covers every class seen and sums to 1.

    Parameters
    ----------
    inputs
        ``"levels"``, ``"changes"`` or ``"both"`` (see :class:`LSTMRegressor`).
    standardize_inputs
        The core's online standardisation of the inputs.
    {params}
    Defaults: 16 units, Adam at 1e-2 (a softmax readout starting at zero needs larger steps
    than a regression to separate classes within a few hundred events), ``bptt=16``.

    Examples
    --------
    >>> from river import datasets, evaluate, metrics
    >>> from streamlstm.adapters.river import LSTMClassifier
    >>> model = LSTMClassifier(seed=42)
    >>> metric = evaluate.progressive_val_score(datasets.Phishing(), model, metrics.Accuracy())
    >>> print(f"Accuracy: {metric.get():.2f}")
    Accuracy: 0.88
    >>> sorted(model.predict_proba_one({"empty_server_form_handler": 1.0}))
    [False, True]
    """

    _loss_kind = "cross_entropy"

    def __init__(
        self,
        inputs: str = "levels",
        hidden: int = 16,
        layers: int = 1,
        cell: str = "lstm",
        bptt: int = 16,
        update_every: int = 1,
        optimizer: str = "adam",
        lr: float = 1e-2,
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
        rho: float = 0.99,
        eps: float = 1e-8,
        clip: float | None = 1.0,
        l2: float = 0.0,
        standardize_inputs: bool = True,
        dtype: str = "float32",
        seed: int | None = 0,
    ):
        self._set_params(locals())

    def _check(self) -> None:
        _Features(self.inputs)
        super()._check()

    def _core_kwargs(self) -> dict[str, Any]:
        kw = super()._core_kwargs()
        kw["loss"] = "cross_entropy"
        return kw

    def _reset_learning(self) -> None:
        super()._reset_learning()
        self._classes: list = []
        self._class_index: dict = {}
        self._n_labelled = 0

    @property
    def _multiclass(self) -> bool:
        return True

    @property
    def classes(self) -> list:
        """The classes seen, in order of first arrival."""
        return list(self._classes)

    @classmethod
    def _unit_test_params(cls):
        yield {"hidden": 4, "bptt": 4}

    def _build(self, n_inputs: int) -> OnlineLSTM:
        return self._new_core(n_inputs, max(2, len(self._classes)))

    def _add_class(self, y: Any, row: np.ndarray | None) -> None:
        self._class_index[y] = len(self._classes)
        self._classes.append(y)
        k = len(self._classes)
        m = self._model
        if m is None or k == 1:
            return
        if m.n_outputs < k:
            m.add_outputs(k - m.n_outputs)
        slot = k - 1
        w = m.weights()
        w["readout.weight"][slot] = 0.0
        w["readout.bias"][slot] = 0.0
        m.set_weights(w)
        p = m.predict_one(row)
        p_new = max(float(p[slot]), 1e-300)
        rest = max(1.0 - p_new, 1e-300)
        q = min(0.01, 1.0 / (self._n_labelled + 1))
        w["readout.bias"][slot] = math.log(q / (1.0 - q)) + math.log(rest) - math.log(p_new)
        m.set_weights(w)

    def learn_one(self, x: dict, y: Any) -> None:
        """Advance the state by ``x`` and learn class ``y`` (``y=None``: advance only)."""
        if y is None:
            self.advance_one(x)
            return
        row = self._encode(x, learn=True)
        if y not in self._class_index:
            self._add_class(y, row)
        self._n_labelled += 1
        if row is None:
            return
        if len(self._classes) < 2:
            self._model.advance(row)
        else:
            self._model.learn_one(row, self._class_index[y])

    def predict_proba_one(self, x: dict) -> dict:
        """Probabilities of every class seen (sum 1); ``{}`` before any class. Pure."""
        if not self._classes:
            return {}
        if len(self._classes) == 1:
            self._features.parse(x)  # validates
            return {self._classes[0]: 1.0}
        row = self._encode(x, learn=False)
        if row is None:
            return {c: 1.0 / len(self._classes) for c in self._classes}
        p = self._model.predict_one(row)
        return {c: float(p[i]) for i, c in enumerate(self._classes)}

    def learn_many(self, X, y) -> None:
        """``learn_one`` over the rows of ``X`` (missing values NaN) with classes ``y``
        (None/NaN: advance only), as one compiled block call per stretch of rows."""
        labels = [None if (v is None or (isinstance(v, float) and v != v)) else v for v in y]
        special, seen = set(), set(self._class_index)
        for i, v in enumerate(labels):
            if v is not None and v not in seen:
                seen.add(v)
                special.add(i)

        def single(rec, i):
            self.learn_one(rec, labels[i])

        def block(Xc, start, end):
            ys = labels[start:end]
            mask = np.array([v is not None for v in ys], dtype=bool)
            self._n_labelled += int(mask.sum())
            if len(self._classes) < 2:
                mask[:] = False
            idx = np.array([self._class_index[v] if v is not None else 0 for v in ys], dtype=np.float64)
            self._model.learn_many(Xc, idx, mask)

        self._learn_frame(X, labels, special, single, block)

    def predict_proba_many(self, X):
        """``predict_proba_one`` of each row, as a DataFrame with one column per class."""
        import pandas as pd

        rows = [self.predict_proba_one(rec) for rec in X.to_dict("records")]
        return pd.DataFrame(rows, index=X.index, columns=list(self._classes), dtype=float)


# ---------------------------------------------------------------------------- forecaster
@_with_params_doc
class LSTMForecaster(_LSTMEstimator, _ForecasterBase):
    """A stateful LSTM forecaster: ``learn_one(y, x)`` learns the value of the series at the
    next step, ``forecast(horizon, xs)`` rolls a copy of the state forward on its own outputs.

    Alignment: the network's step for time t takes the series up to t-1 and the exogenous
    features ``x_t`` of time t (River gives ``x_t`` with ``y_t``, and ``xs`` are the features of
    the forecast times), and its output is learned against ``y_t``. Each arriving value is thus
    the target of the step just taken and an input of the next one (with ``x=None`` this is the
    core's label-then-advance, the advance being done when the next step's features are known).

    With ``residual`` (default) the network predicts the change of the series from a base:
    the last value or, when ``season`` is given, a seasonal base ``y_{t-1}`` plus the step's
    seasonal change (an exponentially smoothed profile of the changes at each phase of the
    season, relative to the level when ``multiplicative``); the base whose recent absolute error
    is lower is used. The network's inputs are the last ``n_lags`` changes and the last error of
    the base, scaled by running medians of their absolute values and clipped to +-5 (robust to
    outliers such as WaterFlow's maintenance drops), then the exogenous features (standardised
    by the core). The target is the error of the base in the same robust units. Without
    ``residual`` the inputs are the last ``n_lags`` values and the target is the value, both
    standardised by the core.

    Parameters
    ----------
    residual
        Predict the change from the base (see above) rather than the value.
    season
        Season length in steps (12 for monthly data with a yearly cycle, 24 for hourly data with
        a daily one), or ``None``.
    multiplicative, season_smoothing
        The seasonal profile is of relative changes (``multiplicative``) or of changes, smoothed
        with this rate (1 = the last season's change alone).
    n_lags
        How many past changes (values, without ``residual``) the network sees at each step.
    exogenous
        Use the features ``x`` (``False``: ignore them, e.g. when x only holds timestamps).
    loss, huber_delta
        ``"squared"`` or ``"huber"``.
    {params}
    Defaults (tuned on WaterFlow and AirlinePassengers, see ``bench/RESULTS.md``):
    ``residual=True`` (the last value is a strong baseline: learn what moves the series away
    from it; a network alone learns too slowly from a few hundred values), robust scaling
    (WaterFlow's drops would otherwise inflate the running variances), ``n_lags=24`` (a day of
    hourly changes), 16 units, Adam at 3e-3, ``bptt=16``; ``season_smoothing=0.5`` and
    ``multiplicative=True`` (seasonal swings that grow with the level, as in AirlinePassengers).

    Examples
    --------
    Forecast the monthly airline passengers (the dataset's ``x`` holds only the month's date,
    so it is ignored). Progressive one-step validation: forecast, then learn the value.

    >>> from river import datasets, evaluate, metrics
    >>> from streamlstm.adapters.river import LSTMForecaster
    >>> model = LSTMForecaster(season=12, exogenous=False, seed=42)
    >>> mae = metrics.MAE()
    >>> for t, (x, y) in enumerate(datasets.AirlinePassengers()):
    ...     if t >= 12:
    ...         mae.update(y, model.forecast(horizon=1)[0])
    ...     model.learn_one(y, x)
    >>> print(f"MAE: {mae.get():.1f}")   # last value: 27.1, River's HoltWinters: 8.6
    MAE: 8.5

    River's forecasting evaluation works too; note that it scores the forecast made before
    learning ``y_t`` against ``y_{t+1} .. y_{t+h}`` (its "+1" is two steps ahead):

    >>> metric = evaluate.evaluate(datasets.AirlinePassengers(), LSTMForecaster(season=12, exogenous=False),
    ...                            metrics.MAE(), horizon=12)
    >>> len(metric.get())
    12
    """

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

    def _reset_learning(self) -> None:
        super()._reset_learning()
        self._features = _Features("levels")
        self._reset_series()
        self._profile: dict[int, float] = {}
        self._err_last: float | None = None
        self._err_season: float | None = None
        self._scale_change = _RunningMedianAbs()
        self._scale_error = _RunningMedianAbs()

    def _reset_series(self) -> None:
        size = max(self.n_lags, self.season or 0) + 1
        self._history: collections.deque = collections.deque(maxlen=size)  # values, latest last
        self._t = 0           # steps of the series seen (phase = t % season)
        self._error = 0.0     # error of the base at the last step

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
        if self._err_season is not None and self._err_season < self._err_last:
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
        return self._features.row(known, learn, new)

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
        f = LSTMRegressor._target(y)
        if f is None:
            self.advance_one(x)
            return
        exog, n_new = self._exog(x, learn=True)
        if self._history:
            row = self._series_inputs(self._history, self._error) + exog
            if self._model is None:
                self._model = self._new_core(len(row))
            elif n_new:
                self._model.add_inputs(n_new)
            b = self._base(self._history[-1], self._t)
            self._model.learn_one(np.array(row, dtype=np.float64), (f - b) / self._target_scale())
        self._observe(f)

    def advance_one(self, x: dict | None = None) -> None:
        """Step the series without observing its value: the state advances and the one-step
        forecast stands in for the value."""
        exog, n_new = self._exog(x, learn=True)
        if not self._history:
            return
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

    def forecast(self, horizon: int, xs: list[dict] | None = None) -> list[float]:
        """Forecasts for the next ``horizon`` steps (``xs``: their exogenous features, any
        sequence; missing ones count as the features' means). Pure: a copy of the state rolls
        forward, each forecast feeding the next step."""
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


# ------------------------------------------------------------------------ anomaly detector
@_with_params_doc
class LSTMAnomalyDetector(_LSTMEstimator, _AnomalyDetectorBase):
    """Anomaly scores from an LSTM's error at predicting each event from the ones before it.

    What it predicts: at every event the network forecasts the next event's features (all
    numeric features, or the ``targets`` given), learning each event as the target of the step
    before it. ``score_one(x)`` compares ``x`` with that forecast: each target feature's error in
    units of the feature's typical one-step change (a running median of ``|x_t - x_{t-1}|``),
    the root mean square over the features, then standardised online by the running median of
    these errors and the running median of their deviations from it. Medians, because the
    anomalies themselves must not inflate the yardstick: about 0 for a usual event, tens for a
    level shift. The first ``grace_period`` scorable events score 0.

    ``score_one`` is pure; ``learn_one(x)`` updates the statistics, learns ``x`` as the target
    of the previous step and advances the state by ``x``. Features emerging mid-stream grow the
    inputs (and the outputs when they are targets); a missing target feature is not scored.
    The scores plug into River's thresholders, e.g.
    ``anomaly.QuantileFilter(LSTMAnomalyDetector(), q=0.99)``.

    Parameters
    ----------
    targets
        Feature names to forecast and score (a tuple), or ``None`` for all features.
    grace_period
        Events scored 0 while the error statistics settle.
    loss, huber_delta
        ``"squared"`` or ``"huber"`` (default: a large error, the anomaly itself, then pulls
        the weights no more than a moderate one).
    standardize_inputs, standardize_targets
        The core's online standardisation.
    {params}
    Defaults: 16 units, Adam at 1e-2 (the level of a series must be tracked within a few
    events), Huber loss (an anomaly, a large error, then pulls the weights no more than a
    moderate one), ``bptt=16``.

    Examples
    --------
    Score River's WaterFlow series hour by hour. Its docstring tells of four anomalous segments:
    three drops of the flow (to 24 l/s) and a small peak after the first two.

    >>> from river import datasets
    >>> from streamlstm.adapters.river import LSTMAnomalyDetector
    >>> model = LSTMAnomalyDetector(seed=42)
    >>> scores = []
    >>> for x, y in datasets.WaterFlow():
    ...     event = {"flow": y}
    ...     scores.append(model.score_one(event))
    ...     model.learn_one(event)
    >>> runs = []   # hours (0-based) scoring above 20, as [first, last] runs
    >>> for t in (t for t, s in enumerate(scores) if s > 20):
    ...     if runs and t - runs[-1][1] <= 3:
    ...         runs[-1][1] = t
    ...     else:
    ...         runs.append([t, t])
    >>> runs
    [[94, 111], [116, 116], [211, 220], [329, 329], [872, 892]]

    The three drops, the peak (hour 329), and one hour of the recovery from the first drop.
    """

    def __init__(
        self,
        targets: tuple | None = None,
        grace_period: int = 24,
        hidden: int = 16,
        layers: int = 1,
        cell: str = "lstm",
        bptt: int = 16,
        update_every: int = 1,
        optimizer: str = "adam",
        lr: float = 1e-2,
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
        rho: float = 0.99,
        eps: float = 1e-8,
        clip: float | None = 1.0,
        l2: float = 0.0,
        loss: str = "huber",
        huber_delta: float = 1.0,
        standardize_inputs: bool = True,
        standardize_targets: bool = True,
        dtype: str = "float32",
        seed: int | None = 0,
    ):
        self._set_params(locals())

    def _check(self) -> None:
        if self.loss not in ("squared", "huber"):
            raise ValueError(f"loss must be 'squared' or 'huber', got {self.loss!r}")
        if self.targets is not None and not isinstance(self.targets, tuple):
            raise TypeError(f"targets must be a tuple of feature names or None, got {self.targets!r}")
        super()._check()

    @classmethod
    def _unit_test_params(cls):
        yield {"hidden": 4, "bptt": 4}

    def _reset_learning(self) -> None:
        super()._reset_learning()
        self._features = _Features("levels")
        self._outputs: list = []            # feature name of each network output
        self._labels: list[int] = []        # labels learned per output (scored once >= 1)
        self._scales: list[_RunningMedianAbs] = []  # per output: median |one-step change|
        self._prediction: np.ndarray | None = None
        self._n_err = 0
        self._err_median = _RunningMedianAbs()
        self._err_spread = _RunningMedianAbs()

    def reset_state(self) -> None:
        """Start a new stream (state zeroed, no pending forecast); weights and statistics kept."""
        super().reset_state()
        self._prediction = None

    def _raw_error(self, known: dict[int, float]) -> float | None:
        pred = self._prediction
        if pred is None:
            return None
        index = self._features.index
        total, n = 0.0, 0
        for o, name in enumerate(self._outputs):
            f = known.get(index[name])
            if f is None or not self._labels[o]:
                continue
            z = (f - pred[o]) / self._scales[o].get()
            total += z * z
            n += 1
        return math.sqrt(total / n) if n else None

    def score_one(self, x: dict) -> float:
        """How unusual ``x`` is given the events before it (about 0 usual, larger = rarer). Pure."""
        known, _ = self._features.parse(x)
        e = self._raw_error(known)
        if e is None or self._n_err < self.grace_period:
            return 0.0
        return (e - self._err_median.get()) / self._err_spread.get()

    def _step(self, x: dict, learn: bool) -> None:
        feats = self._features
        known, new = feats.parse(x)
        if learn:
            e = self._raw_error(known)
            if e is not None:
                self._n_err += 1
                self._err_spread.update(e - self._err_median.get())
                self._err_median.update(e)
            for o, name in enumerate(self._outputs):
                j = feats.index[name]
                if j in known:
                    self._scales[o].update(known[j] - feats.last[j])
        m = self._model
        if learn and m is not None and self._prediction is not None and m.n_steps_stream:
            target = [known.get(feats.index[name], self._prediction[o]) for o, name in enumerate(self._outputs)]
            m.label(np.array(target, dtype=np.float64))
            for o, name in enumerate(self._outputs):
                if feats.index[name] in known:
                    self._labels[o] += 1
        row, n_new = feats.row(known, True, new)
        if not feats.names:
            return
        new_names = feats.names[len(feats.names) - n_new:] if n_new else []
        new_outputs = [n for n in new_names if self.targets is None or n in self.targets]
        if m is None:
            self._outputs = [n for n in feats.names if self.targets is None or n in self.targets]
            if not self._outputs:
                return  # no target feature seen yet
            m = self._model = self._new_core(len(row), len(self._outputs))
            self._labels = [0] * len(self._outputs)
            self._scales = [_RunningMedianAbs() for _ in self._outputs]
        else:
            if n_new:
                m.add_inputs(n_new)
            if new_outputs:
                m.add_outputs(len(new_outputs))
                self._outputs += new_outputs
                self._labels += [0] * len(new_outputs)
                self._scales += [_RunningMedianAbs() for _ in new_outputs]
        out = m.advance(np.array(row, dtype=np.float64))
        self._prediction = np.atleast_1d(np.asarray(out, dtype=np.float64)).copy()

    def learn_one(self, x: dict) -> None:
        """Learn ``x`` as the target of the previous step, then advance the state by ``x``."""
        self._step(x, learn=True)

    def advance_one(self, x: dict) -> None:
        """Advance the state by ``x`` without training the network or the error statistics."""
        self._step(x, learn=False)
