"""A stream's step and its truncated BPTT: advance, label, loss gradient, backward window.

A stream's state is ``[h | c | ring]`` (the start of R, or a key's row): the ring holds the
last k2 steps, each slot what the backward pass needs (inputs, gates, c_prev, tanh c, the
output and its label). The step helpers here take that state array and an offset, so the
single stream (R) and the keyed tiles (rows of S) share them.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import jit, jit_inline
from .cell import cell_backward, cell_forward
from .layout import (
    CELL_RNN,
    F_DELTA,
    F_LOSS,
    I_CELL,
    I_FX,
    I_FX_SCRATCH,
    I_G,
    I_GRAD_C,
    I_GRAD_H,
    I_GRAD_OUT,
    I_GRAD_XH,
    I_GRAD_Z,
    I_H,
    I_K1,
    I_K2,
    I_L,
    I_LAYERS,
    I_LOSS,
    I_NDROP,
    I_NIN,
    I_NOUT,
    I_NP,
    I_NSKIP,
    I_NSTEPS,
    I_NUPD,
    I_PER_LAYER,
    I_RING,
    I_SCRATCH_C,
    I_SCRATCH_H,
    I_SCRATCH_SLOT,
    I_SINCE,
    I_SLOT_FLAG,
    I_SLOT_OUT,
    I_SLOT_SIZE,
    I_SLOT_Y,
    I_T,
    L_IN,
    L_SLOT_ACT,
    L_SLOT_C_PREV,
    L_SLOT_TANH_C,
    L_SLOT_XH,
    LOSS_CE,
    LOSS_HUBER,
    layer_params,
    layer_wt,
    readout_params,
    slot_of,
    slot_views,
)
from .normalise import emit_output, take_inputs, take_target
from .optim import optimizer_step


# ----------------------------------------------------------------- the step, in parts
@jit
def open_slot(S, I, t):
    """The ring slot step t will use; a label there that no update used falls off the window."""
    slot_base = slot_of(I, t)
    flag = slot_base + I[I_SLOT_FLAG]
    if S[flag] != 0.0:
        I[I_NDROP] += 1
    S[flag] = 0.0
    return slot_base


@jit_inline
def enter_layer(S, I, l, slot_base, h_base, c_base):
    """Layer l's slot fields and state (h, c at S[h_base:], S[c_base:]); h and c go into
    the slot as xh's tail and c_prev. Returns (xh, act, c_prev, tanh_c, h, c)."""
    H = I[I_H]
    xh, act, cp, tc = slot_views(S, I, l, slot_base)
    n_x = xh.shape[0] - H
    hl = S[h_base + l * H:h_base + (l + 1) * H]
    cl = S[c_base + l * H:c_base + (l + 1) * H]
    for j in range(H):
        xh[n_x + j] = hl[j]
        cp[j] = cl[j]
    return xh, act, cp, tc, hl, cl


@jit_inline
def pass_up(S, I, l, slot_base, hl):
    """Layer l's new h is the input of layer l + 1 at this step."""
    if l + 1 < I[I_L]:
        nxh, _, _, _ = slot_views(S, I, l + 1, slot_base)
        for j in range(hl.shape[0]):
            nxh[j] = hl[j]


@jit_inline
def readout(P, I, h_top, out):
    """out = a + h_top @ V, summed over j ascending."""
    V, a = readout_params(P, I, 0)
    n_out = I[I_NOUT]
    for m in range(n_out):
        out[m] = a[m]
    for j in range(h_top.shape[0]):
        for m in range(n_out):
            out[m] += h_top[j] * V[j, m]


@jit
def forward_step(x, P, R, F, I, slot_base, h_base, c_base, fx):
    """Advance the state stored at R[h_base:], R[c_base:] by input x.

    Activations go to the ring slot at ``slot_base``. The input statistics at F[fx:] take
    x in first (so the very first value standardises to 0); a pure look-ahead passes a
    scratch copy of them. The standardised output is left in the slot's ``out`` field.
    """
    H, L, cell = I[I_H], I[I_L], I[I_CELL]
    for l in range(L):
        W, b = layer_params(P, I, l, 0)
        xh, act, cp, tc, hl, cl = enter_layer(R, I, l, slot_base, h_base, c_base)
        if l == 0:
            take_inputs(x, F, I, fx, True, xh)
        cell_forward(cell, W, b, xh, cp, act, tc, hl, cl)
        pass_up(R, I, l, slot_base, hl)
    o = slot_base + I[I_SLOT_OUT]
    readout(P, I, R[h_base + (L - 1) * H:h_base + L * H], R[o:o + I[I_NOUT]])


