"""Where every number lives: the four flat buffers of a model, their offsets, and views.

A compiled call takes few arguments (each costs dispatch time), so a model is four flat
arrays whose offsets are themselves stored in the int64 array ``I``::

  P (model dtype)   [ theta | grad | moment1 | moment2 ]      each block n_params long
     one block:     [ W_0 | b_0 | W_1 | b_1 | ... | V | a ]
                      W_l: (n_x + H, G) input-major, at I[rec + L_OFFW];  b_l: G
                      V: (H, n_out) at I[I_READOUT_W];  a: n_out at I[I_READOUT_B]

  R (model dtype)   [ h | c | ring: k2 slots | scratch slot | scratch h | scratch c |
                      grad z | grad xh | grad h | grad c | grad out | W transposed ]
                      h, c: L·H each (layer after layer); the stream's state is
                      R[:I[I_STATE_END]] (h, c and the ring), the rest is scratch
     one slot:      [ xh_0 | act_0 | c_prev_0 | tanh_c_0 | xh_1 | ... | out | y | flag ]
                      xh_l = [x_l; h_prev] (n_x + H), act_l: activated gates (G),
                      c_prev_l, tanh_c_l: H; out: the raw output, y: its target,
                      flag: 1 while the step carries a label no update has used

  F (float64)       [ header (F_HEADER) | input stats | input stats scratch |
                      target stats | out ]
                      header: hyper-parameters and running values (F_LR ... F_GLIMIT);
                      stats: counts, means, M2 sums (3 × n features)

  I (int64)         [ dimensions, offsets, counters | one record per layer ]
                      record of layer l at rec = I_LAYERS + I_PER_LAYER·l:
                      L_OFFW, L_OFFB, L_IN (its input width n_x), L_SLOT_* (fields of a slot)

The model keeps P and R in one buffer ``B = [P | R]`` (R starts at I[I_R_START]): one
argument fewer per call. Layer l has ``G = 4H`` gates ``i, f, g, o`` (PyTorch's order)
for the LSTM, ``G = H`` for the tanh RNN; ``n_x`` is ``n_in`` for layer 0, else ``H``.
Keyed streams keep rows shaped like ``R[:I[I_STATE_END]]`` (or just ``[h | c]``).
"""

from __future__ import annotations

import numpy as np

from ._jit import jit, jit_inline

# ------------------------------------------------------------------ indices into I
# dimensions and settings
I_NIN, I_NOUT, I_H, I_L, I_CELL, I_LOSS, I_OPT, I_K1, I_K2, I_STDX, I_STDY = range(11)
# sizes and offsets into P and R
I_NP, I_G, I_READOUT_W, I_READOUT_B, I_SLOT_SIZE, I_RING, I_STATE_END = range(11, 18)
I_SCRATCH_SLOT, I_SCRATCH_H, I_SCRATCH_C, I_W_T = range(18, 22)
I_GRAD_Z, I_GRAD_XH, I_GRAD_H, I_GRAD_C, I_GRAD_OUT = range(22, 27)
I_SLOT_OUT, I_SLOT_Y, I_SLOT_FLAG = range(27, 30)  # offsets within a slot
# offsets into F
I_FX, I_FX_SCRATCH, I_FY, I_FOUT = range(30, 34)
# model counters, the last refusal, switches
I_NSTEPS, I_NUPD, I_NSKIP, I_OPT_STEPS, I_NDROP, I_STATUS, I_ERRPOS, I_FROZEN, I_R_START = range(34, 43)
I_T, I_SINCE = 43, 44  # per-stream counters: steps taken, steps since the last update
I_LAYERS = 48  # per-layer records start here, I_PER_LAYER entries each
I_PER_LAYER = 7
L_OFFW, L_OFFB, L_IN, L_SLOT_XH, L_SLOT_ACT, L_SLOT_C_PREV, L_SLOT_TANH_C = range(I_PER_LAYER)

# ------------------------------------------------------------------ indices into F
F_LR, F_MOM, F_B1, F_B2, F_RHO, F_EPS, F_CLIP, F_L2, F_DELTA = range(9)
F_B1T, F_B2T, F_LOSS, F_GNORM, F_GLIMIT = range(9, 14)  # β1^t, β2^t, last loss, last |g|, |g|² limit
F_HEADER = 16

# ------------------------------------------------------------------ codes
CELL_LSTM, CELL_RNN = 0, 1
LOSS_SQUARED, LOSS_HUBER, LOSS_CE = 0, 1, 2
OPT_SGD, OPT_ADAM, OPT_RMSPROP = 0, 1, 2
# left in I[I_STATUS] by a call that refused its input (I[I_ERRPOS] says where)
ST_OK, ST_BAD_LENGTH, ST_NOT_FINITE, ST_BAD_LAG, ST_BAD_CLASS = 0, 1, 2, 3, 4

