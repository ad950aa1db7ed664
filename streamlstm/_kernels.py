"""Numba kernels: one LSTM (or tanh RNN) step forward and backward, TBPTT, optimizers.

Everything a compiled call needs lives in four flat arrays, so that a call costs few
argument checks on the Python side:

* ``P`` (model dtype): ``[theta | grad | moment1 | moment2]``, each ``n_params`` long.
* ``R`` (model dtype): the stream: ``[h | c | ring of the last k2 steps | scratch]``.
* ``F`` (float64): hyper-parameters, normaliser statistics, input/output slots.
* ``I`` (int64): dimensions, offsets into the three others, counters.

Layer ``l`` has one fused weight matrix ``W`` of shape ``(in_l + H, G)`` applied to
``xh = [x; h_prev]`` as ``z = b + xh @ W`` (``G = 4H`` gates ``i, f, g, o`` in PyTorch's
order for the LSTM, ``G = H`` for the RNN). Storing it input-major makes the forward and
the weight-gradient loops run along contiguous rows of ``G`` values, which LLVM vectorises
without reordering any sum, so every path through the kernels rounds the same way.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir as llvm_ir
from numba import njit, types
from numba.extending import intrinsic

# ---------------------------------------------------------------------------- layout
# Indices into I. Per-layer records start at I_LAYERS, I_PER_LAYER entries each.
I_NIN, I_NOUT, I_H, I_L, I_CELL, I_LOSS, I_OPT, I_K1, I_K2, I_STDX, I_STDY = range(11)
I_NP, I_G, I_OFFV, I_OFFA, I_SLOT, I_RING, I_SCR, I_SH, I_SC = range(11, 20)
I_DZ, I_DXH, I_DH, I_DC, I_DOUT, I_SOUT, I_SY, I_SFLAG = range(20, 28)
I_FX, I_FY, I_FOUT, I_FLAB, I_STATE_END = range(28, 33)
I_NSTEPS, I_NUPD, I_NSKIP, I_ADAMT, I_STATUS, I_ERRPOS, I_NDROP = range(33, 40)
I_T, I_SINCE = 40, 41  # per-stream counters: travel with the state
I_FXS = 42  # scratch copy of the input statistics, for pure look-aheads
I_WT = 43  # scratch: every layer's W transposed, (G, in_l + H), for the backward pass
I_FROZEN = 44  # 1: the running statistics no longer move (serving a trained model)
I_RBASE = 45  # where R starts in the model's one buffer B = [P | R] (one argument fewer per call)
I_LAYERS = 48
I_PER_LAYER = 7
L_OFFW, L_OFFB, L_IN, L_SXH, L_SACT, L_SCP, L_STC = range(I_PER_LAYER)

# Indices into F (hyper-parameters and running values).
F_LR, F_MOM, F_B1, F_B2, F_RHO, F_EPS, F_CLIP, F_L2, F_DELTA = range(9)
F_B1T, F_B2T, F_LOSS, F_GNORM, F_GLIMIT = range(9, 14)
INPUT_LIMIT = 1e15  # |network input or target| beyond this is clipped: no finite value can overflow a step
F_HEADER = 16

CELL_LSTM, CELL_RNN = 0, 1
LOSS_SQUARED, LOSS_HUBER, LOSS_CE = 0, 1, 2
OPT_SGD, OPT_ADAM, OPT_RMSPROP = 0, 1, 2

# Status codes left in I[I_STATUS] by a call that refused its input.
ST_OK, ST_BAD_LENGTH, ST_NOT_FINITE, ST_BAD_LAG, ST_BAD_CLASS = 0, 1, 2, 3, 4

_jit = njit(cache=True, error_model="numpy", nogil=True)


# ------------------------------------------------------------------- nonlinearities
# There is no SVML here: math.exp / math.tanh are scalar libm calls (about 5 and 10 ns).
# exp_clamped is plain arithmetic that LLVM inlines and vectorises, accurate to 1 ulp.
_LOG2E = 1.4426950408889634
_LN2_HI = 0.6931471803691238
_LN2_LO = 1.9082149292705877e-10


@intrinsic
def _pow2(typingctx, n):
    """2.0**n for an int64 n in [-1022, 1023], exactly: the bits (n + 1023) << 52."""
    if not isinstance(n, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        i64 = llvm_ir.IntType(64)
        v = context.cast(builder, args[0], signature.args[0], types.int64)
        bits = builder.shl(builder.add(v, llvm_ir.Constant(i64, 1023)), llvm_ir.Constant(i64, 52))
        return builder.bitcast(bits, llvm_ir.DoubleType())

    return types.float64(n), codegen


@_jit
def exp_clamped(x):
    """exp(x) for x clamped to [-44, 44] (enough for σ and tanh in float64), 1 ulp.

    exp(x) = 2^n · exp(r), n = round(x / ln 2), |r| <= ln(2)/2; exp(r) by its Taylor series
    to degree 13 (truncation < 1e-17); 2^n (|n| <= 64) exactly from its bit pattern, so the
    scaling p · 2^n is exact (the same bits as p / 2^-n) and vectorises without a division.
    """
    x = min(max(x, -44.0), 44.0)
    n = np.floor(x * _LOG2E + 0.5)
    r = (x - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    # n is NaN only when x is (then p is NaN too); keep the integer conversion defined
    return p * _pow2(np.int64(n) if n == n else np.int64(0))


@_jit
def sigmoid(z):
    return 1.0 / (1.0 + exp_clamped(-z))


@_jit
def tanh(z):
    return 1.0 - 2.0 / (1.0 + exp_clamped(2.0 * z))


# ------------------------------------------------------------------------ one cell
@_jit
def cell_forward(cell, W, b, xh, c_prev, act, tc, h, c):
    """One step of one layer. ``xh`` = [x; h_prev] is already filled in.

    LSTM:  z = b + xh @ W;  i, f, o = σ(z_i, z_f, z_o);  g = tanh(z_g)
           c = f * c_prev + i * g;  h = o * tanh(c)
    RNN:   h = tanh(b + xh @ W)
    ``act`` receives the activated gates (needed by the backward pass), ``tc`` = tanh(c).
    """
    preactivation(W, b, xh, act)
    cell_activate(cell, c_prev, act, tc, h, c)


@_jit
def preactivation(W, b, xh, z):
    """z = b + xh @ W, summed over k in ascending order (batched callers keep that order).

    Four rows of W per pass over z: the parenthesised sum is the same sequence of roundings
    as four single passes (so every path gives the same bits), with a quarter of the loads
    and stores of z.
    """
    G = z.shape[0]
    n = xh.shape[0]
    for r in range(G):
        z[r] = b[r]
    k = 0
    while k + 4 <= n:
        x0, x1, x2, x3 = xh[k], xh[k + 1], xh[k + 2], xh[k + 3]
        w0, w1, w2, w3 = W[k], W[k + 1], W[k + 2], W[k + 3]
        for r in range(G):
            z[r] = (((z[r] + x0 * w0[r]) + x1 * w1[r]) + x2 * w2[r]) + x3 * w3[r]
        k += 4
    while k < n:
        xk = xh[k]
        wk = W[k]
        for r in range(G):
            z[r] += xk * wk[r]
        k += 1


@_jit
def cell_activate(cell, c_prev, act, tc, h, c):
    """Turn the pre-activations in ``act`` into gates, then the new c and h."""
    H = h.shape[0]
    if cell == CELL_RNN:
        for j in range(H):
            act[j] = tanh(act[j])
            h[j] = act[j]
        return
    for j in range(H):
        i = sigmoid(act[j])
        f = sigmoid(act[H + j])
        g = tanh(act[2 * H + j])
        o = sigmoid(act[3 * H + j])
        act[j], act[H + j], act[2 * H + j], act[3 * H + j] = i, f, g, o
        c[j] = f * c_prev[j] + i * g
        tc[j] = tanh(c[j])
        h[j] = o * tc[j]


@_jit
def cell_backward(cell, WT, xh, c_prev, act, tc, dh, dc, dz, dW, db, dxh):
    """Backward through one step of one layer.

    In: dh = ∂L/∂h (this step), dc = ∂L/∂c (from the next step; LSTM only).
    Out: dW, db accumulated; dxh = ∂L/∂[x; h_prev]; dc becomes ∂L/∂c_prev.
         do = dh·tanh(c);  dc += dh·o·(1 - tanh²c)
         di = dc·g;  df = dc·c_prev;  dg = dc·i;  dc_prev = dc·f
         dz = [di·i(1-i), df·f(1-f), dg(1-g²), do·o(1-o)]
    """
    H = dh.shape[0]
    if cell == CELL_RNN:
        for j in range(H):
            dz[j] = dh[j] * (1.0 - act[j] * act[j])
    else:
        for j in range(H):
            i, f, g, o = act[j], act[H + j], act[2 * H + j], act[3 * H + j]
            do = dh[j] * tc[j]
            dcj = dc[j] + dh[j] * o * (1.0 - tc[j] * tc[j])
            dz[j] = dcj * g * i * (1.0 - i)
            dz[H + j] = dcj * c_prev[j] * f * (1.0 - f)
            dz[2 * H + j] = dcj * i * (1.0 - g * g)
            dz[3 * H + j] = do * o * (1.0 - o)
            dc[j] = dcj * f
    G = dz.shape[0]
    for r in range(G):
        db[r] += dz[r]
    for k in range(xh.shape[0]):
        xk = xh[k]
        for r in range(G):
            dW[k, r] += xk * dz[r]
    backprop_input(WT, dz, dxh)


@_jit
def backprop_input(WT, dz, dxh):
    """dxh = W @ dz from W's transpose: rows of WT are contiguous, so the sums run along
    dxh as vector updates, four gate rows per pass, in ascending order (the same roundings
    on every path; no reassociation needed to vectorise)."""
    G = dz.shape[0]
    for k in range(dxh.shape[0]):
        dxh[k] = 0
    r = 0
    while r + 4 <= G:
        d0, d1, d2, d3 = dz[r], dz[r + 1], dz[r + 2], dz[r + 3]
        w0, w1, w2, w3 = WT[r], WT[r + 1], WT[r + 2], WT[r + 3]
        for k in range(dxh.shape[0]):
            dxh[k] = (((dxh[k] + d0 * w0[k]) + d1 * w1[k]) + d2 * w2[k]) + d3 * w3[k]
        r += 4
    while r < G:
        d0 = dz[r]
        w0 = WT[r]
        for k in range(dxh.shape[0]):
            dxh[k] += d0 * w0[k]
        r += 1


# ---------------------------------------------------------------------- views
@_jit
def layer_params(P, I, l, base):
    """Views of layer l's (W, b) in the block of P starting at ``base`` (theta or grad)."""
    rec = I_LAYERS + I_PER_LAYER * l
    n_rows = I[rec + L_IN] + I[I_H]
    G = I[I_G]
    o = base + I[rec + L_OFFW]
    W = P[o:o + n_rows * G].reshape((n_rows, G))
    ob = base + I[rec + L_OFFB]
    return W, P[ob:ob + G]


