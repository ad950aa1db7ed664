"""Kernels for many streams (keys) sharing one set of weights.

The per-key states live in a 2-D array ``S`` (one row per key, model dtype):

* inference rows are ``[h | c]`` (``2·L·H`` values; ``L·H`` for the RNN cell), the first
  ``2·L·H`` values of the core's stream buffer ``R``;
* learning rows are the core's whole stream state ``R[:I_STATE_END]``
  (``[h | c | ring of the last k2 steps]``), with the per-stream counters
  ``(t, since)`` in a matching int64 array ``C``.

A micro-batch of events ``(rows[e], X[e])`` is processed in *waves*: wave ``w`` holds the
``w``-th event of every key in the batch, in arrival order, so the events of one key keep
their order. Within a wave, the gate pre-activations of a tile of keys are one
matrix-matrix product (``preactivation_tile``) whose every element is summed exactly like
the core's ``preactivation``, so each key's numbers are bit-identical to single-event
processing. Everything else is the single stream's own code: ``open_slot``,
``enter_layer``, ``pass_up``, ``readout`` and ``labelled_slot`` for the step's
bookkeeping, ``cell_activate`` for the cell, ``emit_output`` for the outputs,
``take_inputs``/``take_target`` for the normalisers, ``backward_window`` for a key's TBPTT
gradient and ``optimizer_step`` for the update.

Shared running statistics (input and target normalisers) evolve in arrival order, as
they would event by event: a first sequential pass over the batch computes every
event's standardised input (and target, and a copy of the target statistics its output
is de-standardised with) before the waves run.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ._jit import jit, jit_parallel
from .cell import (
    backprop_input_tile,
    cell_activate,
    gate_grads,
    preactivation_tile,
    weight_grad_tile,
)
from .checks import check_input, check_target
from .hashtable import table_find
from .layout import (
    CELL_LSTM,
    CELL_RNN,
    F_DELTA,
    F_LOSS,
    I_CELL,
    I_FOUT,
    I_FX,
    I_FY,
    I_G,
    I_H,
    I_K1,
    I_K2,
    I_L,
    I_LAYERS,
    I_LOSS,
    I_NIN,
    I_NOUT,
    I_NP,
    I_NSKIP,
    I_NSTEPS,
    I_NUPD,
    I_PER_LAYER,
    I_RING,
    I_SINCE,
    I_SLOT_FLAG,
    I_SLOT_OUT,
    I_SLOT_SIZE,
    I_SLOT_Y,
    I_STATE_END,
    I_STDY,
    I_T,
    L_IN,
    L_SLOT_ACT,
    L_SLOT_C_PREV,
    L_SLOT_TANH_C,
    L_SLOT_XH,
    LOSS_CE,
    layer_params,
    layer_wt,
    readout_params,
)
from .normalise import emit_output, take_inputs, take_target
from .optim import optimizer_step
from .tbptt import (
    advance,
    enter_layer,
    label,
    labelled_slot,
    loss_grad,
    open_slot,
    pass_up,
    readout,
    transpose_weights,
)

# opt (int64) fields
O_UPDATE_STATS, O_TILE, O_BACKWARD_TILE, O_THREADS = 0, 1, 2, 3
# backward tiles run side by side per parallel region (a constant: the tiles, hence the
# numbers, do not depend on the thread count)
BACKWARD_GROUP = 16
# stats (float64) fields, written by the learning kernel
S_NCONTRIB, S_LOSS_SUM, S_NWAVES, S_NSKIPPED = 0, 1, 2, 3


# ------------------------------------------------------------------- batch plumbing
@jit
def waves(rows, occ, order, start):
    """Sort the events by (occurrence of their key in the batch, arrival).

    ``occ`` is a per-row scratch of zeros (left as zeros). Fills ``order`` (B) and
    ``start`` (B + 1; wave w is order[start[w]:start[w + 1]]); returns the wave count.
    """
    B = rows.shape[0]
    wv = np.empty(B, np.int64)
    nw = 0
    for e in range(B):
        r = rows[e]
        w = occ[r]
        wv[e] = w
        occ[r] = w + 1
        if w + 1 > nw:
            nw = w + 1
    for e in range(B):
        occ[rows[e]] = 0
    for w in range(nw + 1):
        start[w] = 0
    for e in range(B):
        start[wv[e] + 1] += 1
    for w in range(nw):
        start[w + 1] += start[w]
    pos = start[:nw].copy()
    for e in range(B):
        w = wv[e]
        order[pos[w]] = e
        pos[w] += 1
    return nw


@jit
def stage_inputs(X, XS, F, I, add):
    """The network's inputs of every event in arrival order (``take_inputs``, as
    ``forward_step`` computes them); ``add``: the inputs enter the running statistics."""
    fx = I[I_FX]
    for e in range(X.shape[0]):
        take_inputs(X[e], F, I, fx, add, XS[e])


@jit
def stage_targets(Y, mask, YS, TS, F, I):
    """The network's targets of the labelled events in arrival order (``take_target``, as
    ``label`` computes them); TS[e] receives the target statistics event e's output is
    de-standardised with (those before its own label)."""
    n_out = I[I_NOUT]
    fy = I[I_FY]
    for e in range(Y.shape[0]):
        if TS.shape[0]:
            for q in range(3 * n_out):
                TS[e, q] = F[fy + q]
        if mask[e]:
            take_target(Y[e], F, I, YS[e])


@jit
def emit_all(RAW, TS, use_ts, out, F, I):
    """Outputs in target units via the core's ``emit_output`` (arrival order)."""
    n_out = I[I_NOUT]
    so = I[I_SLOT_OUT]
    fy = I[I_FY]
    fo = I[I_FOUT]
    ob = np.zeros(so + n_out, RAW.dtype)
    final = F[fy:fy + 3 * n_out].copy()
    for e in range(RAW.shape[0]):
        if use_ts:
            for q in range(3 * n_out):
                F[fy + q] = TS[e, q]
        for m in range(n_out):
            ob[so + m] = RAW[e, m]
        emit_output(ob, F, I, 0)
        for m in range(n_out):
            out[e, m] = F[fo + m]
    if use_ts:
        for q in range(3 * n_out):
            F[fy + q] = final[q]


