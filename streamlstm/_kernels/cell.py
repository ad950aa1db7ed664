"""One LSTM (or tanh RNN) layer step, forward and backward, for one stream or a tile of keys.

Layer l has one fused weight matrix ``W`` of shape ``(n_x + H, G)`` applied to
``xh = [x; h_prev]`` as ``z = b + xh @ W`` (``G = 4H`` gates ``i, f, g, o`` in PyTorch's
order for the LSTM, ``G = H`` for the RNN). Storing it input-major makes the forward and
the weight-gradient loops run along contiguous rows of ``G`` values, which LLVM vectorises
without reordering any sum, so every path through the kernels rounds the same way.
"""

from __future__ import annotations

from ._jit import jit
from .activations import sigmoid, tanh
from .layout import CELL_RNN


@jit
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


@jit
def preactivation_tile(W, b, XH, Z, n, n_rows):
    """Z[i] = b + XH[i, :n_rows] @ W for i < n: ``preactivation`` for a tile of keys.

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


@jit
def cell_activate(cell, c_prev, act, tc, h, c):
    """Turn the pre-activations in ``act`` into gates, then the new c and h.

    LSTM:  i, f, o = σ(z_i, z_f, z_o);  g = tanh(z_g);  c = f·c_prev + i·g;  h = o·tanh(c)
    RNN:   h = tanh(z)
    ``act`` keeps the activated gates (the backward pass needs them), ``tc`` = tanh(c).
    """
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


@jit
def cell_forward(cell, W, b, xh, c_prev, act, tc, h, c):
    """One step of one layer: z = b + xh @ W, then the cell (``cell_activate``).
    ``xh`` = [x; h_prev] is already filled in."""
    preactivation(W, b, xh, act)
    cell_activate(cell, c_prev, act, tc, h, c)


@jit
def gate_grads(cell, S, rows, SL, o_act, o_cp, o_tc, H, DH, DC, DZ, n, lo, D):
    """∂L/∂z of one step of one layer for a tile of n keys (one stream: a tile of one),
    into ``DZ[i]`` from dh = ``DH[i, lo:lo + H]`` and (LSTM) dc = ``DC[i, lo:lo + H]``,
    which becomes ∂L/∂c_prev:

         do = dh·tanh(c);  dc += dh·o·(1 - tanh²c)
         di = dc·g;  df = dc·c_prev;  dg = dc·i;  dc_prev = dc·f
         dz = [di·i(1-i), df·f(1-f), dg(1-g²), do·o(1-o)]

    Key i's step is the slot at ``SL[i]`` of the row ``S[rows[i]]``: its gates at offset
    ``o_act``, c_prev at ``o_cp``, tanh c at ``o_tc`` in the slot. ``D``: H float64 of
    scratch for dc (float64 as the literals make it). Offsets rather than views: a view per
    field per key and step cost more than the arithmetic on the keyed path (2.5x on this
    loop). One loop per output: a single loop storing to five places is not vectorised.
    """
    lo = max(lo, 0)  # offsets known to be >= 0: no wraparound, the loops vectorise
    for i in range(n):
        s = S[rows[i]]
        sb = SL[i]
        a = max(sb + o_act, 0)
        if cell == CELL_RNN:
            for j in range(H):
                aj = s[a + j]
                DZ[i, j] = DH[i, lo + j] * (1.0 - aj * aj)
            continue
        cp = max(sb + o_cp, 0)
        tc = max(sb + o_tc, 0)
        for j in range(H):
            tcj = s[tc + j]
            D[j] = DC[i, lo + j] + DH[i, lo + j] * s[a + 3 * H + j] * (1.0 - tcj * tcj)
        for j in range(H):
            ig = s[a + j]
            DZ[i, j] = D[j] * s[a + 2 * H + j] * ig * (1.0 - ig)
        for j in range(H):
            fg = s[a + H + j]
            DZ[i, H + j] = D[j] * s[cp + j] * fg * (1.0 - fg)
        for j in range(H):
            gg = s[a + 2 * H + j]
            DZ[i, 2 * H + j] = D[j] * s[a + j] * (1.0 - gg * gg)
        for j in range(H):
            og = s[a + 3 * H + j]
            DZ[i, 3 * H + j] = DH[i, lo + j] * s[tc + j] * og * (1.0 - og)
        for j in range(H):
            DC[i, lo + j] = D[j] * s[a + H + j]


@jit
def cell_backward(cell, WT, S, rows, SL, o_act, o_cp, o_tc, xh, DH, DC, DZ, lo, D, dW, db, dxh):
    """Backward through one step of one layer of one stream: ``gate_grads`` for a tile of
    one (row ``rows[0]`` of ``S``, its slot at ``SL[0]``; dh and dc in row 0 of DH and DC
    from column ``lo``), then the weight gradient and the gradient of the step's input.

    Out: dW, db accumulated; dxh = ∂L/∂[x; h_prev]; dc becomes ∂L/∂c_prev.
    """
    gate_grads(cell, S, rows, SL, o_act, o_cp, o_tc, D.shape[0], DH, DC, DZ, 1, lo, D)
    dz = DZ[0]
    G = dz.shape[0]
    for r in range(G):
        db[r] += dz[r]
    for k in range(xh.shape[0]):
        xk = xh[k]
        for r in range(G):
            dW[k, r] += xk * dz[r]
    backprop_input(WT, dz, dxh)


@jit
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


@jit
def weight_grad_tile(XH, DZ, dW, db, n, n_rows):
    """dW += Σ_i XH[i, :n_rows] ⊗ DZ[i] and db += Σ_i DZ[i] over a tile of n keys: one
    step's weight gradient of many windows as a matrix product (XHᵀ · DZ).

    Keys are summed in ascending order, four per pass over a row of dW (one left-to-right
    expression: the same roundings as four single passes, a quarter of dW's loads and
    stores), two rows of dW per pass sharing the loads of DZ. For one key these are
    exactly ``cell_backward``'s sums.
    """
    G = DZ.shape[1]
    for i in range(n):
        d = DZ[i]
        for r in range(G):
            db[r] += d[r]
    k = 0
    while k + 2 <= n_rows:
        wk = dW[k]
        wl = dW[k + 1]
        i = 0
        while i + 4 <= n:
            x0, x1, x2, x3 = XH[i, k], XH[i + 1, k], XH[i + 2, k], XH[i + 3, k]
            y0, y1, y2, y3 = XH[i, k + 1], XH[i + 1, k + 1], XH[i + 2, k + 1], XH[i + 3, k + 1]
            d0, d1, d2, d3 = DZ[i], DZ[i + 1], DZ[i + 2], DZ[i + 3]
            for r in range(G):
                e0, e1, e2, e3 = d0[r], d1[r], d2[r], d3[r]
                wk[r] = (((wk[r] + x0 * e0) + x1 * e1) + x2 * e2) + x3 * e3
                wl[r] = (((wl[r] + y0 * e0) + y1 * e1) + y2 * e2) + y3 * e3
            i += 4
        while i < n:
            x0 = XH[i, k]
            y0 = XH[i, k + 1]
            d0 = DZ[i]
            for r in range(G):
                wk[r] += x0 * d0[r]
                wl[r] += y0 * d0[r]
            i += 1
        k += 2
    if k < n_rows:
        wk = dW[k]
        for i in range(n):
            x0 = XH[i, k]
            d0 = DZ[i]
            for r in range(G):
                wk[r] += x0 * d0[r]


@jit
def backprop_input_tile(WT, DZ, DXH, n, lo, n_rows):
    """DXH[i, k - lo] = (W @ DZ[i])[k] for lo <= k < n_rows and a tile of n keys:
    ``backprop_input`` with each block of WT's rows loaded once for all keys. Per key, the
    same sums in the same order: eight gate rows per pass written as one left-to-right
    expression round exactly like two passes of four. ``lo`` skips leading columns nobody
    needs (a first layer's x: the gradient stops at the data)."""
    G = WT.shape[0]
    m = n_rows - lo
    for i in range(n):
        for k in range(m):
            DXH[i, k] = 0
    r = 0
    while r + 8 <= G:
        w0, w1, w2, w3 = WT[r, lo:n_rows], WT[r + 1, lo:n_rows], WT[r + 2, lo:n_rows], WT[r + 3, lo:n_rows]
        w4, w5, w6, w7 = WT[r + 4, lo:n_rows], WT[r + 5, lo:n_rows], WT[r + 6, lo:n_rows], WT[r + 7, lo:n_rows]
        for i in range(n):
            d0, d1, d2, d3 = DZ[i, r], DZ[i, r + 1], DZ[i, r + 2], DZ[i, r + 3]
            d4, d5, d6, d7 = DZ[i, r + 4], DZ[i, r + 5], DZ[i, r + 6], DZ[i, r + 7]
            xi = DXH[i]
            for k in range(m):
                xi[k] = (((((((xi[k] + d0 * w0[k]) + d1 * w1[k]) + d2 * w2[k]) + d3 * w3[k]) + d4 * w4[k])
                          + d5 * w5[k]) + d6 * w6[k]) + d7 * w7[k]
        r += 8
    while r < G:
        w0 = WT[r, lo:n_rows]
        for i in range(n):
            d0 = DZ[i, r]
            xi = DXH[i]
            for k in range(m):
                xi[k] += d0 * w0[k]
        r += 1