@_jit
def layer_wt(R, I, l):
    """Scratch for layer l's W transposed, shape (G, in_l + H)."""
    rec = I_LAYERS + I_PER_LAYER * l
    n_rows = I[rec + L_IN] + I[I_H]
    G = I[I_G]
    o = I[I_WT] + I[rec + L_OFFW]
    return R[o:o + n_rows * G].reshape((G, n_rows))


@_jit
def readout_params(P, I, base):
    H, n_out = I[I_H], I[I_NOUT]
    o = base + I[I_OFFV]
    V = P[o:o + H * n_out].reshape((H, n_out))
    oa = base + I[I_OFFA]
    return V, P[oa:oa + n_out]


@_jit
def slot_views(R, I, l, slot_base):
    rec = I_LAYERS + I_PER_LAYER * l
    H, G = I[I_H], I[I_G]
    n_xh = I[rec + L_IN] + H
    o = slot_base + I[rec + L_SXH]
    xh = R[o:o + n_xh]
    o = slot_base + I[rec + L_SACT]
    act = R[o:o + G]
    o = slot_base + I[rec + L_SCP]
    cp = R[o:o + H]
    o = slot_base + I[rec + L_STC]
    tc = R[o:o + H]
    return xh, act, cp, tc


# ---------------------------------------------------------------- normalisation
@_jit
def scale_of(F, base, n_feat, j):
    """Running standard deviation of feature j, or 1 while it is not yet defined.

    Statistics block at F[base:]: counts (n_feat), means (n_feat), M2 sums (n_feat).
    """
    n = F[base + j]
    if n < 2.0:
        return 1.0
    var = F[base + 2 * n_feat + j] / n
    if var > 0.0 and var < np.inf:
        return math.sqrt(var)
    return 1.0