# ------------------------------------------------------------------------ inference
@jit
def infer_tile(ev, n, rows, XS, RAW, S, P, I, XH, Z, CP, TC):
    """Advance the compact ``[h | c]`` rows of the tile's n events by one step.

    No ring slot here (a serving key keeps only h and c): xh is gathered straight into
    the tile from the rows."""
    H, L, cell = I[I_H], I[I_L], I[I_CELL]
    n_in, G = I[I_NIN], I[I_G]
    LH = L * H
    lstm = cell == CELL_LSTM
    for l in range(L):
        W, b = layer_params(P, I, l, 0)
        n_x = I[I_LAYERS + I_PER_LAYER * l + L_IN]
        for i in range(n):
            e = ev[i]
            s = S[rows[e]]
            xi = XH[i]
            if l == 0:
                for k in range(n_in):
                    xi[k] = XS[e, k]
            else:
                for j in range(H):
                    xi[j] = s[(l - 1) * H + j]
            for j in range(H):
                xi[n_x + j] = s[l * H + j]
        preactivation_tile(W, b, XH, Z, n, n_x + H)
        for i in range(n):
            s = S[rows[ev[i]]]
            h = s[l * H:(l + 1) * H]
            if lstm:
                c = s[LH + l * H:LH + (l + 1) * H]
                for j in range(H):
                    CP[j] = c[j]
            else:
                c = TC  # unused by the RNN cell
            cell_activate(cell, CP, Z[i, :G], TC, h, c)
    for i in range(n):
        e = ev[i]
        s = S[rows[e]]
        readout(P, I, s[(L - 1) * H:L * H], RAW[e])


