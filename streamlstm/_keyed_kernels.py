"""Numba kernels for many streams (keys) sharing one set of weights.

The per-key states live in a 2-D array ``S`` (one row per key, model dtype):

* inference rows are ``[h | c]`` (``2·L·H`` values; ``L·H`` for the RNN cell), the first
  ``2·L·H`` values of the core's stream buffer ``R``;
* learning rows are the core's whole stream buffer ``R[:I_STATE_END]``
  (``[h | c | ring of the last k2 steps]``), with the per-stream counters
  ``(t, since)`` in a matching int64 array ``C``.

A micro-batch of events ``(rows[e], X[e])`` is processed in *waves*: wave ``w`` holds the
``w``-th event of every key in the batch, in arrival order, so the events of one key keep
their order. Within a wave, the gate pre-activations of a tile of keys are one
matrix-matrix product (``gates``) whose every element is summed exactly like the core's
``preactivation`` (bias first, then ``k`` ascending), so each key's numbers are
bit-identical to single-event processing. Everything else is the core's own code:
``cell_activate`` for the cell equations, ``emit_output`` for the outputs,
``welford``/``standardise`` for the normalisers, ``backward_window`` for a key's TBPTT
gradient and ``optimizer_step`` for the update.

Shared running statistics (input and target normalisers) evolve in arrival order, as
they would event by event: a first sequential pass over the batch computes every
event's standardised input (and target, and a copy of the target statistics its output
is de-standardised with) before the waves run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from . import _kernels as K
from ._kernels import _jit
from ._numba_config import module_cache_dir


def _drop_stale_cache() -> None:
    """Numba's on-disk cache checks only the source file of each function, but these kernels
    inline the core's: after an edit of _kernels.py their cached machine code would run the
    old core. Keep a stamp of _kernels.py beside the cache and drop our entries when it moves.
    """
    cache = Path(module_cache_dir(__file__))
    try:
        stamp = hashlib.sha256(Path(K.__file__).read_bytes()).hexdigest()
        marker = cache / "_keyed_kernels.core-stamp"
        if marker.exists() and marker.read_text() == stamp:
            return
        for entry in cache.glob("_keyed_kernels.*.nb[ic]"):
            entry.unlink()
        cache.mkdir(exist_ok=True)
        marker.write_text(stamp)
    except OSError:  # a read-only install: numba then caches elsewhere or not at all
        pass


_drop_stale_cache()

# opt (int64) fields
O_UPDATE_STATS, O_TILE = 0, 1
# stats (float64) fields, written by the learning kernel
S_NCONTRIB, S_LOSS_SUM, S_NWAVES, S_NSKIPPED = 0, 1, 2, 3


# ----------------------------------------------------------------- the batched gates
@_jit
def gates(W, b, XH, Z, n, n_rows):
    """Z[i] = b + XH[i, :n_rows] @ W for i < n: a tile of ``preactivation`` calls.

    Every element is rounded exactly as in ``preactivation``: it starts at b[r] and
    accumulates XH[i, k] * W[k, r] for k ascending (four k per pass, written as one
    left-to-right expression: the same sequence of roundings). No fused multiply-add
    (no fastmath), as in the core. Two keys per pass share each load of W's rows, which
    keeps the loop on the arithmetic units rather than on the loads.
    """
    G = W.shape[1]
    for i in range(n):
        z = Z[i]
        for r in range(G):
            z[r] = b[r]
    k = 0
    while k + 4 <= n_rows:
        w0 = W[k]
        w1 = W[k + 1]
        w2 = W[k + 2]
        w3 = W[k + 3]
        i = 0
        while i + 2 <= n:
            a0, a1, a2, a3 = XH[i, k], XH[i, k + 1], XH[i, k + 2], XH[i, k + 3]
            c0, c1, c2, c3 = XH[i + 1, k], XH[i + 1, k + 1], XH[i + 1, k + 2], XH[i + 1, k + 3]
            za = Z[i]
            zc = Z[i + 1]
            for r in range(G):
                v0, v1, v2, v3 = w0[r], w1[r], w2[r], w3[r]
                za[r] = (((za[r] + a0 * v0) + a1 * v1) + a2 * v2) + a3 * v3
                zc[r] = (((zc[r] + c0 * v0) + c1 * v1) + c2 * v2) + c3 * v3
            i += 2
        if i < n:
            a0, a1, a2, a3 = XH[i, k], XH[i, k + 1], XH[i, k + 2], XH[i, k + 3]
            za = Z[i]
            for r in range(G):
                za[r] = (((za[r] + a0 * w0[r]) + a1 * w1[r]) + a2 * w2[r]) + a3 * w3[r]
        k += 4
    while k < n_rows:
        w0 = W[k]
        for i in range(n):
            x0 = XH[i, k]
            z = Z[i]
            for r in range(G):
                z[r] = z[r] + x0 * w0[r]
        k += 1


@_jit
def readout(P, I, h_top, out):
    """out = a + h_top @ V, summed over j ascending (the loop of ``forward_step``)."""
    V, a = K.readout_params(P, I, 0)
    n_out = I[K.I_NOUT]
    for m in range(n_out):
        out[m] = a[m]
    for j in range(h_top.shape[0]):
        for m in range(n_out):
            out[m] += h_top[j] * V[j, m]


# ------------------------------------------------------------------- batch plumbing
@_jit
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


@_jit
def stage_inputs(X, XS, F, I, add):
    """The network's inputs of every event in arrival order (``take_inputs``, as
    ``forward_step`` computes them); ``add``: the inputs enter the running statistics."""
    fx = I[K.I_FX]
    for e in range(X.shape[0]):
        K.take_inputs(X[e], F, I, fx, add, XS[e])


@_jit
def stage_targets(Y, mask, YS, TS, F, I):
    """The network's targets of the labelled events in arrival order (``take_target``, as
    ``label`` computes them); TS[e] receives the target statistics event e's output is
    de-standardised with (those before its own label)."""
    n_out = I[K.I_NOUT]
    fy = I[K.I_FY]
    for e in range(Y.shape[0]):
        if TS.shape[0]:
            for q in range(3 * n_out):
                TS[e, q] = F[fy + q]
        if mask[e]:
            K.take_target(Y[e], F, I, YS[e])


@_jit
def emit_all(RAW, TS, use_ts, out, F, I):
    """Outputs in target units via the core's ``emit_output`` (arrival order)."""
    n_out = I[K.I_NOUT]
    so = I[K.I_SOUT]
    fy = I[K.I_FY]
    fo = I[K.I_FOUT]
    ob = np.zeros(so + n_out, RAW.dtype)
    final = F[fy:fy + 3 * n_out].copy()
    for e in range(RAW.shape[0]):
        if use_ts:
            for q in range(3 * n_out):
                F[fy + q] = TS[e, q]
        for m in range(n_out):
            ob[so + m] = RAW[e, m]
        K.emit_output(ob, F, I, 0)
        for m in range(n_out):
            out[e, m] = F[fo + m]
    if use_ts:
        for q in range(3 * n_out):
            F[fy + q] = final[q]