@_jit
def welford(F, base, n_feat, v, j):
    """Welford's update of feature j's count, mean and M2 with value v.

    When the mean or M2 would overflow, one side of the update is absurd (|v| or the
    mean beyond about 1e154): the statistics keep the side of smaller magnitude. A value
    far above the mean is left out (it is still fed to the network, clipped); a mean far
    above the value (an absurd first reading) is dropped and the statistics restart at v.
    Either way they stay finite and go on adapting after one absurd reading.
    """
    n = F[base + j] + 1.0
    mean = F[base + n_feat + j]
    delta = v - mean
    new_mean = mean + delta / n
    new_m2 = F[base + 2 * n_feat + j] + delta * (v - new_mean)
    if np.isfinite(new_mean) and np.isfinite(new_m2):
        F[base + j] = n
        F[base + n_feat + j] = new_mean
        F[base + 2 * n_feat + j] = new_m2
    elif abs(v) < abs(mean):
        F[base + j] = 1.0
        F[base + n_feat + j] = v
        F[base + 2 * n_feat + j] = 0.0


@_jit
def standardise(F, base, n_feat, v, j):
    return (v - F[base + n_feat + j]) / scale_of(F, base, n_feat, j)


@_jit
def check_vector(v, n, I):
    """v must hold n finite numbers; else I says what was wrong and where."""
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


