"""The compiled entry points of a single stream (``OnlineLSTM``).

Each takes the model's buffer B = [P | R] (split at I[I_R_START]) and returns the first
output in target units, or NaN when the input was refused (I[I_STATUS] then says why and
nothing was changed). Block calls return the number of rows done.
"""

from __future__ import annotations

import numpy as np

from ._jit import jit
from .checks import check_input, check_lag, check_target
from .layout import (
    I_FOUT,
    I_FX_SCRATCH,
    I_NOUT,
    I_R_START,
    I_SCRATCH_C,
    I_SCRATCH_H,
    I_SCRATCH_SLOT,
    I_SINCE,
    I_STATUS,
    I_T,
    ST_OK,
)
from .normalise import emit_output
from .state_check import first_fault
from .tbptt import advance, begin_lookahead, forward_step, label, peek


@jit
def k_predict(x, B, F, I):
    P, R = B[:I[I_R_START]], B[I[I_R_START]:]
    if not check_input(x, I):
        return np.nan
    return peek(x, P, R, F, I)


@jit
def k_advance(x, B, F, I):
    P, R = B[:I[I_R_START]], B[I[I_R_START]:]
    if not check_input(x, I):
        return np.nan
    return advance(x, P, R, F, I)


@jit
def k_label(y, lag, B, F, I):
    P, R = B[:I[I_R_START]], B[I[I_R_START]:]
    if not (check_lag(lag, I[I_T], I) and check_target(y, I)):
        return False
    label(y, lag, P, R, F, I)
    return True


@jit
def k_learn_one(x, y, B, F, I):
    P, R = B[:I[I_R_START]], B[I[I_R_START]:]
    if not check_input(x, I):
        return np.nan
    if not check_target(y, I):
        return np.nan
    out = advance(x, P, R, F, I)
    label(y, 0, P, R, F, I)
    return out


@jit
def k_learn_many(X, Y, mask, lag, out, B, F, I):
    """Advance through the rows of X; where mask[t], label the step ``lag`` rows back
    (0: row t's own) with Y[t].

    Stops at the first refused row (input, target, or a lag deeper than the stream after
    the row's step) before changing anything for it, and returns its index (I says why);
    returns the number of rows on success. out[t] receives the prequential output of row t.
    """
    P, R = B[:I[I_R_START]], B[I[I_R_START]:]
    n_out = I[I_NOUT]
    for t in range(X.shape[0]):
        x = X[t]
        if not check_input(x, I):
            return t
        if mask[t] and not (check_target(Y[t], I) and check_lag(lag, I[I_T] + 1, I)):
            return t
        advance(x, P, R, F, I)
        for m in range(n_out):
            out[t, m] = F[I[I_FOUT] + m]
        if mask[t]:
            label(Y[t], lag, P, R, F, I)
    I[I_STATUS] = ST_OK
    return X.shape[0]


@jit
def k_predict_many(X, out, B, F, I):
    """Pure: roll a scratch copy of the state through the rows of X."""
    P, R = B[:I[I_R_START]], B[I[I_R_START]:]
    n_out = I[I_NOUT]
    for t in range(X.shape[0]):
        if not check_input(X[t], I):
            return t
    begin_lookahead(R, F, I)
    for t in range(X.shape[0]):
        forward_step(X[t], P, R, F, I, I[I_SCRATCH_SLOT], I[I_SCRATCH_H], I[I_SCRATCH_C], I[I_FX_SCRATCH])
        emit_output(R, F, I, I[I_SCRATCH_SLOT])
        for m in range(n_out):
            out[t, m] = F[I[I_FOUT] + m]
    return X.shape[0]


@jit
def k_set_state(buffer, counters, B, I, spec):
    """Make ``buffer`` (a whole state buffer) and ``counters`` ([t, since]) the stream's
    state if they pass :func:`first_fault`; returns the fault (0: taken). Checking and
    copying in one call keeps a state swap as cheap as the unchecked copy it replaces."""
    fault = first_fault(buffer.reshape(1, buffer.shape[0]), counters.reshape(1, 2), spec)
    if fault == 0:
        R = B[I[I_R_START]:]
        for k in range(buffer.shape[0]):
            R[k] = buffer[k]
        I[I_T] = counters[0]
        I[I_SINCE] = counters[1]
    return fault
