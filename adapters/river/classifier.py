"""The River classifier: a softmax head over the LSTM that grows with the classes."""

from __future__ import annotations

import math
from typing import Any, ClassVar, cast

import numpy as np
from river.base import MiniBatchClassifier

from streamlstm import OnlineLSTM

from .base import SupervisedEstimator
from .features import Features
from .params import with_params_doc


@with_params_doc
class LSTMClassifier(SupervisedEstimator, MiniBatchClassifier):
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
    _own_defaults: ClassVar[dict[str, Any]] = {"lr": 1e-2}

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
        Features(self.inputs)
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
        p = cast(np.ndarray, m.predict_one(cast(np.ndarray, row)))  # a model exists: so does row
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
        model = self._model
        if row is None or model is None:
            return
        if len(self._classes) < 2:
            model.advance(row)
        else:
            model.learn_one(row, self._class_index[y])

    def predict_proba_one(self, x: dict) -> dict:  # type: ignore[override]  # River's has **kwargs
        """Probabilities of every class seen (sum 1); ``{}`` before any class. Pure."""
        if not self._classes:
            return {}
        if len(self._classes) == 1:
            self._features.parse(x)  # validates
            return {self._classes[0]: 1.0}
        row = self._encode(x, learn=False)
        model = self._model
        if row is None or model is None:
            return {c: 1.0 / len(self._classes) for c in self._classes}
        p = cast(np.ndarray, model.predict_one(row))  # a probability per class
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

        self._learn_frame(X, special, single, block)

    def predict_proba_many(self, X):
        """``predict_proba_one`` of each row, as a DataFrame with one column per class."""
        import pandas as pd

        rows = [self.predict_proba_one(rec) for rec in X.to_dict("records")]
        return pd.DataFrame(rows, index=X.index, columns=list(self._classes), dtype=float)