@_jit
def check_input(x, I):
    return check_vector(x, I[I_NIN], I)


# ----------------------------------------------------------------- forward step
@_jit
def take_inputs(x, F, I, fx, add, xs):
    """The network's inputs for raw input x into xs[:n_in]: x first enters the input
    statistics at F[fx:] (when standardising and ``add``), then each value is
    standardised and clipped to ±INPUT_LIMIT. Shared by every forward path."""
    n_in = I[I_NIN]
    if I[I_STDX] and add and not I[I_FROZEN]:
        for k in range(n_in):
            welford(F, fx, n_in, x[k], k)
    for k in range(n_in):
        v = standardise(F, fx, n_in, x[k], k) if I[I_STDX] else x[k]
        xs[k] = min(max(v, -INPUT_LIMIT), INPUT_LIMIT)


@_jit
def take_target(y, F, I, ys):
    """The network's target for raw target y into ys: a class index for cross-entropy;
    else y first enters the target statistics (when standardising), then each value is
    standardised and clipped to ±INPUT_LIMIT. Shared by every labelling path."""
    n_out = I[I_NOUT]
    if I[I_LOSS] == LOSS_CE:
        ys[0] = y[0]
        return
    fy = I[I_FY]
    for m in range(n_out):
        if I[I_STDY]:
            if not I[I_FROZEN]:
                welford(F, fy, n_out, y[m], m)
            v = standardise(F, fy, n_out, y[m], m)
        else:
            v = y[m]
        ys[m] = min(max(v, -INPUT_LIMIT), INPUT_LIMIT)


