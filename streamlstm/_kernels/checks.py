"""Refusals: an input, target or lag a kernel must not take. A check leaves in I what was
wrong and where (I[I_STATUS], I[I_ERRPOS]) and changes nothing else."""

from __future__ import annotations

import math

import numpy as np

from ._jit import jit
from .layout import (
    I_ERRPOS,
    I_K2,
    I_LOSS,
    I_NIN,
    I_NOUT,
    I_STATUS,
    LOSS_CE,
    ST_BAD_CLASS,
    ST_BAD_LAG,
    ST_BAD_LENGTH,
    ST_NOT_FINITE,
    ST_OK,
)


@jit
def check_vector(v, n, I):
    """v must hold n finite numbers."""
    if v.shape[0] != n:
        I[I_STATUS] = ST_BAD_LENGTH
        I[I_ERRPOS] = v.shape[0]
        return False
    for k in range(n):
        if not np.isfinite(v[k]):
            I[I_STATUS] = ST_NOT_FINITE
            I[I_ERRPOS] = k
            return False
    I[I_STATUS] = ST_OK
    return True


@jit
def check_input(x, I):
    return check_vector(x, I[I_NIN], I)


@jit
def check_lag(lag, steps, I):
    """A label may go to any of the last min(steps, k2) steps of a stream."""
    if lag < 0 or lag >= I[I_K2] or lag >= steps:
        I[I_STATUS] = ST_BAD_LAG
        I[I_ERRPOS] = lag
        return False
    return True


@jit
def check_target(y, I):
    """A finite target of n_outputs values, or one class index for cross-entropy."""
    n_out = I[I_NOUT]
    if I[I_LOSS] == LOSS_CE:
        if y.shape[0] != 1:
            I[I_STATUS] = ST_BAD_LENGTH
            I[I_ERRPOS] = y.shape[0]
            return False
        v = y[0]
        if not (v >= 0.0 and v < n_out and v == math.floor(v)):
            I[I_STATUS] = ST_BAD_CLASS
            I[I_ERRPOS] = 0
            return False
        I[I_STATUS] = ST_OK
        return True
    return check_vector(y, n_out, I)