@jit
def k_infer(rows, X, out, S, occ, P, F, I, opt):
    """``advance`` for a batch of events of many keys (compact states, no history)."""
    B = rows.shape[0]
    n_in, n_out, H, G = I[I_NIN], I[I_NOUT], I[I_H], I[I_G]
    dt = S.dtype
    XS = np.empty((B, n_in), dt)
    stage_inputs(X, XS, F, I, opt[O_UPDATE_STATS] != 0)
    order = np.empty(B, np.int64)
    start = np.empty(B + 1, np.int64)
    nw = waves(rows, occ, order, start)
    tile = opt[O_TILE]
    XH = np.zeros((tile, max(n_in, H) + H), dt)
    Z = np.empty((tile, G), dt)
    CP = np.zeros(H, dt)
    TC = np.zeros(H, dt)
    RAW = np.empty((B, n_out), dt)
    for w in range(nw):
        a = start[w]
        while a < start[w + 1]:
            n = min(tile, start[w + 1] - a)
            infer_tile(order[a:a + n], n, rows, XS, RAW, S, P, I, XH, Z, CP, TC)
            a += n
    I[I_NSTEPS] += B
    emit_all(RAW, np.empty((0, 3 * n_out), np.float64), False, out, F, I)
    return nw


# ------------------------------------------------------------------------- learning
@jit
def first_shallow_label(rows, mask, C, occ, lag):
    """The first labelled event whose key, after the event's step, is at most ``lag``
    steps deep (no step ``lag`` back to label), or -1. ``occ``: zeros, left as zeros."""
    bad = -1
    for e in range(rows.shape[0]):
        r = rows[e]
        occ[r] += 1
        if mask[e] and C[r, 0] + occ[r] <= lag:
            bad = e
            break
    for e in range(rows.shape[0]):
        occ[rows[e]] = 0
    return bad


@jit
def learn_tile(ev, n, rows, XS, YS, mask, lag, RAW, S, C, P, I, XH, Z, SB, due, n_due):
    """Advance the full stream rows (h, c, ring) of the tile's n events by one step and
    attach their labels (to the step ``lag`` back); the rows of the keys whose update is
    now due are appended to ``due`` (``n_due[0]`` of them)."""
    H, L, cell = I[I_H], I[I_L], I[I_CELL]
    n_in, n_out, G = I[I_NIN], I[I_NOUT], I[I_G]
    LH = L * H
    for i in range(n):
        row = rows[ev[i]]
        SB[i] = open_slot(S[row], I, C[row, 0])
    for l in range(L):
        W, b = layer_params(P, I, l, 0)
        n_x = I[I_LAYERS + I_PER_LAYER * l + L_IN]
        for i in range(n):
            e = ev[i]
            xh, _, _, _, _, _ = enter_layer(S[rows[e]], I, l, SB[i], 0, LH)
            if l == 0:
                for k in range(n_in):
                    xh[k] = XS[e, k]
            xi = XH[i]
            for k in range(n_x + H):
                xi[k] = xh[k]
        preactivation_tile(W, b, XH, Z, n, n_x + H)
        for i in range(n):
            s = S[rows[ev[i]]]
            sb = SB[i]
            _, act, cp, tc, hl, cl = enter_layer(s, I, l, sb, 0, LH)
            zi = Z[i]
            for r in range(G):
                act[r] = zi[r]
            cell_activate(cell, cp, act, tc, hl, cl)
            pass_up(s, I, l, sb, hl)
    K1, so, sy = I[I_K1], I[I_SLOT_OUT], I[I_SLOT_Y]
    width = 1 if I[I_LOSS] == LOSS_CE else n_out
    for i in range(n):
        e = ev[i]
        row = rows[e]
        s = S[row]
        sb = SB[i]
        o = s[sb + so:sb + so + n_out]
        readout(P, I, s[(L - 1) * H:L * H], o)
        for m in range(n_out):
            RAW[e, m] = o[m]
        C[row, 0] += 1
        C[row, 1] += 1
        I[I_NSTEPS] += 1
        if not mask[e]:
            continue
        lb = labelled_slot(s, I, C[row, 0], lag)
        for m in range(width):
            s[lb + sy + m] = YS[e, m]
        if C[row, 1] < K1:
            continue
        C[row, 1] = 0
        due[n_due[0]] = row
        n_due[0] += 1