@_jit
def forward_step(x, P, R, F, I, slot_base, h_base, c_base, fx):
    """Advance the state stored at R[h_base:], R[c_base:] by input x.

    Activations go to the ring slot at ``slot_base``. The input statistics at F[fx:] take
    x in first (so the very first value standardises to 0); a pure look-ahead passes a
    scratch copy of them. The standardised output is left in the slot's ``out`` field.
    """
    H, L, cell = I[I_H], I[I_L], I[I_CELL]
    for l in range(L):
        W, b = layer_params(P, I, l, 0)
        xh, act, cp, tc = slot_views(R, I, l, slot_base)
        n_x = xh.shape[0] - H
        if l == 0:
            take_inputs(x, F, I, fx, True, xh)
        hl = R[h_base + l * H:h_base + (l + 1) * H]
        cl = R[c_base + l * H:c_base + (l + 1) * H]
        for j in range(H):
            xh[n_x + j] = hl[j]
            cp[j] = cl[j]
        cell_forward(cell, W, b, xh, cp, act, tc, hl, cl)
        if l + 1 < L:
            nxh, _, _, _ = slot_views(R, I, l + 1, slot_base)
            for j in range(H):
                nxh[j] = hl[j]
    V, a = readout_params(P, I, 0)
    n_out = I[I_NOUT]
    out = R[slot_base + I[I_SOUT]:slot_base + I[I_SOUT] + n_out]
    h_top = R[h_base + (L - 1) * H:h_base + L * H]
    for m in range(n_out):
        out[m] = a[m]
    for j in range(H):
        for m in range(n_out):
            out[m] += h_top[j] * V[j, m]


@_jit
def emit_output(R, F, I, slot_base):
    """Copy the slot's output into F's output field in target units; return the first."""
    n_out = I[I_NOUT]
    src = slot_base + I[I_SOUT]
    dst = I[I_FOUT]
    if I[I_LOSS] == LOSS_CE:
        zmax = R[src]
        for m in range(1, n_out):
            zmax = max(zmax, R[src + m])
        total = 0.0
        for m in range(n_out):
            F[dst + m] = math.exp(R[src + m] - zmax)
            total += F[dst + m]
        for m in range(n_out):
            F[dst + m] /= total
    else:
        fy = I[I_FY]
        for m in range(n_out):
            if I[I_STDY]:
                F[dst + m] = F[fy + n_out + m] + scale_of(F, fy, n_out, m) * R[src + m]
            else:
                F[dst + m] = R[src + m]
    return F[dst]


@_jit
def advance(x, P, R, F, I):
    """Feed x; the state moves one step. Returns the first output (target units)."""
    K2 = I[I_K2]
    t = I[I_T]
    slot_base = I[I_RING] + (t % K2) * I[I_SLOT]
    flag = slot_base + I[I_SFLAG]
    if R[flag] != 0.0:  # a label that no update used falls off the window
        I[I_NDROP] += 1
    R[flag] = 0.0
    forward_step(x, P, R, F, I, slot_base, 0, I[I_L] * I[I_H], I[I_FX])
    I[I_T] = t + 1
    I[I_SINCE] += 1
    I[I_NSTEPS] += 1
    return emit_output(R, F, I, slot_base)


@_jit
def begin_lookahead(R, F, I):
    """Copy h, c and the input statistics to scratch, where look-aheads may change them."""
    L, H = I[I_L], I[I_H]
    sh, sc = I[I_SH], I[I_SC]
    for k in range(L * H):
        R[sh + k] = R[k]
        R[sc + k] = R[L * H + k]
    fx, fxs = I[I_FX], I[I_FXS]
    for k in range(3 * I[I_NIN]):
        F[fxs + k] = F[fx + k]


