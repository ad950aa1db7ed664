"""What the four River estimators share: their settings, the lazily built core network, the
state, and for the regressor and the classifier the features-in path and ``learn_many``'s
split of a frame into compiled blocks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from streamlstm import OnlineLSTM
from streamlstm.calibration import OnlineCalibrator

from .features import Features, block_end, frame_matrix
from .params import _CORE, _CORE_OPTIONAL


def check_interval_level(level: Any) -> None:
    """An estimator's ``interval_level`` setting: ``None`` or a number in (0, 1)."""
    if level is not None and (isinstance(level, bool) or not isinstance(level, (int, float, np.floating))
                              or not 0.0 < level < 1.0):
        raise ValueError(f"interval_level must be None or a number strictly between 0 and 1 (e.g. 0.9), got {level!r}")


def new_calibrator(level: float | None, horizon: int = 1) -> OnlineCalibrator | None:
    """The calibrator of an estimator's ``interval_level`` setting (``None``: none)."""
    check_interval_level(level)
    if level is None:
        return None
    return OnlineCalibrator(levels=[float(level)], horizon=horizon)


class LSTMEstimator:
    """Shared machinery: hyper-parameters, the lazily built core, features, state."""

    _loss_kind = "squared"
    _features: Features
    #: settings added since 0.1.0, with the value an estimator pickled by 0.1.0 gets
    _added_settings: ClassVar[dict[str, Any]] = {}
    #: defaults of core settings where this estimator departs from ``params.RIVER_DEFAULTS``
    #: (the signature holds them; a test pins the signature to these and the schema)
    _own_defaults: ClassVar[dict[str, Any]] = {}
    hidden: int  # every estimator's __init__ sets its settings as attributes of these names

    def _set_params(self, params: dict[str, Any]) -> None:
        """Store each ``__init__`` argument under its own name (River's ``clone()`` and
        ``_get_params`` read them back), check them, start empty."""
        for name, value in params.items():
            if name not in ("self", "__class__"):
                setattr(self, name, value)
        self._check()
        self._reset_learning()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        missing = {name: value for name, value in self._added_settings.items() if name not in state}
        if missing:  # pickled before these settings existed: give them, and what they need
            self.__dict__.update(missing)
            self._upgrade_state()

    def _upgrade_state(self) -> None:
        """Create what the ``_added_settings`` need in an estimator pickled without them."""

    def _core_kwargs(self) -> dict[str, Any]:
        kw = {name: getattr(self, name) for name in _CORE}
        kw["betas"] = tuple(kw["betas"])
        for name in _CORE_OPTIONAL:
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


class SupervisedEstimator(LSTMEstimator):
    """Regressor and classifier: features in, the core's prediction out."""

    inputs: str

    def _reset_learning(self) -> None:
        super()._reset_learning()
        self._features = Features(self.inputs)

    def _build(self, n_inputs: int) -> OnlineLSTM:
        """The network for the first event with features (``n_inputs`` columns)."""
        raise NotImplementedError

    def _encode(self, x: dict, learn: bool) -> np.ndarray | None:
        """Input row of ``x``; with ``learn`` grow features / build the network. None when the
        network does not exist (yet)."""
        feats = self._features
        if self._model is not None and x:
            row = feats.fast_row(x, learn)
            if row is not None:
                return np.array(row, dtype=np.float64)
        known, new = feats.parse(x)
        if not learn:
            if self._model is None:
                return None
            row, _ = feats.row(known)
            return np.array(row, dtype=np.float64)
        if self._model is None and not new and not feats.names:
            return None
        row, n_new = feats.row(known, new, learn=True)
        if self._model is None:
            self._model = self._build(len(row))
        elif n_new:
            self._model.add_inputs(feats.width * n_new)
        return np.array(row, dtype=np.float64)

    def advance_one(self, x: dict) -> None:
        """Advance the state by an event whose label is unknown (no learning)."""
        row = self._encode(x, learn=True)
        if row is not None and self._model is not None:
            self._model.advance(row)

    # ---------------------------------------------------------------- blocks
    def _learn_frame(self, X: Any, special_rows: set[int], single: Callable[[dict, int], None],
                     block: Callable[[np.ndarray, int, int], None]) -> None:
        """Drive ``learn_many``: rows where a feature emerges or ``special_rows`` (and every row
        while the network does not exist) go through ``single(record, i)`` (the ``learn_one``
        path); the stretches between them through ``block(Xcore, start, end)``."""
        names, A = frame_matrix(X)
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
            end = block_end(A, cols, t, stop)
            block(feats.block(A, cols, t, end), t, end)
            t = end
