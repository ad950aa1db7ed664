"""OnlineLSTM forward pass vs the independent float64 NumPy reference (tests/reference.py)."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R

streamlstm = pytest.importorskip("streamlstm")
OnlineLSTM = streamlstm.OnlineLSTM

N_IN, HIDDEN, T = 3, 4, 12
TOL = 1e-12


def make_model(cell, layers, n_outputs, loss="squared", **kw):
    args = dict(n_inputs=N_IN, n_outputs=n_outputs, hidden=HIDDEN, layers=layers, cell=cell,
                bptt=4, update_every=1, optimizer="sgd", lr=0.0, clip=None, l2=0.0,
                loss=loss, standardize_inputs=False, standardize_targets=False,
                dtype="float64", seed=0)
    args.update(kw)
    return OnlineLSTM(**args)


def set_state(model, h0, c0):
    s = model.state
    s.h[...] = h0
    s.c[...] = c0
    model.state = s


def setup(cell, layers, n_outputs, seed, loss="squared", **kw):
    rng = np.random.default_rng(seed)
    w = R.random_weights(N_IN, n_outputs, HIDDEN, layers, cell, rng)
    X = rng.normal(size=(T, N_IN))
    h0 = rng.normal(0, 0.5, (layers, HIDDEN))
    c0 = rng.normal(0, 0.5, (layers, HIDDEN))
    if loss == "cross_entropy":
        Y = rng.integers(0, n_outputs, T)
    else:
        Y = rng.normal(size=(T, n_outputs))
    mask = rng.random(T) < 0.7

    def fresh():
        m = make_model(cell, layers, n_outputs, loss=loss, **kw)
        m.set_weights(R.copy_weights(w))
        set_state(m, h0, c0)
        return m

    return w, X, Y, mask, h0, c0, fresh


def reference_predictions(w, X, h0, c0, loss):
    outs, hs, cs = R.forward(w, X, h0, c0)
    preds = np.array([R.prediction(o, loss) for o in outs])
    return preds, hs[-1], cs[-1]


def as_row(p):
    return np.atleast_1d(np.asarray(p, dtype=np.float64))


def label_arg(Y, t, n_outputs, loss):
    if loss == "cross_entropy":
        return int(Y[t])
    return float(Y[t, 0]) if n_outputs == 1 else Y[t]


def learn_loop(model, X, Y, mask, n_outputs):
    """Outputs of the per-event loop that ``learn_many(X, Y, mask)`` stands for (squared loss):
    ``learn_one`` where a label is given, ``advance`` elsewhere."""
    out = []
    for t in range(len(X)):
        if mask[t]:
            out.append(as_row(model.learn_one(X[t], label_arg(Y, t, n_outputs, "squared"))))
        else:
            out.append(as_row(model.advance(X[t])))
    return np.array(out)


def check_state(model, h, c, cell, exact=None):
    s = model.state
    if exact is None:
        np.testing.assert_allclose(s.h, h, rtol=0, atol=TOL)
        if cell == "lstm":
            np.testing.assert_allclose(s.c, c, rtol=0, atol=TOL)
    else:
        assert np.array_equal(s.h, exact.h)
        if cell == "lstm":
            assert np.array_equal(s.c, exact.c)


CASES = [(cell, layers, n_out) for cell in ("lstm", "rnn") for layers in (1, 2)
         for n_out in (1, 3)]


@pytest.mark.parametrize("cell,layers,n_outputs", CASES)
def test_weights_roundtrip(cell, layers, n_outputs):
    w, *_, fresh = setup(cell, layers, n_outputs, seed=0)
    got = fresh().weights()
    assert set(got) == set(w)
    for k in w:
        assert got[k].shape == w[k].shape, k
        assert np.array_equal(got[k], w[k]), k


@pytest.mark.parametrize("cell,layers,n_outputs", CASES)
def test_advance_and_advance_many(cell, layers, n_outputs):
    w, X, _Y, _mask, h0, c0, fresh = setup(cell, layers, n_outputs, seed=1)
    want, h_end, c_end = reference_predictions(w, X, h0, c0, "squared")

    m = fresh()
    step = []
    for t in range(T):
        p = m.advance(X[t])
        if n_outputs == 1:
            assert isinstance(p, float), type(p)
        else:
            assert np.shape(p) == (n_outputs,)
        step.append(as_row(p))
    step = np.array(step)
    np.testing.assert_allclose(step, want, rtol=0, atol=TOL)
    check_state(m, h_end, c_end, cell)
    assert m.n_steps == T

    mb = fresh()
    block = np.asarray(mb.advance_many(X))
    assert block.shape == (T, n_outputs)
    assert np.array_equal(block, step)          # block == loop, bit for bit
    check_state(mb, h_end, c_end, cell, exact=m.state)


@pytest.mark.parametrize("cell,layers,n_outputs", CASES)
def test_learn_many_lr0_matches_reference(cell, layers, n_outputs):
    """lr=0: weights never move, so learn_many's prequential predictions are the plain forward."""
    w, X, Y, mask, h0, c0, fresh = setup(cell, layers, n_outputs, seed=2)
    want, h_end, c_end = reference_predictions(w, X, h0, c0, "squared")

    m = fresh()
    Yarg = Y[:, 0] if n_outputs == 1 else Y
    block = np.asarray(m.learn_many(X, Yarg, mask))
    assert block.shape == (T, n_outputs)
    np.testing.assert_allclose(block, want, rtol=0, atol=TOL)
    check_state(m, h_end, c_end, cell)
    assert m.n_updates > 0

    # loop of single calls == block
    ml = fresh()
    assert np.array_equal(learn_loop(ml, X, Y, mask, n_outputs), block)
    check_state(ml, h_end, c_end, cell, exact=m.state)
    assert ml.n_updates == m.n_updates


