"""The batched keyed backward (``KeyedLSTM.learn_many``): its mean gradient against central
finite differences of the mean of the due windows' losses, computed by the NumPy reference
forward (tests/reference.py, written from the equations).

sgd with lr=0, no clipping, no L2, no standardisation: the weights never move, so each
window's loss is a pure function of the weights (the state entering the window being a
constant computed with the unperturbed weights)."""

from __future__ import annotations

import os
import sys
import zlib

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R

from streamlstm import KeyedLSTM, OnlineLSTM

N_IN, HIDDEN, K1, K2 = 2, 3, 2, 4


def simulate(keys, X, Y, M, lag, prefill):
    """Which windows the batch updates: (key, inputs of the key before the window, window
    inputs, {step in window: target}) per due update, in the engine's bookkeeping."""
    hist, labels, since, updates = {}, {}, {}, []
    for k, x in prefill:
        hist.setdefault(k, []).append(x)
        since[k] = since.get(k, 0) + 1
    for k, x, y, m in zip(keys, X, Y, M):
        h = hist.setdefault(k, [])
        h.append(x)
        t = len(h)
        since[k] = since.get(k, 0) + 1
        pend = {s: v for s, v in labels.get(k, {}).items() if s >= t - K2}  # older labels fell off
        if m:
            pend[t - 1 - lag] = y
            if since[k] >= K1:
                since[k] = 0
                start = t - min(t, K2)
                updates.append((k, list(h[:start]), list(h[start:]), {s - start: v for s, v in pend.items()}))
                pend = {}
        labels[k] = pend
    return updates


def mean_window_loss(weights, w0, updates, loss):
    total = 0.0
    for _, before, window, targets in updates:
        _, hs, cs = R.forward(w0, np.array(before)) if before else (None, None, None)
        h0, c0 = (hs[-1], cs[-1]) if before else R.zero_state(w0)
        outs, _, _ = R.forward(weights, np.array(window), h0, c0)
        total += sum(R.step_loss(outs[s], y, loss) for s, y in targets.items()) / len(targets)
    return total / len(updates)


@pytest.mark.parametrize("cell,layers,loss,lag", [("lstm", 2, "squared", 0), ("lstm", 1, "cross_entropy", 1),
                                                  ("rnn", 2, "huber", 2), ("lstm", 1, "huber", 0)])
def test_batched_keyed_gradient_matches_finite_differences(cell, layers, loss, lag):
    rng = np.random.default_rng(zlib.crc32(repr((cell, layers, loss, lag)).encode()))
    n_out = 3 if loss == "cross_entropy" else 2
    model = OnlineLSTM(n_inputs=N_IN, n_outputs=n_out, hidden=HIDDEN, layers=layers, cell=cell, bptt=K2,
                       update_every=K1, optimizer="sgd", lr=0.0, clip=None, l2=0.0, loss=loss,
                       standardize_inputs=False, standardize_targets=False, seed=1)
    w = R.random_weights(N_IN, n_out, HIDDEN, layers, cell, rng)
    model.set_weights(R.copy_weights(w))
    engine = KeyedLSTM(model, learn=True)
    pre_keys = [0, 1, 2, 3, 4, 5] * 3
    pre_X = rng.normal(size=(len(pre_keys), N_IN))
    engine.step_many(pre_keys, pre_X)
    keys = rng.integers(0, 7, 40)  # keys 0-5 with history, 6 new; several waves
    X = rng.normal(size=(40, N_IN))
    Y = rng.integers(0, n_out, 40).astype(float) if loss == "cross_entropy" else rng.normal(0, 1.5, (40, n_out))
    depth = {}
    M = np.zeros(40, bool)
    for e, k in enumerate(keys):
        depth[k] = depth.get(k, 3 if k < 6 else 0) + 1
        M[e] = depth[k] > lag and rng.random() < 0.8
    updates = simulate(keys.tolist(), list(X), list(Y), M, lag,
                       list(zip(pre_keys, pre_X)))
    engine.learn_many(keys, X, Y, M, lag=lag)
    assert engine.last_contributions == len(updates) > 5
    got = model.gradients()
    fd = R.numerical_grad(lambda ww: mean_window_loss(ww, w, updates, loss), w, eps=1e-5)
    for name in fd:
        assert R.rel_error(got[name], fd[name]) < 1e-6, name
