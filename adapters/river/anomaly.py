"""The River anomaly detector: how far each event is from the LSTM's forecast of it, in robust
units."""

from __future__ import annotations

import math

import numpy as np

try:  # river >= 0.26
    from river.base import AnomalyDetector
except ImportError:  # pragma: no cover - river < 0.26
    from river.anomaly.base import AnomalyDetector  # type: ignore[no-redef]

from .base import LSTMEstimator
from .features import Features
from .params import with_params_doc
from .running_median import RunningMedianAbs


@with_params_doc
class LSTMAnomalyDetector(LSTMEstimator, AnomalyDetector):
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

    targets: tuple | None
    grace_period: int
    loss: str

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
        self._features = Features("levels")
        self._outputs: list = []            # feature name of each network output
        self._labels: list[int] = []        # labels learned per output (scored once >= 1)
        self._scales: list[RunningMedianAbs] = []  # per output: median |one-step change|
        self._prediction: np.ndarray | None = None
        self._n_err = 0
        self._err_median = RunningMedianAbs()
        self._err_spread = RunningMedianAbs()

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
        row, n_new = feats.row(known, new, learn=True)
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
            self._scales = [RunningMedianAbs() for _ in self._outputs]
        else:
            if n_new:
                m.add_inputs(n_new)
            if new_outputs:
                m.add_outputs(len(new_outputs))
                self._outputs += new_outputs
                self._labels += [0] * len(new_outputs)
                self._scales += [RunningMedianAbs() for _ in new_outputs]
        out = m.advance(np.array(row, dtype=np.float64))
        self._prediction = np.atleast_1d(np.asarray(out, dtype=np.float64)).copy()

    def learn_one(self, x: dict) -> None:
        """Learn ``x`` as the target of the previous step, then advance the state by ``x``."""
        self._step(x, learn=True)

    def advance_one(self, x: dict) -> None:
        """Advance the state by ``x`` without training the network or the error statistics."""
        self._step(x, learn=False)