@jit
def window_losses(due, n, S, C, F, I, dout, KEPT, WIN, INV):
    """Each due key's window, labels and loss, for ``backward_tile`` and the BLAS backward.

    Keeps the keys with a finite loss in ``KEPT[:m]`` (their windows in ``WIN``, one over
    their labelled-step counts in ``INV``), longest windows first, so that the keys still
    in their windows at any step back are a prefix; a key whose loss is not finite is left
    out (its labels dropped, counted as a skipped update). Returns (m, sum of kept losses).
    Each key's loss is the mean over its labelled steps, as in ``backward_window``.
    """
    n_out, K2, ring, slot = I[I_NOUT], I[I_K2], I[I_RING], I[I_SLOT_SIZE]
    fl, so, sy = I[I_SLOT_FLAG], I[I_SLOT_OUT], I[I_SLOT_Y]
    m = 0
    loss_sum = 0.0
    for w in range(K2, 0, -1):
        for i in range(n):
            row = due[i]
            t = C[row, 0]
            if min(t, K2) != w:
                continue
            s = S[row]
            n_lab = 0
            total = 0.0
            for back in range(w):
                sb = ring + ((t - 1 - back) % K2) * slot
                if s[sb + fl] != 0.0:
                    n_lab += 1
                    total += loss_grad(I[I_LOSS], F[F_DELTA], s, sb + so, sb + sy, n_out, dout)
            if n_lab == 0:
                continue
            inv_n = 1.0 / n_lab
            value = total * inv_n
            if not np.isfinite(value):
                for back in range(w):
                    s[ring + ((t - 1 - back) % K2) * slot + fl] = 0.0
                I[I_NSKIP] += 1
                continue
            loss_sum += value
            KEPT[m] = row
            WIN[m] = w
            INV[m] = inv_n
            m += 1
    return m, loss_sum


@jit
def readout_back(back, m, rows, S, C, P, G, F, I, DH, SL, WIN, INV, dout):
    """Step ``back`` of the walk back through the windows of ``rows[:m]`` (``window_losses``
    order): the slot offsets of the na keys still in their windows go to ``SL``; each
    labelled slot's loss gradient (scaled by the key's 1/n_labelled) enters the readout's
    gradient (in the tile's gradient ``G``, laid out as the weights in P) and the top
    layer's dh (``DH``), as in ``backward_window``. Returns na."""
    H, L, cell = I[I_H], I[I_L], I[I_CELL]
    n_out, K2, ring, slot = I[I_NOUT], I[I_K2], I[I_RING], I[I_SLOT_SIZE]
    fl, so, sy = I[I_SLOT_FLAG], I[I_SLOT_OUT], I[I_SLOT_Y]
    V, _ = readout_params(P, I, 0)
    dV, da = readout_params(G, I, 0)
    rec = I_LAYERS + I_PER_LAYER * (L - 1)
    o_act, o_tc = I[rec + L_SLOT_ACT], I[rec + L_SLOT_TANH_C]
    top = (L - 1) * H
    na = 0
    while na < m and WIN[na] > back:
        na += 1
    for i in range(na):
        row = rows[i]
        s = S[row]
        sb = ring + ((C[row, 0] - 1 - back) % K2) * slot
        SL[i] = sb
        if s[sb + fl] == 0.0:
            continue
        s[sb + fl] = 0.0
        loss_grad(I[I_LOSS], F[F_DELTA], s, sb + so, sb + sy, n_out, dout)
        # readout: out = a + h_top @ V (as backward_window)
        for q in range(n_out):
            dout[q] *= INV[i]
            da[q] += dout[q]
        a = sb + o_act  # the top layer's slot fields at their offsets (no views per key and step)
        tc = sb + o_tc
        for j in range(H):
            hj = s[a + j] if cell == CELL_RNN else s[a + 3 * H + j] * s[tc + j]  # h_j, as _h_of
            acc_j = 0.0
            for q in range(n_out):
                dV[j, q] += hj * dout[q]
                acc_j += V[j, q] * dout[q]
            DH[i, top + j] += acc_j
    return na


@jit
def layer_gates_back(l, na, rows, SL, S, I, DH, DC, DZ, XB, D):
    """Layer l's gate gradients of the na active keys into ``DZ`` (``gate_grads``; DC
    becomes ∂L/∂c_prev) and their step inputs [x; h_prev] into ``XB``; ``D``: H float64
    of scratch."""
    H = I[I_H]
    rec = I_LAYERS + I_PER_LAYER * l
    n_xh = I[rec + L_IN] + H
    gate_grads(I[I_CELL], S, rows, SL, I[rec + L_SLOT_ACT], I[rec + L_SLOT_C_PREV], I[rec + L_SLOT_TANH_C], H,
               DH, DC, DZ, na, max(l * H, 0), D)
    o_xh = I[rec + L_SLOT_XH]
    for i in range(na):
        s = S[rows[i]]
        x = max(SL[i] + o_xh, 0)
        for k in range(n_xh):
            XB[i, k] = s[x + k]


