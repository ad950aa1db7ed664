"""``OnlineLSTM.predict_scored``'s compiled call: the prediction, then an anomaly scorer's
score and interval around it (``calibration.score_and_bounds``).

A module of its own, imported on the first ``predict_scored``: a model that never asks for
a score does not import the calibration kernels nor build their inlined twins.
"""

from __future__ import annotations

import math

import numpy as np

from . import calibration as CK
from ._jit import inline_twins, jit
from .checks import check_input
from .layout import I_LOSS, I_NOUT, I_R_START, LOSS_CE
from .tbptt import peek

# the calibration kernels, inlined into k_predict_scored (why: ``inline_twins``); the
# bound helpers are called in loops at many sites: inlined too, they tripled its compile
# (27 s against 8 s under load) and saved nothing measurable
_CK_INLINE = inline_twins(CK, keep=("integral_term", "own_bound", "issued_bound"))
_score_and_bounds = _CK_INLINE.score_and_bounds


@jit
def k_predict_scored(x, B, F, I, S, Q, key, y, y_hat, level):
    """``entry.k_predict`` of ``x``, then the anomaly scorer's ``score_and_bounds`` (state
    ``S``, parameters ``Q``) of ``(y, y_hat)`` with the interval around that prediction:
    ``(prediction, score, lower, upper)``. One dispatch instead of two is most of what a
    prediction with an interval and a score costs over a plain one, and the checks are
    cheaper here than in Python. Refused, with nothing changed: the scorer's arguments (a
    non-finite value or forecast, a key or level out of range, a model without one
    regression output) give score -1; the input gives NaN first (I says why)."""
    if not (math.isfinite(y) and math.isfinite(y_hat) and 0 <= key < S.shape[0] and 0 <= level < int(Q[CK.P_J])
            and I[I_NOUT] == 1 and I[I_LOSS] != LOSS_CE):
        return np.nan, -1.0, np.nan, np.nan
    P, R = B[:I[I_R_START]], B[I[I_R_START]:]
    if not check_input(x, I):
        return np.nan, 0.0, np.nan, np.nan
    y_next = peek(x, P, R, F, I)
    score, lower, upper = _score_and_bounds(S, Q, key, y, y_hat, y_next, level)
    return y_next, score, lower, upper