# ------------------------------------------------------------------------ inference
@_jit
def infer_tile(ev, n, rows, XS, RAW, S, P, I, XH, Z, CP, TC):
    """Advance the compact ``[h | c]`` rows of the tile's n events by one step."""
    H, L, cell = I[K.I_H], I[K.I_L], I[K.I_CELL]
    n_in, G = I[K.I_NIN], I[K.I_G]
    LH = L * H
    lstm = cell == K.CELL_LSTM
    for l in range(L):
        W, b = K.layer_params(P, I, l, 0)
        n_x = I[K.I_LAYERS + K.I_PER_LAYER * l + K.L_IN]
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
        gates(W, b, XH, Z, n, n_x + H)
        for i in range(n):
            s = S[rows[ev[i]]]
            h = s[l * H:(l + 1) * H]
            if lstm:
                c = s[LH + l * H:LH + (l + 1) * H]
                for j in range(H):
                    CP[j] = c[j]
            else:
                c = TC  # unused by the RNN cell
            K.cell_activate(cell, CP, Z[i, :G], TC, h, c)
    for i in range(n):
        e = ev[i]
        s = S[rows[e]]
        readout(P, I, s[(L - 1) * H:L * H], RAW[e])


@_jit
def k_infer(rows, X, out, S, occ, P, F, I, opt):
    """``advance`` for a batch of events of many keys (compact states, no history)."""
    B = rows.shape[0]
    n_in, n_out, H, G = I[K.I_NIN], I[K.I_NOUT], I[K.I_H], I[K.I_G]
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
    I[K.I_NSTEPS] += B
    emit_all(RAW, np.empty((0, 3 * n_out), np.float64), False, out, F, I)
    return nw