@pytest.mark.parametrize("cell,layers", [(c, l) for c in ("lstm", "rnn") for l in (1, 2)])
def test_cross_entropy_outputs_probabilities(cell, layers):
    n_out = 3
    w, X, Y, mask, h0, c0, fresh = setup(cell, layers, n_out, seed=3, loss="cross_entropy")
    want, h_end, c_end = reference_predictions(w, X, h0, c0, "cross_entropy")

    m = fresh()
    step = np.array([as_row(m.advance(x)) for x in X])
    np.testing.assert_allclose(step, want, rtol=0, atol=TOL)
    np.testing.assert_allclose(step.sum(axis=1), 1.0, rtol=0, atol=1e-12)

    mb = fresh()
    block = np.asarray(mb.learn_many(X, Y, mask))
    np.testing.assert_allclose(block, want, rtol=0, atol=TOL)
    assert np.array_equal(block, step)
    check_state(mb, h_end, c_end, cell)


@pytest.mark.parametrize("cell,layers,n_outputs", CASES)
@pytest.mark.parametrize("standardize", [False, True])
def test_learn_many_equals_loop_while_learning(cell, layers, n_outputs, standardize):
    """With real updates (adam, clipping, k1=2) the block API equals the loop exactly."""
    kw = dict(optimizer="adam", lr=1e-2, clip=1.0, l2=1e-4, bptt=3, update_every=2,
              standardize_inputs=standardize, standardize_targets=standardize)
    w, X, Y, mask, _h0, _c0, fresh = setup(cell, layers, n_outputs, seed=4, **kw)
    Yarg = Y[:, 0] if n_outputs == 1 else Y

    mb = fresh()
    block = np.asarray(mb.learn_many(X, Yarg, mask))
    ml = fresh()
    assert np.array_equal(learn_loop(ml, X, Y, mask, n_outputs), block)
    assert ml.n_updates == mb.n_updates > 0
    wb, wl = mb.weights(), ml.weights()
    for k in wb:
        assert np.array_equal(wb[k], wl[k]), k
    assert any(not np.array_equal(wb[k], w[k]) for k in w)  # it did learn
    check_state(ml, None, None, cell, exact=mb.state)