INPUT_LIMIT = 1e15  # |network input or target| beyond this is clipped: no finite value can overflow a step


def build(n_in: int, n_out: int, H: int, L: int, cell: int, k2: int) -> tuple[np.ndarray, int, int, int]:
    """Offsets of everything in P, R and F (the map above); returns (I, n_params, len(R), len(F))."""
    G = 4 * H if cell == CELL_LSTM else H
    I = np.zeros(I_LAYERS + I_PER_LAYER * L, dtype=np.int64)
    p = s = 0
    for l in range(L):
        rec = I_LAYERS + I_PER_LAYER * l
        n_x = n_in if l == 0 else H
        I[rec + L_IN] = n_x
        I[rec + L_OFFW] = p
        p += (n_x + H) * G
        I[rec + L_OFFB] = p
        p += G
        for field, size in ((L_SLOT_XH, n_x + H), (L_SLOT_ACT, G), (L_SLOT_C_PREV, H), (L_SLOT_TANH_C, H)):
            I[rec + field] = s
            s += size
    I[I_READOUT_W] = p
    p += H * n_out
    I[I_READOUT_B] = p
    p += n_out
    for field, size in ((I_SLOT_OUT, n_out), (I_SLOT_Y, n_out), (I_SLOT_FLAG, 1)):
        I[field] = s
        s += size
    I[I_NIN], I[I_NOUT], I[I_H], I[I_L], I[I_CELL], I[I_K2] = n_in, n_out, H, L, cell, k2
    I[I_G], I[I_NP], I[I_SLOT_SIZE] = G, p, s
    r = 2 * L * H
    I[I_RING] = r
    r += k2 * s
    I[I_STATE_END] = r
    for field, size in ((I_SCRATCH_SLOT, s), (I_SCRATCH_H, L * H), (I_SCRATCH_C, L * H), (I_GRAD_Z, G),
                        (I_GRAD_XH, max(n_in, H) + H), (I_GRAD_H, L * H), (I_GRAD_C, L * H), (I_GRAD_OUT, n_out),
                        (I_W_T, p)):
        I[field] = r
        r += size
    f = F_HEADER
    for field, size in ((I_FX, 3 * n_in), (I_FX_SCRATCH, 3 * n_in), (I_FY, 3 * n_out), (I_FOUT, n_out)):
        I[field] = f
        f += size
    return I, p, r, f


# ------------------------------------------------------------------ views
@jit_inline
def layer_params(P, I, l, base):
    """Views of layer l's (W, b) in the block of P starting at ``base`` (theta or grad)."""
    rec = I_LAYERS + I_PER_LAYER * l
    n_rows = I[rec + L_IN] + I[I_H]
    G = I[I_G]
    o = base + I[rec + L_OFFW]
    W = P[o:o + n_rows * G].reshape((n_rows, G))
    ob = base + I[rec + L_OFFB]
    return W, P[ob:ob + G]


@jit_inline
def layer_wt(R, I, l):
    """Scratch for layer l's W transposed, shape (G, in_l + H)."""
    rec = I_LAYERS + I_PER_LAYER * l
    n_rows = I[rec + L_IN] + I[I_H]
    G = I[I_G]
    o = I[I_W_T] + I[rec + L_OFFW]
    return R[o:o + n_rows * G].reshape((G, n_rows))


@jit_inline
def readout_params(P, I, base):
    """Views of the readout's (V, a) in the block of P starting at ``base``."""
    H, n_out = I[I_H], I[I_NOUT]
    o = base + I[I_READOUT_W]
    V = P[o:o + H * n_out].reshape((H, n_out))
    oa = base + I[I_READOUT_B]
    return V, P[oa:oa + n_out]


@jit_inline
def slot_views(R, I, l, slot_base):
    """Layer l's fields (xh, act, c_prev, tanh_c) of the slot at R[slot_base:]."""
    rec = I_LAYERS + I_PER_LAYER * l
    H, G = I[I_H], I[I_G]
    n_xh = I[rec + L_IN] + H
    o = slot_base + I[rec + L_SLOT_XH]
    xh = R[o:o + n_xh]
    o = slot_base + I[rec + L_SLOT_ACT]
    act = R[o:o + G]
    o = slot_base + I[rec + L_SLOT_C_PREV]
    cp = R[o:o + H]
    o = slot_base + I[rec + L_SLOT_TANH_C]
    tc = R[o:o + H]
    return xh, act, cp, tc


@jit
def slot_of(I, t):
    """Offset of the ring slot of stream step t (0-based) in R or a key's row."""
    return I[I_RING] + (t % I[I_K2]) * I[I_SLOT_SIZE]