# ------------------------------------------------------------------------- learning
@_jit
def learn_tile(ev, n, rows, XS, YS, mask, RAW, S, C, P, R, F, I, XH, Z, SB, acc, stats):
    """Advance the full stream rows (h, c, ring) of the tile's n events by one step,
    attach their labels, and add the TBPTT gradient of every key whose update is due."""
    H, L, cell = I[K.I_H], I[K.I_L], I[K.I_CELL]
    n_in, n_out, G = I[K.I_NIN], I[K.I_NOUT], I[K.I_G]
    LH = L * H
    ring, slot, K2, K1 = I[K.I_RING], I[K.I_SLOT], I[K.I_K2], I[K.I_K1]
    fl = I[K.I_SFLAG]
    for i in range(n):
        row = rows[ev[i]]
        sb = ring + (C[row, 0] % K2) * slot
        SB[i] = sb
        s = S[row]
        if s[sb + fl] != 0.0:  # a label that no update used falls off the window
            I[K.I_NDROP] += 1
        s[sb + fl] = 0.0
    for l in range(L):
        W, b = K.layer_params(P, I, l, 0)
        n_x = I[K.I_LAYERS + K.I_PER_LAYER * l + K.L_IN]
        for i in range(n):
            e = ev[i]
            s = S[rows[e]]
            xh, act, cp, tc = K.slot_views(s, I, l, SB[i])
            if l == 0:
                for k in range(n_in):
                    xh[k] = XS[e, k]
            hl = s[l * H:(l + 1) * H]
            cl = s[LH + l * H:LH + (l + 1) * H]
            for j in range(H):
                xh[n_x + j] = hl[j]
                cp[j] = cl[j]
            xi = XH[i]
            for k in range(n_x + H):
                xi[k] = xh[k]
        gates(W, b, XH, Z, n, n_x + H)
        for i in range(n):
            s = S[rows[ev[i]]]
            xh, act, cp, tc = K.slot_views(s, I, l, SB[i])
            zi = Z[i]
            for r in range(G):
                act[r] = zi[r]
            hl = s[l * H:(l + 1) * H]
            cl = s[LH + l * H:LH + (l + 1) * H]
            K.cell_activate(cell, cp, act, tc, hl, cl)
            if l + 1 < L:
                nxh, _, _, _ = K.slot_views(s, I, l + 1, SB[i])
                for j in range(H):
                    nxh[j] = hl[j]
    n_par = I[K.I_NP]
    se = I[K.I_STATE_END]
    so, sy = I[K.I_SOUT], I[K.I_SY]
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
        I[K.I_NSTEPS] += 1
        if not mask[e]:
            continue
        ys = s[sb + sy:sb + sy + n_out]
        width = 1 if I[K.I_LOSS] == K.LOSS_CE else n_out
        for m in range(width):
            ys[m] = YS[e, m]
        s[sb + fl] = 1.0
        if C[row, 1] < K1:
            continue
        C[row, 1] = 0
        # The key's TBPTT gradient: its history goes into the model's own stream buffer
        # (used as scratch), the core's backward_window fills the grad block.
        for q in range(ring, se):
            R[q] = s[q]
        I[K.I_T] = C[row, 0]
        value = K.backward_window(P, R, F, I)
        for q in range(K2):
            s[ring + q * slot + fl] = R[ring + q * slot + fl]  # the flags it consumed
        if value < 0.0:
            continue
        finite = np.isfinite(value)
        if finite:
            for k in range(n_par):
                if not np.isfinite(P[n_par + k]):
                    finite = False
                    break
        if not finite:
            I[K.I_NSKIP] += 1
            stats[S_NSKIPPED] += 1.0
            continue
        for k in range(n_par):
            acc[k] += P[n_par + k]
        stats[S_NCONTRIB] += 1.0
        stats[S_LOSS_SUM] += value


