"""The River anomaly detector: the LSTM forecasts each event from the ones before it, and the
core's calibrated scorer says how rare its error is, as a score in [0, 1] that means the same on
every stream."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

try:  # river >= 0.26
    from river.base import AnomalyDetector
except ImportError:  # pragma: no cover - river < 0.26
    from river.anomaly.base import AnomalyDetector  # type: ignore[no-redef]

from streamlstm.anomaly import DEFAULT_THRESHOLD, AnomalyScorer

from .base import LSTMEstimator
from .features import Features
from .params import with_params_doc
from .running_median import RunningMedianAbs

__all__ = ["DEFAULT_THRESHOLD", "LSTMAnomalyDetector"]

_SCORINGS = ("calibrated", "robust")


@with_params_doc
class LSTMAnomalyDetector(LSTMEstimator, AnomalyDetector):
    """Calibrated anomaly scores in [0, 1] from an LSTM's error at predicting each event from the
    ones before it.

    What it predicts: at every event the network forecasts the next event's features (all
    numeric features, or the ``targets`` given), learning each event as the target of the step
    before it. ``score_one(x)`` scores each target feature's value against that forecast with
    the core's :class:`streamlstm.anomaly.AnomalyScorer` (one calibrated key per feature), and
    returns the largest of these scores. A score ``s`` means a calibrated tail probability of
    about ``10 ** (-10 s)`` on any stream, whatever its scale, noise level or quantisation, so
    one threshold serves a fleet: ``DEFAULT_THRESHOLD = 0.5`` (a tail probability of 1e-5, about
    one false alert per 100 000 ordinary events and target feature). An incident is reported
    once: its score is the evidence when it rises above the peak of the last 100 events, else 0.
    How the score is built and what is guaranteed: ``docs/calibration.md``. With one target
    feature and the default settings, the scores are exactly those of the core's
    :class:`streamlstm.anomaly.AnomalyDetector` on the same values.

    ``score_one`` is pure; ``learn_one(x)`` feeds the scorer, learns ``x`` as the target of the
    previous step and advances the state by ``x``. Features emerging mid-stream grow the inputs
    (and the outputs when they are targets); a missing target feature is not scored.

    Turn scores into alerts with ``score >= DEFAULT_THRESHOLD`` and learn every event, flagged
    or not: the score reports an incident once and stays calibrated by learning every value.
    River's ``anomaly.ThresholdFilter`` protects its detector by default (flagged events are
    not learned), so a lasting change would be flagged for ever; and in River 0.26 its
    ``protect_anomaly_detector=False`` learns no event at all (``AnomalyFilter.learn_one``
    learns only when protecting). A quantile filter suits these scores less: most are 0.

    Parameters
    ----------
    targets
        Feature names to forecast and score (a tuple), or ``None`` for all features.
    scoring
        ``"calibrated"`` (default, above) or ``"robust"``: the score of streamlstm 0.1, the RMS
        over the target features of each error in units of the feature's running median
        one-step change, standardised by the running median of these errors and of their
        deviations (about 0 for a usual event, unbounded). Kept, on request only, for the
        continuous ranking it gives every event (the calibrated score is 0 between incidents);
        its scale differs from stream to stream, so no single threshold serves several (on
        NAB it scored as a detector that never fires).
    grace_period
        With ``scoring="robust"``, events scored 0 while the error statistics settle (the
        calibrated score has its own: the first 10 non-zero residuals of a stream score 0).
    loss, huber_delta
        ``"squared"`` or ``"huber"``.
    standardize_inputs, standardize_targets
        The core's online standardisation.
    {params}
    Defaults: those of the core's ``AnomalyDetector`` (16 units, Adam at 3e-3, squared loss,
    float64, ``bptt=16``), whose calibrated scores are measured on the NAB dev streams in
    ``bench/RESULTS.md``.

    Examples
    --------
    Score River's WaterFlow series hour by hour and turn the scores into alerts with the
    documented threshold. Its docstring tells of four anomalous segments: three drops of the
    flow (to 24 l/s, hours 93-110, 210-224 and 872-887) and a small peak (hours 328-330).

    >>> from river import datasets
    >>> from streamlstm.adapters.river import LSTMAnomalyDetector
    >>> from streamlstm.anomaly import DEFAULT_THRESHOLD
    >>> model = LSTMAnomalyDetector()
    >>> alerts = []
    >>> for t, (x, y) in enumerate(datasets.WaterFlow()):
    ...     event = {"flow": y}
    ...     score = model.score_one(event)       # in [0, 1], before learning the event
    ...     if score >= DEFAULT_THRESHOLD:
    ...         alerts.append(t)
    ...     model.learn_one(event)
    >>> alerts
    [94, 212, 872, 873]

    The three drops, each reported within two hours of its start; the small peak stays below
    the threshold, and so does the start of the stream (the core's scorer learns its first
    ``window`` non-zero residuals before it scores: a scale set by one residual would
    make hour 1 an alert).
    """

    targets: tuple | None
    scoring: str
    grace_period: int
    # 0.1.0 pickles go on answering with the score they were giving
    _added_settings: ClassVar[dict[str, Any]] = {"scoring": "robust"}
    _own_defaults: ClassVar[dict[str, Any]] = {"dtype": "float64"}
    loss: str

    def __init__(
        self,
        targets: tuple | None = None,
        scoring: str = "calibrated",
        grace_period: int = 24,
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
        dtype: str = "float64",
        seed: int | None = 0,
    ):
        self._set_params(locals())

    def _check(self) -> None:
        if self.loss not in ("squared", "huber"):
            raise ValueError(f"loss must be 'squared' or 'huber', got {self.loss!r}")
        if self.targets is not None and not isinstance(self.targets, tuple):
            raise TypeError(f"targets must be a tuple of feature names or None, got {self.targets!r}")
        if self.scoring not in _SCORINGS:
            raise ValueError(f"scoring must be one of {_SCORINGS}, got {self.scoring!r}")
        super()._check()

    @classmethod
    def _unit_test_params(cls):
        yield {"hidden": 4, "bptt": 4}
        yield {"hidden": 4, "bptt": 4, "scoring": "robust"}

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
        self._upgrade_state()

    def _upgrade_state(self) -> None:
        # one scorer key per output; score_one runs the probe on a copy of the scorer's state
        # and learn_one adopts the probe's state when it learns the event score_one scored
        self._scorer = AnomalyScorer(n_keys=max(1, len(self._outputs)))
        self._probe = AnomalyScorer(n_keys=max(1, len(self._outputs)))
        self._probed: tuple | None = None
        self._n_learned = 0

    def __getstate__(self) -> dict:
        # the probe is scratch space of score_one: not part of the estimator (a pickle taken
        # before and after score_one is the same)
        state = self.__dict__.copy()
        state["_probe"] = None
        state["_probed"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if self._probe is None:
            self._probe = AnomalyScorer(n_keys=self._scorer.n_keys)

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

    def _pairs(self, known: dict[int, float]) -> tuple[tuple[int, float, float], ...]:
        """``(output, value, forecast)`` of each target feature present in the event; a feature
        with no forecast yet is its own forecast (as in the core's ``AnomalyDetector``)."""
        index = self._features.index
        pred = self._prediction
        pairs = []
        for o, name in enumerate(self._outputs):
            f = known.get(index[name])
            if f is not None:
                pairs.append((o, f, f if pred is None or o >= len(pred) else float(pred[o])))
        return tuple(pairs)

    def _score_calibrated(self, known: dict[int, float]) -> float:
        pairs = self._pairs(known)
        if not pairs:
            return 0.0
        probe = self._probe
        np.copyto(probe.state, self._scorer.state)
        top = 0.0
        for o, y, y_hat in pairs:
            s = probe.score(y, y_hat, key=o)
            if s > top:
                top = s
        self._probed = (self._n_learned, pairs)
        return top

    def _learn_scores(self, known: dict[int, float]) -> None:
        """Feed the scorer this event's values and forecasts (what score_one scored)."""
        pairs = self._pairs(known)
        if self._probed == (self._n_learned, pairs):
            # score_one scored exactly these pairs from the current state: adopt its result
            scorer, probe = self._scorer, self._probe
            scorer.calibrator.state, probe.calibrator.state = probe.calibrator.state, scorer.calibrator.state
        else:
            for o, y, y_hat in pairs:
                self._scorer.score(y, y_hat, key=o)
        self._probed = None
        self._n_learned += 1

    def _learn_first_values(self, known: dict[int, float], new: dict, n_before: int) -> None:
        """The outputs created by this event: a scorer key each, fed its value as its own
        forecast (nothing was forecast), as the core's ``AnomalyDetector`` does."""
        n_new = len(self._outputs) - self._scorer.n_keys
        if n_new > 0:
            self._scorer.add_keys(n_new)
            self._probe.add_keys(n_new)
        index = self._features.index
        for o in range(n_before, len(self._outputs)):
            name = self._outputs[o]
            f = new[name] if name in new else known.get(index[name])
            if f is not None:
                self._scorer.score(f, f, key=o)

    def score_one(self, x: dict) -> float:
        """How rare ``x`` is given the events before it: a calibrated score in [0, 1] (with
        ``scoring="robust"``: about 0 usual, larger = rarer, unbounded). Pure."""
        known, _ = self._features.parse(x)
        if self.scoring == "calibrated":
            return self._score_calibrated(known)
        e = self._raw_error(known)
        if e is None or self._n_err < self.grace_period:
            return 0.0
        return (e - self._err_median.get()) / self._err_spread.get()

    def _step(self, x: dict, learn: bool) -> None:
        feats = self._features
        known, new = feats.parse(x)
        calibrated = self.scoring == "calibrated"
        n_before = len(self._outputs)
        if learn and calibrated:
            self._learn_scores(known)
        elif learn:
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
        if learn and calibrated and len(self._outputs) > n_before:
            self._learn_first_values(known, new, n_before)

    def learn_one(self, x: dict) -> None:
        """Learn ``x`` as the target of the previous step, then advance the state by ``x``."""
        self._step(x, learn=True)

    def advance_one(self, x: dict) -> None:
        """Advance the state by ``x`` without training the network or the error statistics."""
        self._step(x, learn=False)