@jit
def pass_back(l, na, DXH, lo, DH, I):
    """Route ∂L/∂[x; h_prev] of layer l (``DXH[:, k - lo]`` holds column k, k >= lo): the
    h_prev part to the previous step of this layer, the x part down to layer l-1 at this
    step (l > 0)."""
    H = I[I_H]
    n_x = I[I_LAYERS + I_PER_LAYER * l + L_IN]
    for i in range(na):
        for j in range(H):
            DH[i, l * H + j] = DXH[i, n_x + j - lo]
        if l > 0:
            for j in range(H):
                DH[i, (l - 1) * H + j] += DXH[i, j - lo]


@jit
def prefetch_windows(rows, m, S, C, I):
    """Read the rings of a tile's keys once, row by row (one value per 64-byte line),
    before the walk back reads them slot by slot across keys. Sequential reads are what
    the hardware prefetches: the walk then finds the tile's windows (``bptt`` slots of
    each key, about 15 KB at H=32) in cache instead of waiting on memory slot after slot
    (1.3x on the whole batch at 100,000 keys). Returns a sum nobody uses, so that the
    reads are kept."""
    K2, ring, slot = I[I_K2], I[I_RING], I[I_SLOT_SIZE]
    line = max(1, 64 // S.itemsize)
    total = 0.0
    for i in range(m):
        s = S[rows[i]]
        t = C[rows[i], 0]
        for q in range(ring, ring + min(t, K2) * slot, line):
            total += s[q]
    return total


@jit
def backward_tile(due, n, S, C, P, R, F, I, DH, DC, DZ, XB, DXH, dout, SL, WIN, INV, D, G, tile_stats):
    """The TBPTT gradients of the windows of n due keys (rows ``due[:n]``, distinct) in one
    backward pass, their sum in ``G`` (the layout of the weights in P); ``tile_stats``
    receives (keys kept, sum of their losses), see ``fold_tile``.

    The keys walk back through their windows together: at each step back, the gate
    gradients of every key still in its window are one tile (``layer_gates_back``), the
    weight gradient is one matrix product over the tile (``weight_grad_tile``) and the
    gradient flowing to the inputs another (``backprop_input_tile``). Each key's loss is
    the mean over its labelled steps, as in ``backward_window``; a key whose loss is not
    finite is left out (counted as a skipped update in I). For one key, every number is
    the one ``backward_window`` gives.

    Writes only the tile's own keys' rows, ``G``, ``tile_stats``, its scratch and the
    counters of ``I``: tiles can run side by side, each with its own copy of ``I``.
    """
    n_par, H, L, K2 = I[I_NP], I[I_H], I[I_L], I[I_K2]
    tile_stats[0] = 0.0
    tile_stats[1] = 0.0
    prefetch_windows(due, n, S, C, I)  # before window_losses reads each slot's label flag
    m, loss_sum = window_losses(due, n, S, C, F, I, dout, SL, WIN, INV)
    if m == 0:
        return
    rows = SL[:m].copy()  # SL holds the slot offsets during the walk
    for q in range(n_par):
        G[q] = 0.0
    for i in range(m):
        for q in range(L * H):
            DH[i, q] = 0.0
            DC[i, q] = 0.0
    for back in range(K2):
        na = readout_back(back, m, rows, S, C, P, G, F, I, DH, SL, WIN, INV, dout)
        if na == 0:
            break
        last = WIN[0] == back + 1  # every active window starts here: no gradient flows further back
        for l in range(L - 1, -1, -1):
            n_xh = I[I_LAYERS + I_PER_LAYER * l + L_IN] + H
            layer_gates_back(l, na, rows, SL, S, I, DH, DC, DZ, XB, D)
            dW, db = layer_params(G, I, l, 0)
            weight_grad_tile(XB, DZ, dW, db, na, n_xh)
            if not (last and l == 0):
                lo = n_xh - H if l == 0 else 0  # a first layer's x: the gradient stops at the data
                backprop_input_tile(layer_wt(R, I, l), DZ, DXH, na, lo, n_xh)
                pass_back(l, na, DXH, lo, DH, I)
    tile_stats[0] = m
    tile_stats[1] = loss_sum


@jit
def fold_tile(G, tile_stats, acc, stats, I):
    """Add a tile's gradient ``G`` to ``acc`` (float64), in tile order: the whole tile is
    left out (its keys counted as skipped updates) when its summed gradient is not finite."""
    m = tile_stats[0]
    if m == 0.0:
        return
    n_par = I[I_NP]
    for q in range(n_par):
        if not np.isfinite(G[q]):
            I[I_NSKIP] += int(m)
            return
    for q in range(n_par):
        acc[q] += G[q]
    stats[S_NCONTRIB] += m
    stats[S_LOSS_SUM] += tile_stats[1]


@jit
def merge_counters(I, I0, IC, n):
    """Add to I what each of the n copies ``IC[c]`` (taken from ``I0``) counted."""
    for c in range(n):
        for q in range(I.shape[0]):
            d = IC[c, q] - I0[q]
            if d != 0:
                I[q] += d


@jit
def chunk_start(a0, a1, c, nch):
    """The first event (in wave order) of chunk c of the nch chunks of ``order[a0:a1]``."""
    return a0 + ((a1 - a0) * c) // nch


@jit
def learn_chunk(order, lo, hi, tile, rows, XS, YS, mask, lag, RAW, S, C, P, I, XH, Z, SB, due, nd):
    """``learn_tile`` over the events ``order[lo:hi]`` of a wave, a tile at a time; their due
    rows go to ``due[:nd[0]]``."""
    nd[0] = 0
    a = lo
    while a < hi:
        n = min(tile, hi - a)
        learn_tile(order[a:a + n], n, rows, XS, YS, mask, lag, RAW, S, C, P, I, XH, Z, SB, due, nd)
        a += n


@jit_parallel
def forward_chunks(order, a0, a1, nch, tile, rows, XS, YS, mask, lag, RAW, S, C, P, IC, XH, Z, SB, due, ND):
    """``learn_chunk`` for the nch chunks of the wave ``order[a0:a1]`` (distinct keys) side by
    side, chunk c with its own scratch and copy of I (``IC[c]``); its due rows go to
    ``due[lo - a0:]`` (lo: its first event), ``ND[c]`` of them. Each key's numbers do not
    depend on the chunking (every tile computes each key as alone)."""
    for c in prange(nch):
        lo = chunk_start(a0, a1, c, nch)
        hi = chunk_start(a0, a1, c + 1, nch)
        learn_chunk(order, lo, hi, tile, rows, XS, YS, mask, lag, RAW, S, C, P, IC[c], XH[c], Z[c], SB[c],
                    due[lo - a0:hi - a0], ND[c:c + 1])


@jit
def backward_slot(due, n_due, bt, t, j, S, C, P, R, F, I, DH, DC, DZ, XB, DXH, dout, SL, WIN, INV, D, GB, TS):
    """``backward_tile`` for tile t (due keys ``t * bt`` onwards) with scratch slot j: its
    gradient in ``GB[j]``, its stats in ``TS[j]``."""
    a = t * bt
    backward_tile(due[a:a + min(bt, n_due - a)], min(bt, n_due - a), S, C, P, R, F, I, DH[j], DC[j], DZ[j], XB[j],
                  DXH[j], dout[j], SL[j], WIN[j], INV[j], D[j], GB[j], TS[j])


@jit_parallel
def backward_group(due, n_due, bt, t0, nt, S, C, P, R, F, IC, DH, DC, DZ, XB, DXH, dout, SL, WIN, INV, D, GB, TS):
    """``backward_slot`` for the nt tiles from tile t0 side by side, tile t0 + j in slot j
    with its own copy of I ``IC[j]``."""
    for j in prange(nt):
        backward_slot(due, n_due, bt, t0 + j, j, S, C, P, R, F, IC[j], DH, DC, DZ, XB, DXH, dout, SL, WIN, INV, D,
                      GB, TS)


@jit
def k_learn(rows, X, Y, mask, lag, out, S, C, occ, P, R, F, I, opt, stats):
    """``advance`` + ``label(y, lag)`` for a batch of events of many keys, weights fixed;
    after each wave, one batched backward pass over the windows of the keys whose update
    became due (``backward_tile``); at the end, one optimizer step on the mean of their
    gradients. R (the model's own stream buffer) serves as scratch beyond the stream state.

    With ``opt[O_THREADS]`` > 1, a wave's events run in that many chunks side by side
    (``forward_chunks``) and its due keys' tiles in groups of ``BACKWARD_GROUP`` side by side
    (``backward_group``). The tiles are the same bt keys in the same order, and their
    gradients are added in tile order, so every number is the same with any thread count."""
    B = rows.shape[0]
    n_in, n_out, H, G, L = I[I_NIN], I[I_NOUT], I[I_H], I[I_G], I[I_L]
    dt = S.dtype
    XS = np.empty((B, n_in), dt)
    stage_inputs(X, XS, F, I, opt[O_UPDATE_STATS] != 0)
    YS = np.zeros((B, n_out), dt)
    std_y = I[I_STDY] != 0 and I[I_LOSS] != LOSS_CE
    TS = np.empty((B if std_y else 0, 3 * n_out), np.float64)
    stage_targets(Y, mask, YS, TS, F, I)
    order = np.empty(B, np.int64)
    start = np.empty(B + 1, np.int64)
    nw = waves(rows, occ, order, start)
    tile, bt = opt[O_TILE], opt[O_BACKWARD_TILE]
    threads = max(1, opt[O_THREADS])
    nf = threads if rows.shape[0] >= 2 * tile else 1   # forward chunks
    nb = BACKWARD_GROUP if threads > 1 else 1           # backward tiles side by side
    n_xh = max(n_in, H) + H
    XH = np.zeros((nf, tile, n_xh), dt)
    Z = np.empty((nf, tile, G), dt)
    SB = np.empty((nf, tile), np.int64)
    ND = np.zeros(nf, np.int64)
    RAW = np.empty((B, n_out), dt)
    due = np.empty(B, np.int64)
    DH = np.empty((nb, bt, L * H), dt)
    DC = np.empty((nb, bt, L * H), dt)
    DZ = np.empty((nb, bt, G), dt)
    XB = np.empty((nb, bt, n_xh), dt)
    DXH = np.empty((nb, bt, n_xh), dt)
    dout = np.empty((nb, n_out), dt)
    SL = np.empty((nb, bt), np.int64)
    WIN = np.empty((nb, bt), np.int64)
    INV = np.empty((nb, bt), np.float64)
    D = np.empty((nb, H), np.float64)
    n_par = I[I_NP]
    GB = np.empty((nb, n_par), dt)
    TST = np.zeros((nb, 2), np.float64)
    IC = np.empty((max(nf, nb), I.shape[0]), np.int64)
    I0 = I.copy()
    acc = np.zeros(n_par, np.float64)
    for q in range(stats.shape[0]):
        stats[q] = 0.0
    nskip0 = I[I_NSKIP]
    transpose_weights(P, R, I)
    for w in range(nw):
        a0, a1 = start[w], start[w + 1]
        n_due = 0
        nch = min(nf, (a1 - a0 + tile - 1) // tile)
        if nch <= 1:
            learn_chunk(order, a0, a1, tile, rows, XS, YS, mask, lag, RAW, S, C, P, I, XH[0], Z[0], SB[0], due,
                        ND[:1])
            n_due = ND[0]
        else:
            I0[:] = I
            for c in range(nch):
                IC[c] = I
            forward_chunks(order, a0, a1, nch, tile, rows, XS, YS, mask, lag, RAW, S, C, P, IC, XH, Z, SB, due, ND)
            merge_counters(I, I0, IC, nch)
            for c in range(nch):  # each chunk's due rows, in chunk order, to the front
                lo = chunk_start(a0, a1, c, nch) - a0
                for q in range(ND[c]):
                    due[n_due + q] = due[lo + q]
                n_due += ND[c]
        n_tiles = (n_due + bt - 1) // bt
        if nb == 1 or n_tiles == 1:
            for t in range(n_tiles):
                backward_slot(due, n_due, bt, t, 0, S, C, P, R, F, I, DH, DC, DZ, XB, DXH, dout, SL, WIN, INV, D,
                              GB, TST)
                fold_tile(GB[0], TST[0], acc, stats, I)
        else:
            for t0 in range(0, n_tiles, nb):
                nt = min(nb, n_tiles - t0)
                I0[:] = I
                for j in range(nt):
                    IC[j] = I
                backward_group(due, n_due, bt, t0, nt, S, C, P, R, F, IC, DH, DC, DZ, XB, DXH, dout, SL, WIN,
                               INV, D, GB, TST)
                merge_counters(I, I0, IC, nt)
                for j in range(nt):
                    fold_tile(GB[j], TST[j], acc, stats, I)
    stats[S_NWAVES] = nw
    stats[S_NSKIPPED] = I[I_NSKIP] - nskip0
    emit_all(RAW, TS, std_y, out, F, I)
    nc = stats[S_NCONTRIB]
    if nc > 0.0:
        for k in range(n_par):
            P[n_par + k] = acc[k] / nc
        F[F_LOSS] = stats[S_LOSS_SUM] / nc
        if optimizer_step(P, F, I):
            I[I_NUPD] += 1
    return nw


@jit
def k_infer_one(row, x, S, P, F, I, add):
    """``advance`` of one key's compact row by one event; returns the first output, or NaN
    with I[I_STATUS] set when x is refused (nothing changed then)."""
    if not check_input(x, I):
        return np.nan
    n_in, n_out, H, G = I[I_NIN], I[I_NOUT], I[I_H], I[I_G]
    dt = S.dtype
    XS = np.empty((1, n_in), dt)
    take_inputs(x, F, I, I[I_FX], add, XS[0])
    ev = np.zeros(1, np.int64)
    rows = np.full(1, row, np.int64)
    XH = np.zeros((1, max(n_in, H) + H), dt)
    Z = np.empty((1, G), dt)
    CP = np.zeros(H, dt)
    TC = np.zeros(H, dt)
    RAW = np.empty((1, n_out), dt)
    infer_tile(ev, 1, rows, XS, RAW, S, P, I, XH, Z, CP, TC)
    I[I_NSTEPS] += 1
    ob = np.zeros(I[I_SLOT_OUT] + n_out, dt)
    for m in range(n_out):
        ob[I[I_SLOT_OUT] + m] = RAW[0, m]
    return emit_output(ob, F, I, 0)


@jit
def k_infer_one_int(key, TK, TR, x, S, P, F, I, add):
    """``k_infer_one`` for an integer key found in the table; returns (row or -1, output)."""
    s = table_find(TK, TR, key)
    if s < 0:
        return -1, np.nan
    row = TR[s]
    return row, k_infer_one(row, x, S, P, F, I, add)


@jit
def put_row(S, row, vals):
    """S[row] = vals if every value is finite (else nothing changes); returns whether."""
    for q in range(vals.shape[0]):
        if not np.isfinite(vals[q]):
            return False
    s = S[row]
    for q in range(vals.shape[0]):
        s[q] = vals[q]
    return True


@jit
def k_event_row(row, x, y, labelled, S, C, P, R, F, I):
    """One event of one learning key through the single-stream core itself: the key's row
    is swapped into the model's stream buffer, ``advance`` (and ``label`` when labelled:
    its update, when due, is the core's) runs, the row is swapped back, and the model's
    own stream is restored. Returns the first output, or NaN with I[I_STATUS] set when x
    or y is refused (nothing changed then)."""
    if not check_input(x, I):
        return np.nan
    if labelled and not check_target(y, I):
        return np.nan
    se = I[I_STATE_END]
    own = R[:se].copy()
    t, since = I[I_T], I[I_SINCE]
    s = S[row]
    for q in range(se):
        R[q] = s[q]
    I[I_T] = C[row, 0]
    I[I_SINCE] = C[row, 1]
    out = advance(x, P, R, F, I)
    if labelled:
        label(y, 0, P, R, F, I)
    for q in range(se):
        s[q] = R[q]
        R[q] = own[q]
    C[row, 0] = I[I_T]
    C[row, 1] = I[I_SINCE]
    I[I_T] = t
    I[I_SINCE] = since
    return out