@_jit
def k_learn(rows, X, Y, mask, out, S, C, occ, P, R, F, I, opt, stats):
    """``advance`` + ``label`` for a batch of events of many keys, weights fixed; then one
    optimizer step on the mean of the due keys' TBPTT gradients."""
    B = rows.shape[0]
    n_in, n_out, H, G = I[K.I_NIN], I[K.I_NOUT], I[K.I_H], I[K.I_G]
    dt = S.dtype
    XS = np.empty((B, n_in), dt)
    stage_inputs(X, XS, F, I, opt[O_UPDATE_STATS] != 0)
    YS = np.zeros((B, n_out), dt)
    std_y = I[K.I_STDY] != 0 and I[K.I_LOSS] != K.LOSS_CE
    TS = np.empty((B if std_y else 0, 3 * n_out), np.float64)
    stage_targets(Y, mask, YS, TS, F, I)
    order = np.empty(B, np.int64)
    start = np.empty(B + 1, np.int64)
    nw = waves(rows, occ, order, start)
    tile = opt[O_TILE]
    XH = np.zeros((tile, max(n_in, H) + H), dt)
    Z = np.empty((tile, G), dt)
    SB = np.empty(tile, np.int64)
    RAW = np.empty((B, n_out), dt)
    n_par = I[K.I_NP]
    acc = np.zeros(n_par, np.float64)
    for q in range(stats.shape[0]):
        stats[q] = 0.0
    for w in range(nw):
        a = start[w]
        while a < start[w + 1]:
            n = min(tile, start[w + 1] - a)
            learn_tile(order[a:a + n], n, rows, XS, YS, mask, RAW, S, C, P, R, F, I, XH, Z, SB, acc, stats)
            a += n
    stats[S_NWAVES] = nw
    emit_all(RAW, TS, std_y, out, F, I)
    nc = stats[S_NCONTRIB]
    if nc > 0.0:
        for k in range(n_par):
            P[n_par + k] = acc[k] / nc
        F[K.F_LOSS] = stats[S_LOSS_SUM] / nc
        if K.optimizer_step(P, F, I):
            I[K.I_NUPD] += 1
    return nw


@_jit
def k_infer_one(row, x, S, P, F, I, add):
    """``advance`` of one key's compact row by one event; returns the first output, or NaN
    with I[I_STATUS] set when x is refused (nothing changed then)."""
    if not K.check_input(x, I):
        return np.nan
    n_in, n_out, H, G = I[K.I_NIN], I[K.I_NOUT], I[K.I_H], I[K.I_G]
    dt = S.dtype
    XS = np.empty((1, n_in), dt)
    K.take_inputs(x, F, I, I[K.I_FX], add, XS[0])
    ev = np.zeros(1, np.int64)
    rows = np.full(1, row, np.int64)
    XH = np.zeros((1, max(n_in, H) + H), dt)
    Z = np.empty((1, G), dt)
    CP = np.zeros(H, dt)
    TC = np.zeros(H, dt)
    RAW = np.empty((1, n_out), dt)
    infer_tile(ev, 1, rows, XS, RAW, S, P, I, XH, Z, CP, TC)
    I[K.I_NSTEPS] += 1
    ob = np.zeros(I[K.I_SOUT] + n_out, dt)
    for m in range(n_out):
        ob[I[K.I_SOUT] + m] = RAW[0, m]
    return K.emit_output(ob, F, I, 0)