@_jit
def peek(x, P, R, F, I):
    """Pure look-ahead: exactly the output advance(x) would give; only scratch changes."""
    begin_lookahead(R, F, I)
    forward_step(x, P, R, F, I, I[I_SCR], I[I_SH], I[I_SC], I[I_FXS])
    return emit_output(R, F, I, I[I_SCR])


# ------------------------------------------------------------------------ labels
@_jit
def check_lag(lag, I):
    """A label may go to any of the last min(t, k2) steps."""
    if lag < 0 or lag >= I[I_K2] or lag >= I[I_T]:
        I[I_STATUS] = ST_BAD_LAG
        I[I_ERRPOS] = lag
        return False
    return True


@_jit
def check_target(y, I):
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


@_jit
def label(y, lag, P, R, F, I):
    """Attach target y to the step ``lag`` steps back; update when due."""
    n_out = I[I_NOUT]
    slot_base = I[I_RING] + ((I[I_T] - 1 - lag) % I[I_K2]) * I[I_SLOT]
    ys = R[slot_base + I[I_SY]:slot_base + I[I_SY] + n_out]
    take_target(y, F, I, ys)
    R[slot_base + I[I_SFLAG]] = 1.0
    if I[I_SINCE] >= I[I_K1]:
        update(P, R, F, I)
        I[I_SINCE] = 0


# ----------------------------------------------------------------------- losses
@_jit
def loss_grad(loss, delta, out, y, dout):
    """Loss of one step (standardised units) and its gradient w.r.t. the outputs."""
    n_out = out.shape[0]
    value = 0.0
    if loss == LOSS_CE:
        zmax = out[0]
        for m in range(1, n_out):
            zmax = max(zmax, out[m])
        total = 0.0
        for m in range(n_out):
            dout[m] = math.exp(out[m] - zmax)
            total += dout[m]
        for m in range(n_out):
            dout[m] /= total
        target = int(y[0])
        value = -(out[target] - zmax - math.log(total))
        dout[target] -= 1.0
        return value
    for m in range(n_out):
        r = out[m] - y[m]
        if loss == LOSS_HUBER and abs(r) > delta:
            value += delta * (abs(r) - 0.5 * delta)
            dout[m] = delta if r > 0 else -delta
        else:
            value += 0.5 * r * r
            dout[m] = r
    return value


# --------------------------------------------------------------------- TBPTT
@_jit
def _h_of(R, I, l, slot_base, j):
    """h_j of layer l at the step of this slot, recomputed from the stored gates."""
    H = I[I_H]
    _, act, _, tc = slot_views(R, I, l, slot_base)
    if I[I_CELL] == CELL_RNN:
        return act[j]
    return act[3 * H + j] * tc[j]


