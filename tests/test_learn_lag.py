"""``learn_many(..., lag=L)``: row t advances, then labels the step L rows back; exactly the
per-event loop of ``advance`` + ``label(y, L)`` (core and keyed)."""

from __future__ import annotations

import numpy as np
import pytest

from streamlstm import InputError, KeyedLSTM, LSTMState, OnlineLSTM
from streamlstm._kernels import layout as K
from streamlstm._kernels import optim


def make_model(dtype="float64", **kw):
    args = dict(n_inputs=2, n_outputs=1, hidden=5, bptt=6, update_every=2, lr=0.01, dtype=dtype, seed=4)
    args.update(kw)
    return OnlineLSTM(**args)


def stream(n, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)), rng.normal(size=n), rng.random(n) < 0.8


def per_event(model, X, Y, M, lag):
    outs = []
    for x, y, m in zip(X, Y, M):
        outs.append(model.advance(x))
        if m:
            model.label(y, lag)
    return np.array(outs)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("lag", [1, 3, 5])
@pytest.mark.parametrize("update_every", [1, 3])
def test_core_block_with_lag_equals_per_event(dtype, lag, update_every):
    X, Y, M = stream(90, lag * 10 + update_every)
    M[:lag] = False  # no step lag rows back yet
    block, loop = make_model(dtype, update_every=update_every), make_model(dtype, update_every=update_every)
    got = np.concatenate([block.learn_many(X[a:a + 17], Y[a:a + 17], M[a:a + 17], lag=lag)[:, 0]
                          for a in range(0, 90, 17)])
    want = per_event(loop, X, Y, M, lag)
    assert np.array_equal(got, want)
    assert np.array_equal(block._P, loop._P)
    assert np.array_equal(block.state.buffer, loop.state.buffer)
    assert np.array_equal(block.state.counters, loop.state.counters)
    assert (block.n_updates, block.n_dropped_labels) == (loop.n_updates, loop.n_dropped_labels)
    assert block.n_updates > 0


def test_core_shallow_label_stops_the_block_before_its_row():
    X, Y, M = stream(10, 1)
    M[:] = True
    m, ref = make_model(), make_model()
    with pytest.raises(InputError, match=r"row 0: lag 2 is out of range.*steps=1") as err:
        m.learn_many(X, Y, M, lag=2)
    assert err.value.rows_done == 0 and m.n_steps_stream == 0
    M[:2] = False
    m.learn_many(X[:5], Y[:5], M[:5], lag=2)
    per_event(ref, X[:5], Y[:5], M[:5], 2)
    assert np.array_equal(m._P, ref._P)


@pytest.mark.parametrize("lag", [-1, 6, 1.0, True])
def test_core_lag_out_of_range(lag):
    with pytest.raises(ValueError, match=r"lag must be an integer in \[0, bptt=6\)"):
        make_model().learn_many(np.ones((2, 2)), np.ones(2), lag=lag)


def test_keyed_single_key_with_lag_equals_online_lstm():
    """One event per call: the mean of one gradient is the core's update."""
    X, Y, M = stream(60, 7)
    M[:2] = False
    model, ref = make_model(), make_model()
    engine = KeyedLSTM(model, learn=True)
    got = [engine.learn_many(["k"], X[t:t + 1], Y[t:t + 1], M[t:t + 1], lag=2)[0, 0] for t in range(60)]
    assert np.array_equal(np.array(got), per_event(ref, X, Y, M, 2))
    assert np.array_equal(model._P, ref._P)
    assert np.array_equal(engine.state("k").buffer, ref.state.buffer)


def test_keyed_batch_with_lag_equals_per_event_reference():
    """Outputs and states exactly those of the per-event loop with swapped states; the
    weights move by one optimizer step on the mean of the due keys' gradients."""
    rng = np.random.default_rng(11)
    model = make_model(update_every=1)
    engine = KeyedLSTM(model, learn=True)
    ref = OnlineLSTM.from_bytes(model.to_bytes())
    ref._F[K.F_LR] = 0.0
    keys = rng.integers(0, 4, 40)
    X, Y = rng.normal(size=(40, 2)), rng.normal(size=40)
    depth, M = {}, np.zeros(40, bool)
    for e, k in enumerate(keys):
        depth[k] = depth.get(k, 0) + 1
        M[e] = depth[k] > 3 and rng.random() < 0.8
    zero = LSTMState(np.zeros(model._state_end), np.zeros(2, np.int64), 1, 5)
    states, outs, grads = {}, [], []
    for e, k in enumerate(keys):
        ref.state = states.get(k, zero)
        outs.append(ref.advance(X[e]))
        n0 = ref.n_updates
        if M[e]:
            ref.label(Y[e], 3)
            if ref.n_updates > n0:
                grads.append(ref.gradients())
        states[k] = ref.state
    got = engine.learn_many(keys, X, Y, M, lag=3)
    assert np.array_equal(got[:, 0], np.array(outs))
    for k, s in states.items():
        assert np.array_equal(engine.state(int(k)).buffer, s.buffer)
    after = OnlineLSTM.from_bytes(make_model(update_every=1).to_bytes())
    after._set_block(1, {n: sum(g[n] for g in grads) / len(grads) for n in grads[0]})
    assert optim.optimizer_step(after._P, after._F, after._I)
    assert engine.last_contributions == len(grads) > 1
    np.testing.assert_allclose(model._P, after._P, rtol=1e-12, atol=1e-15)


def test_keyed_shallow_label_changes_nothing():
    model = make_model()
    engine = KeyedLSTM(model, learn=True)
    engine.learn_many(["a", "a"], np.ones((2, 2)), np.ones(2), [False, False])
    before = (model._P.copy(), engine._S.copy(), engine._C.copy(), engine.n_events, len(engine))
    with pytest.raises(ValueError, match=r"row 2 \(key 'b'\): lag 2 is out of range.*steps=2"):
        engine.learn_many(["a", "b", "b"], np.ones((3, 2)), np.ones(3), [True, False, True], lag=2)
    assert "b" not in engine
    now = (model._P, engine._S, engine._C, engine.n_events, len(engine))
    for a, b in zip(before, now):
        assert np.array_equal(a, b)