@_jit
def put_row(S, row, vals):
    """S[row] = vals if every value is finite (else nothing changes); returns whether."""
    for q in range(vals.shape[0]):
        if not np.isfinite(vals[q]):
            return False
    s = S[row]
    for q in range(vals.shape[0]):
        s[q] = vals[q]
    return True


# -------------------------------------------------------- the integer-key table
# Open addressing with linear probing over two int64 arrays of a power-of-two size:
# TK holds keys, TR rows (EMPTY, TOMB for a deleted entry, else the key's row).
EMPTY, TOMB = -1, -2


@_jit
def key_slot(key, mask):
    """Home slot of an int64 key: the splitmix64 finaliser, masked."""
    z = np.uint64(key)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.int64(z & np.uint64(mask))


@_jit
def table_find(TK, TR, key):
    """Slot of key, or -1."""
    mask = TK.shape[0] - 1
    s = key_slot(key, mask)
    while True:
        r = TR[s]
        if r == EMPTY:
            return -1
        if r >= 0 and TK[s] == key:
            return s
        s = (s + 1) & mask


@_jit
def table_lookup(TK, TR, keys, rows):
    """rows[e] = row of keys[e], or -1; returns the number of misses."""
    miss = 0
    for e in range(keys.shape[0]):
        s = table_find(TK, TR, keys[e])
        if s < 0:
            rows[e] = -1
            miss += 1
        else:
            rows[e] = TR[s]
    return miss


@_jit
def table_insert(TK, TR, keys, rows):
    """Insert keys (absent) with their rows; returns how many tombstones were reused."""
    mask = TK.shape[0] - 1
    reused = 0
    for e in range(keys.shape[0]):
        s = key_slot(keys[e], mask)
        while TR[s] >= 0:
            s = (s + 1) & mask
        if TR[s] == TOMB:
            reused += 1
        TK[s] = keys[e]
        TR[s] = rows[e]
    return reused


@_jit
def table_delete(TK, TR, keys):
    """Delete keys (present ones); returns how many were."""
    n = 0
    for e in range(keys.shape[0]):
        s = table_find(TK, TR, keys[e])
        if s >= 0:
            TR[s] = TOMB
            n += 1
    return n


@_jit
def table_rebuild(TK, TR, NK, NR):
    """Move every live entry of (TK, TR) into the empty table (NK, NR)."""
    mask = NK.shape[0] - 1
    for s in range(TK.shape[0]):
        r = TR[s]
        if r >= 0:
            t = key_slot(TK[s], mask)
            while NR[t] != EMPTY:
                t = (t + 1) & mask
            NK[t] = TK[s]
            NR[t] = r


@_jit
def k_infer_one_int(key, TK, TR, x, S, P, F, I, add):
    """``k_infer_one`` for an integer key found in the table; returns (found, output)."""
    s = table_find(TK, TR, key)
    if s < 0:
        return -1, np.nan
    row = TR[s]
    return row, k_infer_one(row, x, S, P, F, I, add)


@_jit
def k_event_row(row, x, y, labelled, S, C, P, R, F, I):
    """One event of one learning key through the single-stream core itself: the key's row
    is swapped into the model's stream buffer, ``advance`` (and ``label`` when labelled:
    its update, when due, is the core's) runs, the row is swapped back, and the model's
    own stream is restored. Returns the first output, or NaN with I[I_STATUS] set when x
    or y is refused (nothing changed then)."""
    if not K.check_input(x, I):
        return np.nan
    if labelled and not K.check_target(y, I):
        return np.nan
    se = I[K.I_STATE_END]
    own = R[:se].copy()
    t, since = I[K.I_T], I[K.I_SINCE]
    s = S[row]
    for q in range(se):
        R[q] = s[q]
    I[K.I_T] = C[row, 0]
    I[K.I_SINCE] = C[row, 1]
    out = K.advance(x, P, R, F, I)
    if labelled:
        K.label(y, 0, P, R, F, I)
    for q in range(se):
        s[q] = R[q]
        R[q] = own[q]
    C[row, 0] = I[K.I_T]
    C[row, 1] = I[K.I_SINCE]
    I[K.I_T] = t
    I[K.I_SINCE] = since
    return out