@_jit
def backward_window(P, R, F, I):
    """Gradient of the mean loss of the labelled steps in the window into P's grad block.

    The window is the last min(t, k2) steps; the state entering it is a constant.
    Uses the activations stored when each step was taken. Returns the loss, or -1 if no
    step in the window carries a label.
    """
    n_par, H, L, cell = I[I_NP], I[I_H], I[I_L], I[I_CELL]
    n_out, K2, t = I[I_NOUT], I[I_K2], I[I_T]
    slot_size, ring = I[I_SLOT], I[I_RING]
    window = min(t, K2)
    n_lab = 0
    for back in range(window):
        if R[ring + ((t - 1 - back) % K2) * slot_size + I[I_SFLAG]] != 0.0:
            n_lab += 1
    if n_lab == 0:
        return -1.0
    for k in range(n_par):
        P[n_par + k] = 0.0
    dh_all = R[I[I_DH]:I[I_DH] + L * H]
    dc_all = R[I[I_DC]:I[I_DC] + L * H]
    dh_all[:] = 0.0
    dc_all[:] = 0.0
    dout = R[I[I_DOUT]:I[I_DOUT] + n_out]
    dz = R[I[I_DZ]:I[I_DZ] + I[I_G]]
    for l in range(L):
        W, _ = layer_params(P, I, l, 0)
        WT = layer_wt(R, I, l)
        for k in range(W.shape[0]):
            for r in range(W.shape[1]):
                WT[r, k] = W[k, r]
    V, _ = readout_params(P, I, 0)
    dV, da = readout_params(P, I, n_par)
    inv_n = 1.0 / n_lab
    total = 0.0
    for back in range(window):
        slot_base = ring + ((t - 1 - back) % K2) * slot_size
        flag = slot_base + I[I_SFLAG]
        if R[flag] != 0.0:
            R[flag] = 0.0
            out = R[slot_base + I[I_SOUT]:slot_base + I[I_SOUT] + n_out]
            y = R[slot_base + I[I_SY]:slot_base + I[I_SY] + n_out]
            total += loss_grad(I[I_LOSS], F[F_DELTA], out, y, dout)
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
            xh, act, cp, tc = slot_views(R, I, l, slot_base)
            dh = dh_all[l * H:(l + 1) * H]
            dc = dc_all[l * H:(l + 1) * H]
            dxh = R[I[I_DXH]:I[I_DXH] + xh.shape[0]]
            cell_backward(cell, WT, xh, cp, act, tc, dh, dc, dz, dW, db, dxh)
            n_x = xh.shape[0] - H
            for j in range(H):
                dh[j] = dxh[n_x + j]  # flows to the previous step of this layer
            if l > 0:
                below = dh_all[(l - 1) * H:l * H]
                for j in range(H):
                    below[j] += dxh[j]  # flows down to layer l-1 at this step
    return total * inv_n


@_jit
def penalised_sum_squares(grad, theta, l2):
    """Σ (grad + l2·theta)², as 16 column sums then their total: a fixed order of roundings
    that still vectorises (one long serial sum would be latency-bound)."""
    acc = np.zeros(16)
    n = grad.shape[0]
    m = n // 16
    for i in range(m):
        for j in range(16):
            g = grad[i * 16 + j] + l2 * theta[i * 16 + j]
            acc[j] += g * g
    sq = 0.0
    for k in range(m * 16, n):
        g = grad[k] + l2 * theta[k]
        sq += g * g
    for j in range(16):
        sq += acc[j]
    return sq


@_jit
def optimizer_step(P, F, I):
    """Apply one update from the grad block. Skips (and counts) a non-finite gradient."""
    n = I[I_NP]
    l2 = F[F_L2]
    sq = penalised_sum_squares(P[n:2 * n], P[:n], l2)
    if not sq <= F[F_GLIMIT]:  # also catches NaN; the limit keeps moments finite in the dtype
        I[I_NSKIP] += 1
        F[F_GNORM] = sq
        return False
    norm = math.sqrt(sq)
    F[F_GNORM] = norm
    scale = 1.0
    if F[F_CLIP] > 0.0 and norm > F[F_CLIP]:
        scale = F[F_CLIP] / norm
    lr, eps = F[F_LR], F[F_EPS]
    opt = I[I_OPT]
    # separate views (not offsets into P) let LLVM prove the blocks apart and vectorise
    theta, grad, m1, m2 = P[:n], P[n:2 * n], P[2 * n:3 * n], P[3 * n:4 * n]
    if opt == OPT_ADAM:
        b1, b2 = F[F_B1], F[F_B2]
        F[F_B1T] *= b1
        F[F_B2T] *= b2
        step = lr / (1.0 - F[F_B1T])
        corr2 = 1.0 / (1.0 - F[F_B2T])
        for k in range(n):
            g = (grad[k] + l2 * theta[k]) * scale
            m = b1 * m1[k] + (1.0 - b1) * g
            v = b2 * m2[k] + (1.0 - b2) * g * g
            m1[k] = m
            m2[k] = v
            theta[k] -= step * m / (math.sqrt(v * corr2) + eps)
    elif opt == OPT_RMSPROP:
        rho = F[F_RHO]
        for k in range(n):
            g = (grad[k] + l2 * theta[k]) * scale
            v = rho * m2[k] + (1.0 - rho) * g * g
            m2[k] = v
            theta[k] -= lr * g / (math.sqrt(v) + eps)
    else:
        mom = F[F_MOM]
        for k in range(n):
            g = (grad[k] + l2 * theta[k]) * scale
            m = mom * m1[k] + g
            m1[k] = m
            theta[k] -= lr * m
    I[I_ADAMT] += 1
    return True


