"""`OnlineLSTM`: a stateful LSTM (or tanh RNN) that predicts and learns one event at a time."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from . import persistence
from ._kernels import checks, entry
from ._kernels import layout as K
from ._kernels import state_check as _state_check
from .settings import ModelSettings
from .settings import names as settings_names

if TYPE_CHECKING:
    from .anomaly import AnomalyScorer

__all__ = ["InputError", "LSTMState", "OnlineLSTM"]

_F64 = np.dtype(np.float64)
_I64 = np.dtype(np.int64)
_k_predict, _k_advance = entry.k_predict, entry.k_advance
_k_set_state = entry.k_set_state  # module globals: one lookup fewer per call
_k_predict_scored: Any = None  # _kernels.scored.k_predict_scored, imported on first use
_CELLS = {"lstm": K.CELL_LSTM, "rnn": K.CELL_RNN}
_LOSSES = {"squared": K.LOSS_SQUARED, "huber": K.LOSS_HUBER, "cross_entropy": K.LOSS_CE}
_OPTIMIZERS = {"sgd": K.OPT_SGD, "adam": K.OPT_ADAM, "rmsprop": K.OPT_RMSPROP}
_KIND = "OnlineLSTM"


class InputError(ValueError):
    """Bad input to a block call. ``rows_done`` rows before it were processed and kept;
    ``predictions`` holds their outputs."""

    def __init__(self, message: str, rows_done: int = 0, predictions: np.ndarray | None = None):
        super().__init__(message)
        self.rows_done = rows_done
        self.predictions = predictions


@dataclass
class LSTMState:
    """The recurrent state of one stream: ``h``, ``c`` and its TBPTT history.

    ``h`` and ``c`` are ``(layers, hidden)`` views into ``buffer``; the rest of ``buffer`` is
    the ring of the last ``bptt`` steps (inputs, activations, pending labels), and
    ``counters`` holds the stream's step count and steps since its last update. States are
    plain numpy data: copy them, keep one per stream, hand them back with ``model.state = s``.

    >>> m = OnlineLSTM(n_inputs=1, hidden=4)
    >>> s = m.state                      # a copy
    >>> _ = m.advance([1.0])
    >>> bool((m.state.h != s.h).any())
    True
    >>> m.state = s                      # rewind
    >>> bool((m.state.h == s.h).all())
    True
    """

    buffer: np.ndarray
    counters: np.ndarray
    layers: int
    hidden: int

    @property
    def h(self) -> np.ndarray:
        n = self.layers * self.hidden
        return self.buffer[:n].reshape(self.layers, self.hidden)

    @property
    def c(self) -> np.ndarray:
        n = self.layers * self.hidden
        return self.buffer[n:2 * n].reshape(self.layers, self.hidden)

    @property
    def steps(self) -> int:
        """Events this stream has advanced through."""
        return int(self.counters[0])

    def copy(self) -> LSTMState:
        return LSTMState(self.buffer.copy(), self.counters.copy(), self.layers, self.hidden)


class OnlineLSTM:
    """A stateful LSTM that predicts the next event in microseconds and learns online by TBPTT.

    Parameters
    ----------
    n_inputs, n_outputs
        Features per event and values predicted per event (classes for ``cross_entropy``).
    hidden, layers
        Units per layer and stacked layers.
    cell
        ``"lstm"`` (gates i, f, g, o in PyTorch's order) or ``"rnn"`` (vanilla tanh RNN).
    bptt, update_every
        TBPTT(k1=update_every, k2=bptt): every ``update_every`` events, the losses of the
        labelled steps in the window are backpropagated through at most ``bptt`` steps.
    optimizer, lr, momentum, betas, rho, eps
        ``"adam"``, ``"sgd"`` (with ``momentum``, PyTorch's form) or ``"rmsprop"`` (``rho``).
    clip
        Clip the gradient to this global norm; ``None`` disables clipping.
    l2
        L2 penalty added to the gradient (``l2 * theta``).
    loss, huber_delta
        ``"squared"`` (0.5·r²), ``"huber"`` or ``"cross_entropy"`` (softmax over the outputs).
    standardize_inputs, standardize_targets
        Keep running means and variances and feed the network standardised values;
        predictions come back in the target's own units. Targets of ``cross_entropy`` are
        class indices and never standardised.
    dtype
        ``"float64"`` (default: long-lived states and exact resumes keep every digit) or
        ``"float32"`` (10-25% faster at ``hidden=32``, about 1.5x at 128). The running
        normalisers are float64 either way.
    seed
        Seeds the weight initialisation; two models with one seed are identical.

    Examples
    --------
    Learn a sine wave online, one event at a time, and score the prequential error:

    >>> import math
    >>> model = OnlineLSTM(n_inputs=1, hidden=16, lr=3e-3, seed=0)
    >>> errors = []
    >>> for t in range(3000):
    ...     x, y = math.sin(0.1 * t), math.sin(0.1 * (t + 1))
    ...     y_hat = model.learn_one([x], y)       # predict, then learn
    ...     errors.append(abs(y - y_hat))
    >>> sum(errors[-500:]) / 500 < 0.05
    True
    """

    # the settings (streamlstm.settings.ModelSettings), set from the checked schema
    n_inputs: int
    n_outputs: int
    hidden: int
    layers: int
    cell: str
    bptt: int
    update_every: int
    optimizer: str
    lr: float
    momentum: float
    betas: tuple[float, float]
    rho: float
    eps: float
    clip: float | None
    l2: float
    loss: str
    huber_delta: float
    standardize_inputs: bool
    standardize_targets: bool
    dtype: str
    seed: int | None

    def __init__(
        self,
        n_inputs: int,
        n_outputs: int = 1,
        hidden: int = 32,
        layers: int = 1,
        cell: Literal["lstm", "rnn"] = "lstm",
        bptt: int = 16,
        update_every: int = 1,
        optimizer: Literal["adam", "sgd", "rmsprop"] = "adam",
        lr: float = 1e-3,
        momentum: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
        rho: float = 0.99,
        eps: float = 1e-8,
        clip: float | None = 1.0,
        l2: float = 0.0,
        loss: Literal["squared", "huber", "cross_entropy"] = "squared",
        huber_delta: float = 1.0,
        standardize_inputs: bool = True,
        standardize_targets: bool = True,
        dtype: Literal["float64", "float32"] = "float64",
        seed: int | None = 0,
    ) -> None:
        # the arguments are the settings (a test pins this signature to the schema)
        settings = ModelSettings(**{name: value for name, value in locals().items() if name != "self"})
        self._apply_settings(settings)
        self._busy = False  # see _in_use
        self._allocate(self.n_inputs, self.n_outputs)
        self._init_weights(np.random.default_rng(seed))

    # ------------------------------------------------------------------ set-up
    def _apply_settings(self, settings: ModelSettings) -> None:
        """The checked settings become the model's attributes (``n_inputs`` and
        ``n_outputs`` move on when the model grows; ``get_params`` reads them back)."""
        self.__dict__.update(settings.as_config())
        self.betas = settings.betas

    def _allocate(self, n_in: int, n_out: int) -> None:
        dt = np.dtype(self.dtype)
        I, n_par, n_r, n_f = K.build(n_in, n_out, self.hidden, self.layers, _CELLS[self.cell], self.bptt)
        I[K.I_LOSS] = _LOSSES[self.loss]
        I[K.I_OPT] = _OPTIMIZERS[self.optimizer]
        I[K.I_K1] = self.update_every
        I[K.I_STDX] = self.standardize_inputs
        I[K.I_STDY] = self.standardize_targets
        self.n_inputs, self.n_outputs = n_in, n_out
        self._I = I
        I[K.I_R_START] = 4 * n_par
        self._B = np.zeros(4 * n_par + n_r, dtype=dt)  # one buffer: one argument fewer per call
        self._P, self._R = self._B[:4 * n_par], self._B[4 * n_par:]
        self._F = np.zeros(n_f, dtype=np.float64)
        self._n_par = n_par
        self._state_end = int(I[K.I_STATE_END])
        self._fout = int(I[K.I_FOUT])
        self._ybuf = np.zeros(max(n_out, 1), dtype=np.float64)
        self._y1 = self._ybuf[:1]
        self._scalar_out = n_out == 1 and self.loss != "cross_entropy"
        self._is_ce = self.loss == "cross_entropy"
        self._state_spec = _state_check.spec_of(int(I[K.I_RING]), self.bptt, int(I[K.I_SLOT_SIZE]), int(I[K.I_SLOT_FLAG]),
                                                int(I[K.I_SLOT_Y]), n_out, self._is_ce, self._state_end)
        F = self._F
        F[K.F_LR], F[K.F_MOM], F[K.F_B1], F[K.F_B2] = self.lr, self.momentum, self.betas[0], self.betas[1]
        F[K.F_RHO], F[K.F_EPS], F[K.F_CLIP], F[K.F_L2] = self.rho, self.eps, self.clip or 0.0, self.l2
        F[K.F_DELTA], F[K.F_B1T], F[K.F_B2T] = self.huber_delta, 1.0, 1.0
        # a squared gradient norm above this is treated as non-finite: g² must fit the dtype
        F[K.F_GLIMIT] = 1e30 if self.dtype == "float32" else 1e300

    def _init_weights(self, rng: np.random.Generator) -> None:
        """PyTorch's U(-1/√H, 1/√H) for the cells, forget-gate bias 1, zero readout.

        A zero readout makes the first predictions the running mean of the target, the
        best guess before anything is learned; the forget bias of 1 lets memory survive
        the first updates.
        """
        H = self.hidden
        bound = 1.0 / np.sqrt(H)
        w = {}
        for l in range(self.layers):
            n_x = self.n_inputs if l == 0 else H
            G = self._G
            w[f"weight_ih_l{l}"] = rng.uniform(-bound, bound, (G, n_x))
            w[f"weight_hh_l{l}"] = rng.uniform(-bound, bound, (G, H))
            b = rng.uniform(-bound, bound, G)
            if self.cell == "lstm":
                b[H:2 * H] = 1.0
            w[f"bias_l{l}"] = b
        w["readout.weight"] = np.zeros((self.n_outputs, H))
        w["readout.bias"] = np.zeros(self.n_outputs)
        self.set_weights(w)
        self._rng_state = rng.bit_generator.state

    @property
    def _G(self) -> int:
        return 4 * self.hidden if self.cell == "lstm" else self.hidden

    # --------------------------------------------------------------- the stream
    def _vector(self, x: Any) -> np.ndarray:
        try:
            arr = as_numbers(x, "input")
        except (TypeError, ValueError) as exc:
            raise TypeError(f"input must be a sequence of {self.n_inputs} numbers, got {x!r} ({exc})") from None
        if arr.ndim != 1:
            arr = arr.reshape(-1) if arr.size == self.n_inputs else arr
            if arr.ndim != 1:
                raise ValueError(f"input must be 1-D with {self.n_inputs} values, got shape {arr.shape}")
        return np.ascontiguousarray(arr)

    def _refused(self, what: str, values: np.ndarray, row: int | None = None) -> ValueError:
        status, pos = int(self._I[K.I_STATUS]), int(self._I[K.I_ERRPOS])
        where = "" if row is None else f"row {row}: "
        if status == K.ST_BAD_LENGTH:
            want = self.n_inputs if what == "input" else (1 if self._is_ce else self.n_outputs)
            return ValueError(f"{where}{what} has {pos} values, expected {want}")
        if status == K.ST_NOT_FINITE:
            return ValueError(f"{where}{what} position {pos} is {float(values[pos])!r}: not a finite number")
        if status == K.ST_BAD_CLASS:
            return ValueError(f"{where}{what} {float(values[0])!r} is not a class index in [0, {self.n_outputs})")
        if status == K.ST_BAD_LAG:  # in a block, the refused row's own step counts
            steps = self.n_steps_stream + (row is not None)
            return ValueError(f"{where}lag {pos} is out of range: a label may go to one of the last "
                              f"min(steps={steps}, bptt={self.bptt}) steps")
        return ValueError(f"{where}{what} refused (status {status})")

    def _finish(self, first: float, x: np.ndarray) -> float | np.ndarray:
        """The slow end of predict_one / advance: a refusal, or a vector output."""
        if first != first and self._I[K.I_STATUS]:
            raise self._refused("input", x)
        return self._output(first)

    def _output(self, first: float) -> float | np.ndarray:
        if self._scalar_out:
            return first
        return self._F[self._fout:self._fout + self.n_outputs].copy()

    def _target(self, y: Any) -> np.ndarray:
        if self._is_ce:
            if isinstance(y, (bool, np.bool_)) or not isinstance(y, (int, np.integer, float, np.floating)):
                raise TypeError(f"a cross_entropy target is a class index (int), got {y!r}")
            self._y1[0] = y
            return self._y1
        if self.n_outputs == 1 and isinstance(y, (float, int, np.floating, np.integer)) and not isinstance(y, bool):
            self._y1[0] = y
            return self._y1
        try:
            return np.ascontiguousarray(as_numbers(y, "target").reshape(-1))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"target must be {self.n_outputs} number(s), got {y!r} ({exc})") from None

    def predict_one(self, x: Sequence[float] | np.ndarray) -> float | np.ndarray:
        """The output that ``advance(x)`` would give, changing nothing (a pure look-ahead).

        Returns a float for a single regression output, else an array of ``n_outputs``
        (class probabilities for ``cross_entropy``).

        >>> m = OnlineLSTM(n_inputs=2, hidden=4)
        >>> m.predict_one([0.5, -1.0]) == m.predict_one([0.5, -1.0])
        True
        """
        if self._busy:
            raise _in_use(self)
        self._busy = True
        try:
            if type(x) is not np.ndarray or x.dtype is not _F64 or x.ndim != 1:
                x = self._vector(x)
            first = _k_predict(x, self._B, self._F, self._I)
            if self._scalar_out and first == first:
                return first
            return self._finish(first, x)
        finally:
            self._busy = False

    def predict_scored(self, x: Sequence[float] | np.ndarray, scorer: AnomalyScorer, y: float, y_hat: float,
                       level: int = 0, key: int = 0) -> tuple[float, float, float, float]:
        """A prediction with an interval and an anomaly score, in one compiled call.

        ``y`` is the value that just arrived and ``y_hat`` the forecast that was made for it;
        ``x`` holds the inputs of the next forecast. Returns ``(y_next, score, lower, upper)``:
        ``y_next = predict_one(x)`` (pure, as ever), then
        ``scorer.score_and_bounds(y, y_hat, y_next, level, key)``, which scores ``y`` and
        learns its residual, with the interval at ``scorer``'s ``levels[level]`` around
        ``y_next`` (the same numbers to the bit as those two calls, and the same errors). A
        model with one regression output only.

        >>> from streamlstm.anomaly import AnomalyScorer
        >>> m, scorer = OnlineLSTM(n_inputs=1, hidden=4), AnomalyScorer(levels=[0.9])
        >>> y_hat = 0.0
        >>> for y in (0.1, 0.3, 0.2):
        ...     y_hat, score, lo, hi = m.predict_scored([y], scorer, y, y_hat)
        >>> bool(lo <= y_hat <= hi) and y_hat == m.predict_one([0.2])
        True
        """
        if self._busy:
            raise _in_use(self)
        if type(y) is float and type(y_hat) is float and type(key) is int and type(level) is int:
            if _k_predict_scored is None:
                _import_scored()
            self._busy = True
            try:
                if type(x) is not np.ndarray or x.dtype is not _F64 or x.ndim != 1:
                    x = self._vector(x)
                out = _k_predict_scored(x, self._B, self._F, self._I, scorer.calibrator.state, scorer.params, key,
                                        y, y_hat, level)
                if out[1] != -1.0:
                    if out[0] == out[0] or not self._I[K.I_STATUS]:
                        return out
                    raise self._refused("input", x)
            finally:
                self._busy = False
        # the kernel refused the scorer's arguments (nothing was done), or they are not
        # floats: the two calls themselves, with their conversions and messages
        if not self._scalar_out:
            raise ValueError(f"predict_scored needs a model with one regression output (n_outputs={self.n_outputs}, "
                             f"loss={self.loss!r})")
        y_next = float(self.predict_one(x))  # already a float: one regression output
        return (y_next, *scorer.score_and_bounds(y, y_hat, y_next, level, key))

    def advance(self, x: Sequence[float] | np.ndarray) -> float | np.ndarray:
        """Feed ``x``: the state moves one step; returns that step's output (target units).

        >>> m = OnlineLSTM(n_inputs=1, hidden=4)
        >>> y_hat = m.advance([0.3])
        >>> m.n_steps_stream
        1
        """
        if self._busy:
            raise _in_use(self)
        self._busy = True
        try:
            if type(x) is not np.ndarray or x.dtype is not _F64 or x.ndim != 1:
                x = self._vector(x)
            first = _k_advance(x, self._B, self._F, self._I)
            if self._scalar_out and first == first:
                return first
            return self._finish(first, x)
        finally:
            self._busy = False

    def label(self, y: float | int | Sequence[float] | np.ndarray, lag: int = 0) -> None:
        """Attach target ``y`` to the output of the step ``lag`` steps back (0 = the latest).

        ``lag`` may be up to ``bptt - 1`` (delayed labels). An update runs here when at
        least ``update_every`` steps were advanced since the last one.

        >>> m = OnlineLSTM(n_inputs=1, hidden=4, bptt=4)
        >>> for v in (0.1, 0.2, 0.3):
        ...     _ = m.advance([v])
        >>> m.label(0.25, lag=1)          # the label of the step before the latest
        >>> m.n_updates
        1
        """
        if self._busy:
            raise _in_use(self)
        self._busy = True
        try:
            y = self._target(y)
            if not entry.k_label(y, int(lag), self._B, self._F, self._I):
                raise self._refused("target", y)
        finally:
            self._busy = False

    def learn_one(self, x: Sequence[float] | np.ndarray, y: float | int | Sequence[float] | np.ndarray) -> float | np.ndarray:
        """``advance(x)`` then ``label(y)``; returns the prediction made before learning.

        >>> m = OnlineLSTM(n_inputs=1, hidden=4)
        >>> y_hat = m.learn_one([0.5], 1.0)
        >>> m.n_steps_stream, m.n_updates
        (1, 1)
        """
        if self._busy:
            raise _in_use(self)
        self._busy = True
        try:
            if type(x) is not np.ndarray or x.dtype is not _F64 or x.ndim != 1:
                x = self._vector(x)
            y = self._target(y)
            first = entry.k_learn_one(x, y, self._B, self._F, self._I)
            if first != first and self._I[K.I_STATUS]:
                bad_input = not checks.check_input(x, self._I.copy())
                raise self._refused("input" if bad_input else "target", x if bad_input else y)
            return self._output(first)
        finally:
            self._busy = False

    # ----------------------------------------------------------------- blocks
    def _matrix(self, X: Any) -> np.ndarray:
        X = as_numbers(X, "X")
        if X.ndim == 1 and self.n_inputs == 1:
            X = X[:, None]
        if X.ndim != 2 or X.shape[1] != self.n_inputs:
            raise ValueError(f"X must have shape (T, {self.n_inputs}), got {X.shape}")
        return np.ascontiguousarray(X)

    def learn_many(self, X: Any, Y: Any, mask: Any = None, lag: int = 0) -> np.ndarray:
        """Advance through the rows of ``X`` and learn ``Y[t]`` where ``mask[t]`` (default all).

        Row t is ``advance(X[t])``, then, where ``mask[t]``, ``label(Y[t], lag)``: with
        ``lag = 0`` the target of the row's own step (``learn_one``), with ``lag > 0`` the
        target of the step ``lag`` rows back (a forecast ``lag + 1`` steps ahead whose truth
        arrives now). One compiled call; results are exactly those of the row-by-row calls.
        Returns the prequential predictions, shape ``(T, n_outputs)``. A bad row (or a
        labelled row fewer than ``lag`` steps into the stream) raises :class:`InputError`
        after the rows before it were processed; the bad row itself changes nothing.

        >>> import numpy as np
        >>> m = OnlineLSTM(n_inputs=1, hidden=4)
        >>> preds = m.learn_many(np.ones((5, 1)), np.ones(5), mask=[1, 1, 0, 1, 1])
        >>> preds.shape, m.n_steps_stream, m.n_updates
        ((5, 1), 5, 4)
        >>> _ = m.learn_many(np.ones((3, 1)), np.ones(3), lag=2)   # labels 2 rows back
        """
        if isinstance(lag, bool) or not isinstance(lag, (int, np.integer)) or not 0 <= lag < self.bptt:
            raise ValueError(f"lag must be an integer in [0, bptt={self.bptt}), got {lag!r}")
        if self._busy:
            raise _in_use(self)
        self._busy = True
        try:
            X = self._matrix(X)
            T = X.shape[0]
            Y = as_numbers(Y, "Y")
            width = 1 if self._is_ce else self.n_outputs
            if Y.ndim == 1 and width == 1:
                Y = Y[:, None]
            if Y.shape != (T, width):
                raise ValueError(f"Y must have shape ({T},) or ({T}, {width}), got {Y.shape}")
            Y = np.ascontiguousarray(Y)
            if mask is None:
                M = np.ones(T, dtype=np.bool_)
            else:
                M = np.ascontiguousarray(np.asarray(mask, dtype=np.bool_))
                if M.shape != (T,):
                    raise ValueError(f"mask must have shape ({T},), got {M.shape}")
            out = np.empty((T, self.n_outputs), dtype=np.float64)
            done = entry.k_learn_many(X, Y, M, int(lag), out, self._B, self._F, self._I)
            if done < T:
                bad_input = not checks.check_input(X[done], self._I.copy())
                err = self._refused("input" if bad_input else "target", X[done] if bad_input else Y[done], row=done)
                raise InputError(str(err), done, out[:done].copy())
            return out
        finally:
            self._busy = False

    def advance_many(self, X: Any) -> np.ndarray:
        """Advance through the rows of ``X`` without labels; returns the outputs ``(T, n_outputs)``.

        >>> m = OnlineLSTM(n_inputs=1, hidden=4)
        >>> m.advance_many([[0.1], [0.2]]).shape
        (2, 1)
        """
        X = self._matrix(X)
        return self.learn_many(X, np.zeros((X.shape[0], 1 if self._is_ce else self.n_outputs)), np.zeros(X.shape[0], bool))

    def predict_many(self, X: Any) -> np.ndarray:
        """Pure: the outputs of rolling a copy of the state through the rows of ``X``.

        >>> m = OnlineLSTM(n_inputs=1, hidden=4)
        >>> a = m.predict_many([[0.1], [0.2]]); b = m.predict_many([[0.1], [0.2]])
        >>> bool((a == b).all()), m.n_steps_stream
        (True, 0)
        """
        if self._busy:
            raise _in_use(self)
        self._busy = True
        try:
            X = self._matrix(X)
            out = np.empty((X.shape[0], self.n_outputs), dtype=np.float64)
            done = entry.k_predict_many(X, out, self._B, self._F, self._I)
            if done < X.shape[0]:
                raise InputError(str(self._refused("input", X[done], row=done)), 0, out[:0].copy())
            return out
        finally:
            self._busy = False

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> LSTMState:
        """A copy of the stream's state (h, c, TBPTT history). Assign an ``LSTMState`` to swap."""
        return LSTMState(self._R[:self._state_end].copy(), self._I[[K.I_T, K.I_SINCE]].copy(),
                         self.layers, self.hidden)

    @state.setter
    def state(self, value: LSTMState) -> None:
        if self._busy:
            raise _in_use(self)
        self._busy = True
        try:
            if not isinstance(value, LSTMState):
                raise TypeError(f"state must be an LSTMState, got {type(value).__name__}")
            if value.buffer.shape != (self._state_end,) or value.layers != self.layers or value.hidden != self.hidden:
                raise ValueError(f"state does not fit this model: buffer of {value.buffer.shape[0]} values, "
                                 f"expected {self._state_end} (layers={self.layers}, hidden={self.hidden}, "
                                 f"bptt={self.bptt}, n_inputs={self.n_inputs}, n_outputs={self.n_outputs})")
            buffer, counters = value.buffer, value.counters
            if (type(counters) is not np.ndarray or counters.dtype is not _I64 or counters.shape != (2,)
                    or buffer.dtype is not self._R.dtype or not buffer.flags.c_contiguous
                    or _k_set_state(buffer, counters, self._B, self._I, self._state_spec)):
                # the slow way, for what the compiled check cannot take as it is: it names the fault
                self.check_states(buffer.reshape(1, -1), np.asarray(counters).reshape(1, -1), "state", stored=False)
                self._R[:self._state_end] = buffer
                self._I[K.I_T], self._I[K.I_SINCE] = counters
        finally:
            self._busy = False

    def check_states(self, buffers: np.ndarray, counters: np.ndarray, what: str, stored: bool = True) -> None:
        """``ValueError`` unless every row of ``buffers`` (whole state buffers, or ``h`` and
        ``c`` only) and of ``counters`` (``[t, since]`` rows, or none) is a state this model
        can run: finite, label flags 0 or 1, pending class indices in range, counters in
        [0, 2**61] (``stored``: from a file or bytes) or [0, 2**62].

        >>> m = OnlineLSTM(n_inputs=1, hidden=2)
        >>> s = m.state; s.buffer[0] = float("nan")
        >>> m.state = s
        Traceback (most recent call last):
        ...
        ValueError: state holds a non-finite value at position 0: nan
        """
        if counters.ndim != 2 or counters.shape[1] != 2 or counters.dtype.kind not in "iu":
            raise ValueError(f"{what}: counters must be integer pairs (t, since), got {counters.dtype} "
                             f"{counters.shape}")
        buffers = np.ascontiguousarray(buffers)
        spec = self._state_spec
        if stored:
            spec = spec.copy()
            spec[_state_check.S_LIMIT] = _state_check.MAX_STORED_COUNTER
        fault = _state_check.first_fault(buffers, np.ascontiguousarray(counters, dtype=np.int64), spec)
        if fault:
            raise ValueError(_state_check.describe_fault(fault, buffers, counters, self.n_outputs, what,
                                                         int(spec[_state_check.S_LIMIT])))

    def reset_state(self) -> None:
        """Zero h and c and forget the TBPTT history (pending labels are dropped)."""
        if self._busy:
            raise _in_use(self)
        self._busy = True
        try:
            self._R[:self._state_end] = 0.0
            self._I[K.I_T] = self._I[K.I_SINCE] = 0
        finally:
            self._busy = False

    # -------------------------------------------------------------- counters
    @property
    def n_steps(self) -> int:
        """Events advanced by this model over all streams."""
        return int(self._I[K.I_NSTEPS])

    @property
    def n_steps_stream(self) -> int:
        """Events advanced in the current stream (state)."""
        return int(self._I[K.I_T])

    @property
    def n_updates(self) -> int:
        """Optimizer updates applied."""
        return int(self._I[K.I_NUPD])

    @property
    def n_skipped_updates(self) -> int:
        """Updates skipped because the loss or gradient was not finite (weights untouched)."""
        return int(self._I[K.I_NSKIP])

    @property
    def n_dropped_labels(self) -> int:
        """Labels whose step left the bptt window before an update used them."""
        return int(self._I[K.I_NDROP])

    @property
    def statistics_frozen(self) -> bool:
        """Whether the running input and target statistics stand still.

        Freeze them to serve a trained model: inference then never shifts the normalisers
        (which all streams of a model share), and outputs depend only on each stream's state.

        >>> m = OnlineLSTM(n_inputs=1, hidden=3)
        >>> _ = m.advance([5.0]); m.statistics_frozen = True
        >>> _ = m.advance([100.0]); m.input_statistics()[1].tolist()
        [5.0]
        """
        return bool(self._I[K.I_FROZEN])

    @statistics_frozen.setter
    def statistics_frozen(self, value: bool) -> None:
        self._I[K.I_FROZEN] = bool(value)

    @property
    def last_loss(self) -> float:
        """Mean loss (standardised units) of the last update's labelled steps."""
        return float(self._F[K.F_LOSS])

    # ----------------------------------------------------------------- weights
    def _block(self, index: int) -> dict[str, np.ndarray]:
        """Views of block ``index`` of P (0 theta, 1 grad, 2 and 3 moments) in PyTorch layout."""
        n = self._n_par
        flat = self._P[index * n:(index + 1) * n]
        I, H, G = self._I, self.hidden, self._G
        out = {}
        for l in range(self.layers):
            rec = K.I_LAYERS + K.I_PER_LAYER * l
            n_x = int(I[rec + K.L_IN])
            o = int(I[rec + K.L_OFFW])
            W = flat[o:o + (n_x + H) * G].reshape(n_x + H, G)
            out[f"weight_ih_l{l}"] = W[:n_x].T
            out[f"weight_hh_l{l}"] = W[n_x:].T
            o = int(I[rec + K.L_OFFB])
            out[f"bias_l{l}"] = flat[o:o + G]
        o = int(I[K.I_READOUT_W])
        out["readout.weight"] = flat[o:o + H * self.n_outputs].reshape(H, self.n_outputs).T
        o = int(I[K.I_READOUT_B])
        out["readout.bias"] = flat[o:o + self.n_outputs]
        return out

    def weights(self) -> dict[str, np.ndarray]:
        """Copies of the parameters in PyTorch's layout (one bias per layer = b_ih + b_hh).

        >>> m = OnlineLSTM(n_inputs=3, hidden=4)
        >>> {k: v.shape for k, v in m.weights().items()}
        {'weight_ih_l0': (16, 3), 'weight_hh_l0': (16, 4), 'bias_l0': (16,), 'readout.weight': (1, 4), 'readout.bias': (1,)}
        """
        return {k: np.array(v, dtype=np.float64) for k, v in self._block(0).items()}

    def gradients(self) -> dict[str, np.ndarray]:
        """The loss gradient of the last update (before L2 and clipping), as :meth:`weights`."""
        return {k: np.array(v, dtype=np.float64) for k, v in self._block(1).items()}

    def set_weights(self, weights: Mapping[str, Any]) -> None:
        """Set parameters from a dict shaped like :meth:`weights` (every key required).

        >>> m = OnlineLSTM(n_inputs=1, hidden=2)
        >>> w = m.weights(); w["readout.bias"][:] = 5.0
        >>> m.set_weights(w); m.predict_one([0.0]) == 5.0
        True
        """
        self._set_block(0, weights)

    def _set_block(self, index: int, values: Mapping[str, Any]) -> None:
        views = self._block(index)
        missing = set(views) - set(values)
        if missing:
            raise KeyError(f"missing weights: {sorted(missing)}")
        for name, view in views.items():
            arr = np.asarray(values[name], dtype=np.float64)
            if arr.shape != view.shape:
                raise ValueError(f"{name} has shape {arr.shape}, expected {view.shape}")
            if not np.isfinite(arr).all():
                raise ValueError(f"{name} holds non-finite values")
            view[...] = arr

    # ------------------------------------------------------------------ growth
    def add_inputs(self, k: int = 1) -> None:
        """Grow by ``k`` input features; their weights, moments and history start at zero.

        Outputs for the old features are unchanged while the new ones are absent (zero).

        >>> m = OnlineLSTM(n_inputs=1, hidden=4)
        >>> before = m.predict_one([0.5]); m.add_inputs(1)
        >>> m.predict_one([0.5, 0.0]) == before
        True
        """
        self._grow(self.n_inputs + int(k), self.n_outputs)

    def add_outputs(self, k: int = 1) -> None:
        """Grow the readout by ``k`` outputs (classes); new rows start at zero weight."""
        self._grow(self.n_inputs, self.n_outputs + int(k))

    def _grow(self, n_in: int, n_out: int) -> None:
        if self._busy:
            raise _in_use(self)
        self._busy = True
        try:
            if n_in < self.n_inputs or n_out < self.n_outputs:
                raise ValueError("a model can only grow")
            old = self._export()
            self._allocate(n_in, n_out)
            self._import(_pad_export(old, self._export(), self.hidden))
        finally:
            self._busy = False

    # ------------------------------------------------------------- persistence
    def _config(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in settings_names()}

    def get_params(self) -> dict[str, Any]:
        """The constructor's arguments: ``OnlineLSTM(**m.get_params())`` is a fresh twin."""
        return self._config()

    def _export(self) -> dict[str, np.ndarray]:
        """Every stored number as named arrays whose names do not depend on the layout."""
        arrays: dict[str, np.ndarray] = {}
        for b, block in enumerate(("theta", "grad", "moment1", "moment2")):
            for name, v in self._block(b).items():
                arrays[f"{block}/{name}"] = np.array(v)
        I, H, L, k2 = self._I, self.hidden, self.layers, self.bptt
        R = self._R
        arrays["state/h"] = R[:L * H].reshape(L, H).copy()
        arrays["state/c"] = R[L * H:2 * L * H].reshape(L, H).copy()
        ring = R[int(I[K.I_RING]):self._state_end].reshape(k2, int(I[K.I_SLOT_SIZE]))
        for l in range(L):
            rec = K.I_LAYERS + K.I_PER_LAYER * l
            for field, key, width in (("xh", K.L_SLOT_XH, int(I[rec + K.L_IN]) + H), ("act", K.L_SLOT_ACT, self._G),
                                      ("c_prev", K.L_SLOT_C_PREV, H), ("tanh_c", K.L_SLOT_TANH_C, H)):
                o = int(I[rec + key])
                arrays[f"ring/l{l}/{field}"] = ring[:, o:o + width].copy()
        for field, key, width in (("out", K.I_SLOT_OUT, self.n_outputs), ("y", K.I_SLOT_Y, self.n_outputs), ("flag", K.I_SLOT_FLAG, 1)):
            o = int(I[key])
            arrays[f"ring/{field}"] = ring[:, o:o + width].copy()
        F = self._F
        arrays["F/header"] = F[:K.F_HEADER].copy()
        for name, key, n in (("inputs", K.I_FX, self.n_inputs), ("targets", K.I_FY, self.n_outputs)):
            o = int(I[key])
            arrays[f"stats/{name}"] = F[o:o + 3 * n].reshape(3, n).copy()
        arrays["counters"] = I[[K.I_NSTEPS, K.I_NUPD, K.I_NSKIP, K.I_OPT_STEPS, K.I_NDROP, K.I_T, K.I_SINCE]].copy()
        return arrays

    def _import(self, arrays: Mapping[str, np.ndarray]) -> None:
        for b, block in enumerate(("theta", "grad", "moment1", "moment2")):
            for name, view in self._block(b).items():
                view[...] = arrays[f"{block}/{name}"]
        I, H, L, k2 = self._I, self.hidden, self.layers, self.bptt
        R = self._R
        R[:L * H] = arrays["state/h"].reshape(-1)
        R[L * H:2 * L * H] = arrays["state/c"].reshape(-1)
        ring = R[int(I[K.I_RING]):self._state_end].reshape(k2, int(I[K.I_SLOT_SIZE]))
        for l in range(L):
            rec = K.I_LAYERS + K.I_PER_LAYER * l
            for field, key in (("xh", K.L_SLOT_XH), ("act", K.L_SLOT_ACT), ("c_prev", K.L_SLOT_C_PREV), ("tanh_c", K.L_SLOT_TANH_C)):
                a = arrays[f"ring/l{l}/{field}"]
                o = int(I[rec + key])
                ring[:, o:o + a.shape[1]] = a
        for field, key in (("out", K.I_SLOT_OUT), ("y", K.I_SLOT_Y), ("flag", K.I_SLOT_FLAG)):
            a = arrays[f"ring/{field}"]
            o = int(I[key])
            ring[:, o:o + a.shape[1]] = a
        F = self._F
        F[:K.F_HEADER] = arrays["F/header"]
        for name, key in (("inputs", K.I_FX), ("targets", K.I_FY)):
            a = arrays[f"stats/{name}"]
            o = int(I[key])
            F[o:o + a.size] = a.reshape(-1)
        (I[K.I_NSTEPS], I[K.I_NUPD], I[K.I_NSKIP], I[K.I_OPT_STEPS], I[K.I_NDROP],
         I[K.I_T], I[K.I_SINCE]) = arrays["counters"]

    def to_bytes(self) -> bytes:
        """Everything (weights, state, optimizer moments, normalisers, ring, counters,
        hyper-parameters, RNG) as one versioned, pickle-free byte string."""
        if self._busy:
            raise _in_use(self)
        self._busy = True
        try:
            meta = {"config": self._config(), "rng": _jsonable(self._rng_state),
                    "statistics_frozen": self.statistics_frozen}
            return persistence.dumps(_KIND, meta, self._export())
        finally:
            self._busy = False

    @classmethod
    def from_bytes(cls, blob: bytes) -> OnlineLSTM:
        """Rebuild a model from :meth:`to_bytes`; it continues bit-identically.

        >>> m = OnlineLSTM(n_inputs=1, hidden=4); _ = m.learn_one([1.0], 2.0)
        >>> twin = OnlineLSTM.from_bytes(m.to_bytes())
        >>> twin.learn_one([0.5], 1.0) == m.learn_one([0.5], 1.0)
        True
        """
        _, meta, arrays = persistence.loads(blob, expect_kind=_KIND)
        return cls._from_parts(meta, arrays)

    @classmethod
    def _from_parts(cls, meta: Any, arrays: dict[str, np.ndarray]) -> OnlineLSTM:
        """A model from a file's parts: every setting, array and index-like value is checked
        before anything as large as the model is built; ``FormatError`` names the field."""
        with persistence.format_errors("streamlstm model"):
            return cls._checked_from_parts(meta, arrays)

    @classmethod
    def _checked_from_parts(cls, meta: Any, arrays: dict[str, np.ndarray]) -> OnlineLSTM:
        bad = persistence.FormatError
        if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
            raise bad("corrupt streamlstm model: the header has no 'config' object of settings")
        config = dict(meta["config"])
        try:
            settings = ModelSettings.from_config(config)
        except ValueError as exc:
            raise bad(f"corrupt streamlstm model: setting {exc}") from None
        frozen, rng = meta.get("statistics_frozen", False), meta.get("rng")
        rng_state: Any = rng
        if not isinstance(frozen, bool):
            raise bad(f"corrupt streamlstm model: 'statistics_frozen' must be true or false, got {frozen!r}")
        if rng is not None and not isinstance(rng, dict):
            raise bad(f"corrupt streamlstm model: 'rng' must be an object, got {type(rng).__name__}")
        _check_arrays(settings, arrays)
        model = cls.__new__(cls)
        model._apply_settings(settings)
        model._busy = False
        model._allocate(settings.n_inputs, settings.n_outputs)
        model._import(arrays)
        try:
            model.check_states(model._R[:model._state_end].reshape(1, -1),
                               model._I[[K.I_T, K.I_SINCE]].reshape(1, 2), "the saved state (arrays 'state/*' and 'ring/*')")
        except ValueError as exc:
            raise bad(f"corrupt streamlstm model: {exc}") from None
        model._rng_state = rng_state
        model.statistics_frozen = frozen
        return model

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_bytes` to ``path`` atomically (temporary file, fsync, rename)."""
        persistence.write_atomic(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> OnlineLSTM:
        """Read a model written by :meth:`save`."""
        _, meta, arrays = persistence.read_file(path, expect_kind=_KIND)
        try:
            return cls._from_parts(meta, arrays)
        except persistence.FormatError as exc:
            raise persistence.FormatError(f"{path}: {exc}") from None

    def copy(self) -> OnlineLSTM:
        """An independent twin (weights, state, moments, statistics), in microseconds.

        >>> m = OnlineLSTM(n_inputs=1, hidden=4); twin = m.copy()
        >>> _ = twin.learn_one([1.0], 2.0)
        >>> m.n_steps, twin.n_steps
        (0, 1)
        """
        twin = OnlineLSTM.__new__(OnlineLSTM)
        twin.__dict__.update(self.__dict__)
        for name in ("_B", "_F", "_I", "_ybuf"):
            setattr(twin, name, getattr(self, name).copy())
        cut = 4 * self._n_par
        twin._P, twin._R = twin._B[:cut], twin._B[cut:]
        twin._y1 = twin._ybuf[:1]
        twin._busy = False
        return twin

    def __deepcopy__(self, memo: dict[int, Any]) -> OnlineLSTM:
        return self.copy()

    def input_statistics(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Running ``(count, mean, variance)`` of every input feature (copies).

        >>> m = OnlineLSTM(n_inputs=2, hidden=3)
        >>> for x in ([1.0, 10.0], [3.0, 30.0]):
        ...     _ = m.advance(x)
        >>> m.input_statistics()[1].tolist(), m.input_statistics()[2].tolist()
        ([2.0, 20.0], [1.0, 100.0])
        """
        return self._statistics(K.I_FX, self.n_inputs)

    def target_statistics(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Running ``(count, mean, variance)`` of every target (regression losses)."""
        return self._statistics(K.I_FY, self.n_outputs)

    def _statistics(self, key: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        o = int(self._I[key])
        block = self._F[o:o + 3 * n].reshape(3, n)
        count, mean, m2 = block[0].copy(), block[1].copy(), block[2]
        var = np.divide(m2, count, out=np.zeros(n), where=count > 0)
        return count, mean, var

    def __getstate__(self) -> dict[str, Any]:
        return {"blob": self.to_bytes()}

    def __setstate__(self, d: dict[str, Any]) -> None:
        other = OnlineLSTM.from_bytes(d["blob"])
        self.__dict__.update(other.__dict__)

    def __repr__(self) -> str:
        return (f"OnlineLSTM(n_inputs={self.n_inputs}, n_outputs={self.n_outputs}, hidden={self.hidden}, "
                f"layers={self.layers}, cell={self.cell!r}, bptt={self.bptt}, update_every={self.update_every}, "
                f"optimizer={self.optimizer!r}, lr={self.lr}, loss={self.loss!r}, dtype={self.dtype!r})")

    # ---------------------------------------------------------------- PyTorch
    @classmethod
    def from_torch(cls, lstm_state_dict: Mapping[str, Any], linear_state_dict: Mapping[str, Any] | None = None,
                   **kwargs: Any) -> OnlineLSTM:
        """Build a model from the arrays of a ``torch.nn.LSTM`` (and optional ``nn.Linear``).

        Pass numpy arrays (``{k: v.numpy() for k, v in lstm.state_dict().items()}``); torch
        is not imported. Dimensions come from the arrays; other keyword arguments are the
        constructor's. Standardisation is off unless asked for, so that the outputs equal
        the PyTorch model's. Without a linear head the readout is the identity on h
        (``n_outputs = hidden``).

        >>> import numpy as np
        >>> H, n_in = 3, 2
        >>> rng = np.random.default_rng(0)
        >>> sd = {"weight_ih_l0": rng.normal(size=(4 * H, n_in)), "weight_hh_l0": rng.normal(size=(4 * H, H)),
        ...       "bias_ih_l0": rng.normal(size=4 * H), "bias_hh_l0": rng.normal(size=4 * H)}
        >>> m = OnlineLSTM.from_torch(sd)
        >>> m.hidden, m.n_outputs
        (3, 3)
        """
        sd = {k: np.asarray(v, dtype=np.float64) for k, v in lstm_state_dict.items()}
        if "weight_ih_l0" not in sd:
            raise KeyError("expected an nn.LSTM state_dict with 'weight_ih_l0'")
        if any(k.endswith("_reverse") for k in sd):
            raise ValueError("bidirectional LSTMs cannot run statefully one event at a time")
        if any(k.startswith("weight_hr") for k in sd):
            raise ValueError("LSTMs with proj_size are not supported")
        layers = 1 + max(int(k.rsplit("_l", 1)[1]) for k in sd if k.startswith("weight_ih_l"))
        G, n_in = sd["weight_ih_l0"].shape
        H = G // 4
        if linear_state_dict is not None:
            lin = {k: np.asarray(v, dtype=np.float64) for k, v in linear_state_dict.items()}
            V = lin["weight"]
            a = lin.get("bias", np.zeros(V.shape[0]))
        else:
            V, a = np.eye(H), np.zeros(H)
        kwargs.setdefault("standardize_inputs", False)
        kwargs.setdefault("standardize_targets", False)
        model = cls(n_inputs=n_in, n_outputs=V.shape[0], hidden=H, layers=layers, cell="lstm", **kwargs)
        w = {}
        for l in range(layers):
            w[f"weight_ih_l{l}"] = sd[f"weight_ih_l{l}"]
            w[f"weight_hh_l{l}"] = sd[f"weight_hh_l{l}"]
            w[f"bias_l{l}"] = sd.get(f"bias_ih_l{l}", np.zeros(G)) + sd.get(f"bias_hh_l{l}", np.zeros(G))
        w["readout.weight"] = V
        w["readout.bias"] = a
        model.set_weights(w)
        return model


def _expected_arrays(s: ModelSettings) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, dtype) of every array :meth:`OnlineLSTM._export` writes for settings ``s``."""
    H, L, k2, n_in, n_out = s.hidden, s.layers, s.bptt, s.n_inputs, s.n_outputs
    G = 4 * H if s.cell == "lstm" else H
    dt = s.dtype
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    for block in ("theta", "grad", "moment1", "moment2"):
        for l in range(L):
            n_x = n_in if l == 0 else H
            out[f"{block}/weight_ih_l{l}"] = ((G, n_x), dt)
            out[f"{block}/weight_hh_l{l}"] = ((G, H), dt)
            out[f"{block}/bias_l{l}"] = ((G,), dt)
        out[f"{block}/readout.weight"] = ((n_out, H), dt)
        out[f"{block}/readout.bias"] = ((n_out,), dt)
    out["state/h"] = out["state/c"] = ((L, H), dt)
    for l in range(L):
        n_x = n_in if l == 0 else H
        out[f"ring/l{l}/xh"] = ((k2, n_x + H), dt)
        out[f"ring/l{l}/act"] = ((k2, G), dt)
        out[f"ring/l{l}/c_prev"] = out[f"ring/l{l}/tanh_c"] = ((k2, H), dt)
    out["ring/out"] = out["ring/y"] = ((k2, n_out), dt)
    out["ring/flag"] = ((k2, 1), dt)
    out["F/header"] = ((K.F_HEADER,), "float64")
    out["stats/inputs"] = ((3, n_in), "float64")
    out["stats/targets"] = ((3, n_out), "float64")
    out["counters"] = ((7,), "int64")
    return out


_N_FIXED_ARRAYS, _N_ARRAYS_PER_LAYER = 4 * 2 + 2 + 3 + 4, 4 * 3 + 4  # as _expected_arrays writes them
_MAY_BE_NONFINITE = (K.F_LOSS, K.F_GNORM)  # the last update's loss and norm, kept after a skipped update


def _check_arrays(s: ModelSettings, arrays: Mapping[str, np.ndarray]) -> None:
    """Names, shapes, dtypes and values of a saved model's arrays against its settings.

    The count of arrays is checked first, so that ``layers=10**6`` in a small file is
    refused before a million names are made; matching shapes then bound the model's size
    by the file's.
    """
    bad = persistence.FormatError
    want = _N_FIXED_ARRAYS + _N_ARRAYS_PER_LAYER * s.layers
    if len(arrays) != want:
        raise bad(f"corrupt streamlstm model: {len(arrays)} arrays, settings layers={s.layers} need {want}")
    expected = _expected_arrays(s)
    for name, (shape, dtype) in expected.items():
        a = arrays.get(name)
        if a is None:
            raise bad(f"corrupt streamlstm model: array {name!r} is missing")
        if a.shape != shape or a.dtype != np.dtype(dtype):
            raise bad(f"corrupt streamlstm model: array {name!r} is {a.dtype} {a.shape}, settings say "
                      f"{dtype} {shape}")
        if a.dtype.kind == "f" and not name.startswith("grad/") and name != "F/header" \
                and not np.isfinite(a).all():
            pos = int(np.flatnonzero(~np.isfinite(a.reshape(-1)))[0])
            raise bad(f"corrupt streamlstm model: array {name!r} holds {a.reshape(-1)[pos]!r} at flat position "
                      f"{pos}: not finite")
    head = arrays["F/header"]
    fixed = {K.F_LR: ("lr", s.lr), K.F_MOM: ("momentum", s.momentum), K.F_B1: ("betas[0]", s.betas[0]),
             K.F_B2: ("betas[1]", s.betas[1]), K.F_RHO: ("rho", s.rho), K.F_EPS: ("eps", s.eps),
             K.F_CLIP: ("clip", s.clip or 0.0), K.F_L2: ("l2", s.l2), K.F_DELTA: ("huber_delta", s.huber_delta),
             K.F_GLIMIT: ("gradient limit", 1e30 if s.dtype == "float32" else 1e300)}
    for k, (name, value) in fixed.items():
        if head[k] != value:
            raise bad(f"corrupt streamlstm model: F/header[{k}] ({name}) is {head[k]!r}, the settings say {value!r}")
    for k, name in ((K.F_B1T, "adam beta1 power"), (K.F_B2T, "adam beta2 power")):
        if not 0.0 <= head[k] <= 1.0:
            raise bad(f"corrupt streamlstm model: F/header[{k}] ({name}) is {head[k]!r}, allowed [0, 1]")
    rest = np.delete(head, list(_MAY_BE_NONFINITE))
    if not np.isfinite(rest).all():
        raise bad("corrupt streamlstm model: array 'F/header' holds a non-finite value")
    for name in ("stats/inputs", "stats/targets"):
        count, m2 = arrays[name][0], arrays[name][2]
        if (count < 0).any() or (m2 < 0).any():
            raise bad(f"corrupt streamlstm model: array {name!r} holds a negative count or sum of squares")
    counters = arrays["counters"]
    if (counters < 0).any() or (counters > _state_check.MAX_STORED_COUNTER).any():
        raise bad(f"corrupt streamlstm model: array 'counters' is {counters.tolist()}: each must be in [0, 2**61]")


def _import_scored() -> None:
    global _k_predict_scored
    from ._kernels import scored

    _k_predict_scored = scored.k_predict_scored


def _in_use(model: OnlineLSTM) -> RuntimeError:
    """Two threads in one model would interleave their steps and lose updates without a
    word (the kernels run without the GIL). A lock would cost a sixth of a prediction;
    this flag costs a few nanoseconds and turns the race into an error."""
    return RuntimeError(f"this {type(model).__name__} is in use by another thread: a model is not thread-safe; "
                        "use one model per thread (copy()), or hold a threading.Lock of your own around its calls")


_PLAIN_NUMBERS = frozenset({float, int, np.float64, np.float32, np.int64, np.int32})


def as_numbers(x: Any, what: str) -> np.ndarray:
    """``x`` as a float64 array, refusing what only looks like numbers.

    ``True``, strings such as ``"1.5"``, dates and ``None`` are refused (``TypeError``
    naming the position), and so are masked values of a masked array: NumPy would turn
    them into 1.0, 1.5, a count of days or drop the mask.

    >>> as_numbers([1, 2.5], "input").tolist()
    [1.0, 2.5]
    >>> as_numbers([1.0, True], "input")
    Traceback (most recent call last):
    ...
    TypeError: input position 1 is True, a bool, not a number
    """
    if type(x) is np.ndarray and x.dtype is _F64:
        return x
    if isinstance(x, np.ma.MaskedArray):
        masked = np.ma.getmaskarray(x)
        if masked.any():
            pos = tuple(int(i) for i in np.argwhere(masked)[0])
            raise ValueError(f"{what} position {pos[0] if len(pos) == 1 else pos} is masked: "
                             "fill or drop masked values first")
        x = np.asarray(x.data)
    if type(x) is list or type(x) is tuple:
        if _PLAIN_NUMBERS.issuperset(map(type, x)):
            return np.asarray(x, dtype=np.float64)  # the common case: one pass over the types
        for i, v in enumerate(x):  # a bool or a string inside a list is upcast without a word
            if isinstance(v, (bool, np.bool_, str, bytes, np.str_, np.bytes_)):
                raise TypeError(f"{what} position {i} is {v!r}, a {type(v).__name__}, not a number")
    arr = np.asarray(x)
    kind = arr.dtype.kind
    if kind == "O":
        for i, v in enumerate(arr.reshape(-1)):
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise TypeError(f"{what} position {i} is {v!r}, a {type(v).__name__}, not a number")
    elif kind not in "fiu":
        raise TypeError(f"{what} holds {arr.dtype} values ({np.ravel(arr)[:3].tolist()!r}...), not numbers")
    return arr.astype(np.float64, copy=False)


def _pad_export(old: Mapping[str, np.ndarray], new: Mapping[str, np.ndarray], hidden: int) -> dict[str, np.ndarray]:
    """Place every old array in the top-left corner of the (larger) new one of its name.

    The exception is a layer's history ``xh = [x; h]``: grown inputs go between the old
    inputs and ``h``, so ``h`` keeps its place at the end.
    """
    out = {}
    for name, fresh in new.items():
        prev = old.get(name)
        if prev is None or prev.shape == fresh.shape:
            out[name] = fresh if prev is None else prev
            continue
        grown = fresh.copy()
        if name.endswith("/xh"):
            n_x_old = prev.shape[1] - hidden
            grown[:, :n_x_old] = prev[:, :n_x_old]
            grown[:, -hidden:] = prev[:, n_x_old:]
        else:
            grown[tuple(slice(0, s) for s in prev.shape)] = prev
        out[name] = grown
    return out


def _jsonable(state: Any) -> Any:
    if isinstance(state, dict):
        return {k: _jsonable(v) for k, v in state.items()}
    if isinstance(state, (np.integer,)):
        return int(state)
    return state
