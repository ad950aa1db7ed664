"""The LSTM expert: a stateful LSTM that forecasts the next change of the series.

Its step for time t sees the last ``n_lags`` changes up to ``t - 1`` (in units of the typical
change, clipped to +-5: a sensor's drop must not saturate it) and the exogenous features of
time t with their change since ``t - 1``; it learns ``(y_t - y_{t-1}) / scale`` (clipped
alike). One network serves every stream: each stream keeps its own ``(h, c)`` state.
"""

from __future__ import annotations

import numpy as np

from ..model import LSTMState, OnlineLSTM
from .experts import lag_changes

CLIP = 5.0
_NOBODY = object()   # the network's state belongs to no stream yet


class LSTMExpert:
    """A residual-on-the-last-value LSTM with one state per stream.

    >>> expert = LSTMExpert(n_lags=3, n_features=0, hidden=4)
    >>> row = expert.row(np.array([1.0, 2.0, 4.0]), 3, 1.0, None, None)
    >>> row.tolist()
    [2.0, 1.0, 0.0]
    """

    def __init__(self, n_lags: int = 24, n_features: int = 0, hidden: int = 16, lr: float = 3e-3,
                 seed: int | None = 0) -> None:
        self.n_lags = n_lags
        self.n_features = n_features
        self.model = OnlineLSTM(n_inputs=n_lags + 2 * n_features, hidden=hidden, lr=lr, bptt=16,
                                optimizer="adam", standardize_inputs=True, standardize_targets=False,
                                dtype="float32", seed=seed)
        self._row = np.zeros(n_lags + 2 * n_features)
        self.owner: object = _NOBODY   # the stream whose state the network holds

    def row(self, history: np.ndarray, n: int, scale: float, x: np.ndarray | None,
            x_before: np.ndarray | None) -> np.ndarray:
        """The network's input after ``n`` values (``history``, latest last) and with the
        features ``x`` of the next time (``x_before``: those of the latest value)."""
        r = self._row
        lag_changes(history, n, self.n_lags, scale, CLIP, False, r, 0)
        if self.n_features and x is not None:
            o = self.n_lags
            nf = self.n_features
            r[o:o + nf] = x
            if x_before is not None:
                r[o + nf:o + 2 * nf] = x - x_before
        return r

    def holds(self, key: object) -> bool:
        """Whether the network holds stream ``key``'s state (keys compare by value: the same
        key read twice from a file is two objects)."""
        return self.owner is key or (self.owner is not _NOBODY and self.owner == key)

    def use(self, key: object, state: LSTMState | None) -> LSTMState | None:
        """Make the network hold stream ``key``'s state (``None``: a fresh one); returns the
        state of the stream it held before (to be kept by that stream), or ``None``."""
        if self.holds(key):
            return None
        before = self.model.state
        if state is None:
            self.model.reset_state()
        else:
            self.model.state = state
        self.owner = key
        return before

    def learn(self, row: np.ndarray, change: float, scale: float) -> float:
        """Advance by ``row`` and learn ``change``; returns the change forecast before learning."""
        t = change / scale
        t = CLIP if t > CLIP else max(t, -CLIP)
        return float(self.model.learn_one(row, t)) * scale

    def predict(self, row: np.ndarray, scale: float) -> float:
        """The change the next step would forecast (pure)."""
        return float(self.model.predict_one(row)) * scale