@jit
def count_step(I):
    """A stream took a step (its counters travel with the state: I[I_T], I[I_SINCE])."""
    I[I_T] += 1
    I[I_SINCE] += 1
    I[I_NSTEPS] += 1


@jit
def advance(x, P, R, F, I):
    """Feed x; the state moves one step. Returns the first output (target units)."""
    slot_base = open_slot(R, I, I[I_T])
    forward_step(x, P, R, F, I, slot_base, 0, I[I_L] * I[I_H], I[I_FX])
    count_step(I)
    return emit_output(R, F, I, slot_base)


@jit
def begin_lookahead(R, F, I):
    """Copy h, c and the input statistics to scratch, where look-aheads may change them."""
    L, H = I[I_L], I[I_H]
    sh, sc = I[I_SCRATCH_H], I[I_SCRATCH_C]
    for k in range(L * H):
        R[sh + k] = R[k]
        R[sc + k] = R[L * H + k]
    fx, fxs = I[I_FX], I[I_FX_SCRATCH]
    for k in range(3 * I[I_NIN]):
        F[fxs + k] = F[fx + k]


@jit
def peek(x, P, R, F, I):
    """Pure look-ahead: exactly the output advance(x) would give; only scratch changes."""
    begin_lookahead(R, F, I)
    forward_step(x, P, R, F, I, I[I_SCRATCH_SLOT], I[I_SCRATCH_H], I[I_SCRATCH_C], I[I_FX_SCRATCH])
    return emit_output(R, F, I, I[I_SCRATCH_SLOT])


# ------------------------------------------------------------------------ labels
@jit
def labelled_slot(S, I, steps, lag):
    """Mark the slot of the step ``lag`` steps back (of a stream that took ``steps``) as
    labelled; returns its offset (its target goes to the slot's ``y`` field)."""
    slot_base = slot_of(I, steps - 1 - lag)
    S[slot_base + I[I_SLOT_FLAG]] = 1.0
    return slot_base


@jit
def label(y, lag, P, R, F, I):
    """Attach target y to the step ``lag`` steps back; update when due."""
    slot_base = labelled_slot(R, I, I[I_T], lag)
    o = slot_base + I[I_SLOT_Y]
    take_target(y, F, I, R[o:o + I[I_NOUT]])
    if I[I_SINCE] >= I[I_K1]:
        update(P, R, F, I)
        I[I_SINCE] = 0


# ----------------------------------------------------------------------- losses
@jit
def loss_grad(loss, delta, S, out_at, y_at, n_out, dout):
    """Loss of one step (standardised units) and its gradient w.r.t. the outputs; the
    step's outputs and targets are S[out_at:out_at + n_out] and S[y_at:y_at + n_out] (a
    slot's fields, read at their offsets: no views to build per slot)."""
    value = 0.0
    if loss == LOSS_CE:
        zmax = S[out_at]
        for m in range(1, n_out):
            zmax = max(zmax, S[out_at + m])
        total = 0.0
        for m in range(n_out):
            dout[m] = math.exp(S[out_at + m] - zmax)
            total += dout[m]
        for m in range(n_out):
            dout[m] /= total
        target = int(S[y_at])
        value = -(S[out_at + target] - zmax - math.log(total))
        dout[target] -= 1.0
        return value
    for m in range(n_out):
        r = S[out_at + m] - S[y_at + m]
        if loss == LOSS_HUBER and abs(r) > delta:
            value += delta * (abs(r) - 0.5 * delta)
            dout[m] = delta if r > 0 else -delta
        else:
            value += 0.5 * r * r
            dout[m] = r
    return value


# ------------------------------------------------------------------ backward window
@jit_inline
def _h_of(R, I, l, slot_base, j):
    """h_j of layer l at the step of this slot, recomputed from the stored gates."""
    H = I[I_H]
    _, act, _, tc = slot_views(R, I, l, slot_base)
    if I[I_CELL] == CELL_RNN:
        return act[j]
    return act[3 * H + j] * tc[j]


@jit
def transpose_weights(P, R, I):
    """Every layer's W transposed into R's scratch (``layer_wt``): rows of WT are what
    ``backprop_input`` runs along."""
    for l in range(I[I_L]):
        W, _ = layer_params(P, I, l, 0)
        WT = layer_wt(R, I, l)
        for k in range(W.shape[0]):
            for r in range(W.shape[1]):
                WT[r, k] = W[k, r]


