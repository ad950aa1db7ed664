"""The tile products of the batched keyed backward (``streamlstm/_kernels/cell.py``).

``weight_grad_tile`` and ``backprop_input_tile`` block their loops (two rows of dW per
pass, eight gate rows per pass, a column offset) for speed, but promise per key the sums of
the single-stream backward in its order: for dW, the keys added one after another in
ascending order; for the input gradient, the gate rows in ascending order. Checked here bit
for bit against NumPy doing exactly those sequences of roundings (one operation at a time,
in the model's dtype), and in float64 against the matrix products written from the
equations, for tile sizes, widths and gate counts that hit every remainder loop.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamlstm._kernels import cell

SHAPES = [(1, 4, 12), (3, 7, 20), (5, 33, 128), (32, 33, 128), (9, 64, 128), (4, 6, 5)]


def tile(rng, dtype, n, n_rows, G):
    XH = rng.normal(size=(n + 2, n_rows + 3)).astype(dtype)  # larger than the tile: only [:n, :n_rows] counts
    DZ = rng.normal(size=(n + 2, G)).astype(dtype)
    W = rng.normal(size=(n_rows, G)).astype(dtype)
    return XH, DZ, W


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,n_rows,G", SHAPES)
def test_weight_grad_tile_sums_keys_in_order(dtype, n, n_rows, G):
    rng = np.random.default_rng(n * 1000 + n_rows * 10 + G)
    XH, DZ, _ = tile(rng, dtype, n, n_rows, G)
    dW0 = rng.normal(size=(n_rows + 1, G)).astype(dtype)
    db0 = rng.normal(size=G).astype(dtype)
    dW, db = dW0.copy(), db0.copy()
    cell.weight_grad_tile(XH, DZ, dW, db, n, n_rows)
    want_w, want_b = dW0.copy(), db0.copy()
    for i in range(n):  # key after key, each product rounded, then each sum
        want_w[:n_rows] = want_w[:n_rows] + np.outer(XH[i, :n_rows], DZ[i])
        want_b = want_b + DZ[i]
    assert np.array_equal(dW, want_w)
    assert np.array_equal(db, want_b)
    if dtype == np.float64:
        np.testing.assert_allclose(dW[:n_rows], dW0[:n_rows] + XH[:n, :n_rows].T @ DZ[:n], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(db, db0 + DZ[:n].sum(axis=0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,n_rows,G", SHAPES)
@pytest.mark.parametrize("lo", [0, 1, 3])
def test_backprop_input_tile_sums_gates_in_order(dtype, n, n_rows, G, lo):
    if lo >= n_rows:
        pytest.skip("no column left")
    rng = np.random.default_rng(n * 1000 + n_rows * 10 + G + lo)
    _, DZ, W = tile(rng, dtype, n, n_rows, G)
    WT = np.ascontiguousarray(W.T)
    DXH = np.full((n + 1, n_rows + 2), 7.0, dtype)
    cell.backprop_input_tile(WT, DZ, DXH, n, lo, n_rows)
    want = np.full_like(DXH, 7.0)
    for i in range(n):
        acc = np.zeros(n_rows - lo, dtype)
        for r in range(G):  # gate row after gate row, as backprop_input
            acc = acc + DZ[i, r] * WT[r, lo:]
        want[i, :n_rows - lo] = acc
    assert np.array_equal(DXH, want)
    # and the single-stream kernel gives the same bits for each key
    for i in range(n):
        one = np.empty(n_rows, dtype)
        cell.backprop_input(WT, DZ[i], one)
        assert np.array_equal(DXH[i, :n_rows - lo], one[lo:])
    if dtype == np.float64:
        np.testing.assert_allclose(DXH[:n, :n_rows - lo], DZ[:n] @ W[lo:].T, rtol=1e-12, atol=1e-12)
