"""The River regressor: features in, a real number out, the state carrying the stream's history."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from river import conf
from river.base import MiniBatchRegressor

from streamlstm import OnlineLSTM

from .base import SupervisedEstimator, new_calibrator
from .features import Features, as_target
from .params import with_params_doc


@with_params_doc
class LSTMRegressor(SupervisedEstimator, MiniBatchRegressor):
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
    interval_level
        Coverage of the interval ``predict_one(x, with_interval=True)`` returns (River's
        convention, as ``river.conf.RegressionJackknife``): a
        :class:`streamlstm.calibration.OnlineCalibrator` fed the prequential residual of each
        labelled event (the prediction made before learning it) gives long-run coverage at this
        level, with no assumption on the model or the data (``docs/calibration.md``). ``None``:
        no calibrator (``with_interval=True`` then raises).
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

    Calibrated prediction intervals (90% by default), River's ``with_interval`` convention:

    >>> model = LSTMRegressor(seed=42)
    >>> hits = []
    >>> for t, (x, y) in enumerate(datasets.TrumpApproval()):
    ...     if t >= 100:
    ...         hits.append(y in model.predict_one(x, with_interval=True))
    ...     model.learn_one(x, y)
    >>> print(f"coverage: {sum(hits) / len(hits):.2f}")
    coverage: 0.90
    """

    residual: bool
    loss: str
    interval_level: float | None
    _added_settings: ClassVar[dict[str, Any]] = {"interval_level": 0.9}

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
        interval_level: float | None = 0.9,
    ):
        self._set_params(locals())

    def _check(self) -> None:
        if self.loss not in ("squared", "huber"):
            raise ValueError(f"loss must be 'squared' or 'huber', got {self.loss!r}")
        Features(self.inputs)
        super()._check()

    def _reset_learning(self) -> None:
        super()._reset_learning()
        self._last_y: float | None = None
        self._calibrator = new_calibrator(self.interval_level)

    def _upgrade_state(self) -> None:
        self._calibrator = new_calibrator(self.interval_level)

    def _build(self, n_inputs: int) -> OnlineLSTM:
        return self._new_core(n_inputs)

    @classmethod
    def _unit_test_params(cls):
        yield {"hidden": 4, "bptt": 4}
        yield {"hidden": 4, "residual": False, "inputs": "both", "seed": None, "loss": "huber"}

    def learn_one(self, x: dict, y: Any) -> None:
        """Advance the state by ``x`` and learn ``y`` (``y=None``: advance only)."""
        f = as_target(y)
        if f is None:
            self.advance_one(x)
            return
        row = self._encode(x, learn=True)
        model = self._model
        target = f - self._last_y if self.residual and self._last_y is not None else f
        if row is not None and model is not None:
            if self.residual and self._last_y is None:
                model.advance(row)
            else:
                y_hat = float(model.learn_one(row, target))
                if self._calibrator is not None:
                    # residual of the prediction made before learning, as learn_many's block
                    # computes it (target - output), so that the two paths stay identical
                    self._calibrator.update(target - y_hat)
        self._last_y = f

    def predict_one(self, x: dict, with_interval: bool = False) -> float | conf.Interval | None:  # type: ignore[override]
        """The prediction ``learn_one(x, y)`` would make for ``x``; pure. ``None`` until a first
        target has been learned (no prediction).

        ``with_interval=True`` returns a ``river.conf.Interval`` at ``interval_level`` around
        that prediction instead (River's convention); the bounds come from the residuals
        learned so far and need not be symmetric about the prediction."""
        if with_interval:
            return self._interval(self.predict_one(x))  # type: ignore[arg-type]  # a float or None here
        if self._last_y is None:
            return None
        model = self._model
        if model is not None and x and self._features.mode == "changes":
            ch = self._features.fast_changes(x)  # the common event, on its shortest path
            if ch is not None:
                out: float = model.predict_one(np.array(ch, dtype=np.float64))  # type: ignore[assignment]
                return self._last_y + out if self.residual else out
        row = self._encode(x, learn=False)
        out = 0.0 if row is None or model is None else float(model.predict_one(row))
        if self.residual:
            return self._last_y + out
        return out if row is not None else self._last_y

    def _interval(self, y_hat: float | None) -> conf.Interval | None:
        if self._calibrator is None:
            raise ValueError("with_interval=True needs a calibrator: construct the regressor with "
                             "interval_level=0.9 (or another level in (0, 1)), not None")
        if y_hat is None:
            return None
        lower, upper = self._calibrator.bounds(y_hat)
        return conf.Interval(lower, upper)

    def learn_many(self, X, y) -> None:
        """``learn_one`` over the rows of ``X`` (missing values NaN) with targets ``y``
        (None/NaN: advance only), as one compiled block call per stretch of rows."""
        Y = np.array([np.nan if (f := as_target(v)) is None else f for v in y], dtype=np.float64)

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
            predictions = self._model.learn_many(Xc, target, mask)
            self._last_y = last
            if self._calibrator is not None and mask.any():
                rows = np.flatnonzero(mask)
                self._calibrator.update_many(np.zeros(rows.size, dtype=np.int64), target[rows] - predictions[rows, 0])

        self._learn_frame(X, set(), single, block)

    def predict_many(self, X):
        """``predict_one`` of each row (independent look-aheads from the current state)."""
        import pandas as pd

        preds = [self.predict_one(rec) for rec in X.to_dict("records")]
        return pd.Series(preds, index=X.index, dtype=float if None not in preds else object)