@jit
def backward_window(P, R, F, I):
    """Gradient of the mean loss of the labelled steps in the window into P's grad block.

    The window is the last min(t, k2) steps; the state entering it is a constant.
    Uses the activations stored when each step was taken. Returns the loss, or -1 if no
    step in the window carries a label.
    """
    n_par, H, L, cell = I[I_NP], I[I_H], I[I_L], I[I_CELL]
    n_out, K2, t = I[I_NOUT], I[I_K2], I[I_T]
    slot_size, ring = I[I_SLOT_SIZE], I[I_RING]
    window = min(t, K2)
    n_lab = 0
    for back in range(window):
        if R[ring + ((t - 1 - back) % K2) * slot_size + I[I_SLOT_FLAG]] != 0.0:
            n_lab += 1
    if n_lab == 0:
        return -1.0
    for k in range(n_par):
        P[n_par + k] = 0.0
    dh_all = R[I[I_GRAD_H]:I[I_GRAD_H] + L * H]
    dc_all = R[I[I_GRAD_C]:I[I_GRAD_C] + L * H]
    dh_all[:] = 0.0
    dc_all[:] = 0.0
    DH = dh_all.reshape((1, L * H))  # a tile of one stream, for gate_grads
    DC = dc_all.reshape((1, L * H))
    dout = R[I[I_GRAD_OUT]:I[I_GRAD_OUT] + n_out]
    DZ = R[I[I_GRAD_Z]:I[I_GRAD_Z] + I[I_G]].reshape((1, I[I_G]))
    D = np.empty(H, np.float64)
    S = R.reshape((1, R.shape[0]))  # the stream as a tile of one row, its slot in SL
    row0 = np.zeros(1, np.int64)
    SL = np.empty(1, np.int64)
    transpose_weights(P, R, I)
    V, _ = readout_params(P, I, 0)
    dV, da = readout_params(P, I, n_par)
    inv_n = 1.0 / n_lab
    total = 0.0
    for back in range(window):
        slot_base = ring + ((t - 1 - back) % K2) * slot_size
        flag = slot_base + I[I_SLOT_FLAG]
        if R[flag] != 0.0:
            R[flag] = 0.0
            total += loss_grad(I[I_LOSS], F[F_DELTA], R, slot_base + I[I_SLOT_OUT], slot_base + I[I_SLOT_Y], n_out,
                               dout)
            # readout: out = a + h_top @ V
            dh_top = dh_all[(L - 1) * H:L * H]
            for m in range(n_out):
                dout[m] *= inv_n
                da[m] += dout[m]
            for j in range(H):
                hj = _h_of(R, I, L - 1, slot_base, j)
                s = 0.0
                for m in range(n_out):
                    dV[j, m] += hj * dout[m]
                    s += V[j, m] * dout[m]
                dh_top[j] += s
        for l in range(L - 1, -1, -1):
            WT = layer_wt(R, I, l)
            dW, db = layer_params(P, I, l, n_par)
            rec = I_LAYERS + I_PER_LAYER * l
            n_xh = I[rec + L_IN] + H
            xh = R[slot_base + I[rec + L_SLOT_XH]:slot_base + I[rec + L_SLOT_XH] + n_xh]
            dh = dh_all[l * H:(l + 1) * H]
            dxh = R[I[I_GRAD_XH]:I[I_GRAD_XH] + n_xh]
            SL[0] = slot_base
            cell_backward(cell, WT, S, row0, SL, I[rec + L_SLOT_ACT], I[rec + L_SLOT_C_PREV], I[rec + L_SLOT_TANH_C],
                          xh, DH, DC, DZ, l * H, D, dW, db, dxh)
            n_x = n_xh - H
            for j in range(H):
                dh[j] = dxh[n_x + j]  # flows to the previous step of this layer
            if l > 0:
                below = dh_all[(l - 1) * H:l * H]
                for j in range(H):
                    below[j] += dxh[j]  # flows down to layer l-1 at this step
    return total * inv_n


@jit
def update(P, R, F, I):
    """Backward through the window, then one optimizer step (skipped when not finite)."""
    value = backward_window(P, R, F, I)
    if value < 0.0:
        return
    F[F_LOSS] = value
    if not np.isfinite(value):
        I[I_NSKIP] += 1
        return
    if optimizer_step(P, F, I):
        I[I_NUPD] += 1