@_jit
def update(P, R, F, I):
    value = backward_window(P, R, F, I)
    if value < 0.0:
        return
    F[F_LOSS] = value
    if not np.isfinite(value):
        I[I_NSKIP] += 1
        return
    if optimizer_step(P, F, I):
        I[I_NUPD] += 1


# ------------------------------------------------------------ entry points
# Each takes the model's buffer B = [P | R] (split at I[I_RBASE]) and returns the first
# output in target units, or NaN when the input was refused (I[I_STATUS] then says why
# and nothing was changed).
@_jit
def k_predict(x, B, F, I):
    P, R = B[:I[I_RBASE]], B[I[I_RBASE]:]
    if not check_input(x, I):
        return np.nan
    return peek(x, P, R, F, I)


@_jit
def k_advance(x, B, F, I):
    P, R = B[:I[I_RBASE]], B[I[I_RBASE]:]
    if not check_input(x, I):
        return np.nan
    return advance(x, P, R, F, I)


@_jit
def k_label(y, lag, B, F, I):
    P, R = B[:I[I_RBASE]], B[I[I_RBASE]:]
    if not (check_lag(lag, I) and check_target(y, I)):
        return False
    label(y, lag, P, R, F, I)
    return True


@_jit
def k_learn_one(x, y, B, F, I):
    P, R = B[:I[I_RBASE]], B[I[I_RBASE]:]
    if not check_input(x, I):
        return np.nan
    if not check_target(y, I):
        return np.nan
    out = advance(x, P, R, F, I)
    label(y, 0, P, R, F, I)
    return out


@_jit
def k_learn_many(X, Y, mask, out, B, F, I):
    """Advance through the rows of X, labelling row t with Y[t] where mask[t].

    Stops at the first refused row and returns its index (I says why); returns the
    number of rows on success. out[t] receives the prequential output of row t.
    """
    P, R = B[:I[I_RBASE]], B[I[I_RBASE]:]
    n_out = I[I_NOUT]
    for t in range(X.shape[0]):
        x = X[t]
        if not check_input(x, I):
            return t
        if mask[t] and not check_target(Y[t], I):
            return t
        advance(x, P, R, F, I)
        for m in range(n_out):
            out[t, m] = F[I[I_FOUT] + m]
        if mask[t]:
            label(Y[t], 0, P, R, F, I)
    I[I_STATUS] = ST_OK
    return X.shape[0]


@_jit
def k_predict_many(X, out, B, F, I):
    """Pure: roll a scratch copy of the state through the rows of X."""
    P, R = B[:I[I_RBASE]], B[I[I_RBASE]:]
    sh, sc = I[I_SH], I[I_SC]
    n_out = I[I_NOUT]
    for t in range(X.shape[0]):
        if not check_input(X[t], I):
            return t
    begin_lookahead(R, F, I)
    for t in range(X.shape[0]):
        forward_step(X[t], P, R, F, I, I[I_SCR], sh, sc, I[I_FXS])
        emit_output(R, F, I, I[I_SCR])
        for m in range(n_out):
            out[t, m] = F[I[I_FOUT] + m]
    return X.shape[0]
