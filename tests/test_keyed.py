"""KeyedLSTM: one model, many keyed streams, against the single-stream core with swapped states.

Every comparison is exact (``==``): the batched kernels sum each gate pre-activation in the
core's order and call the core's own cell, normaliser, output, backward and optimizer code.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import pickle
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamlstm import FormatError, KeyedLSTM, LSTMState, OnlineLSTM
from streamlstm._kernels import activations, optim
from streamlstm._kernels import layout as K

N_IN = 3


def make_model(cell="lstm", layers=1, n_outputs=2, dtype="float64", loss="squared", **kw):
    args = dict(n_inputs=N_IN, n_outputs=n_outputs, hidden=5, layers=layers, cell=cell, dtype=dtype,
                loss=loss, bptt=4, update_every=1, lr=0.01, seed=3)
    args.update(kw)
    return OnlineLSTM(**args)


def clone(model):
    return OnlineLSTM.from_bytes(model.to_bytes())


def zero_state(model):
    return LSTMState(np.zeros(model._state_end, dtype=model.dtype), np.zeros(2, dtype=np.int64),
                     model.layers, model.hidden)


def as_row(out):
    return np.atleast_1d(np.asarray(out, dtype=np.float64))


def per_event_advance(ref, keys, X, states):
    """The single-stream core event by event, each key's state swapped in."""
    outs = []
    zero = zero_state(ref)
    for k, x in zip(keys, X):
        ref.state = states.get(k, zero)
        outs.append(as_row(ref.advance(x)))
        states[k] = ref.state
    return np.array(outs)


def mixed_keys(rng, n, pool):
    return [pool[i] for i in rng.integers(0, len(pool), n)]


POOL = [0, 1, "a", "b", ("t", 1), b"\x00k", 7, -3]


def assert_same_hc(engine, states, model):
    for k, s in states.items():
        got = engine.state(k)
        assert np.array_equal(got.h, s.h), k
        if model.cell == "lstm":
            assert np.array_equal(got.c, s.c), k


# ------------------------------------------------------------------- inference
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_step_many_equals_per_event_advance(cell, layers, dtype):
    model = make_model(cell, layers, dtype=dtype)
    ref = clone(model)
    engine = KeyedLSTM(model, capacity=2)  # grows while running
    rng = np.random.default_rng(zlib.crc32(repr((cell, layers, dtype)).encode()))
    states = {}
    for size in (1, 9, 40, 3, 60):  # repeated keys inside batches, keys interleaved across them
        keys = mixed_keys(rng, size, POOL)
        X = rng.normal(0, 2, (size, N_IN))
        got = engine.step_many(keys, X)
        want = per_event_advance(ref, keys, X, states)
        assert np.array_equal(got, want)
        assert_same_hc(engine, states, model)
    assert np.array_equal(model._F, ref._F)  # input statistics moved in arrival order
    assert model.n_steps == ref.n_steps == engine.n_events


@pytest.mark.parametrize("loss", ["cross_entropy", "huber"])
def test_step_many_other_heads(loss):
    model = make_model(loss=loss, n_outputs=3, dtype="float32", standardize_inputs=False)
    ref = clone(model)
    engine = KeyedLSTM(model)
    rng = np.random.default_rng(1)
    states = {}
    keys = rng.integers(0, 4, 30)          # numpy integer keys are fine
    X = rng.normal(size=(30, N_IN))
    assert np.array_equal(engine.step_many(keys, X), per_event_advance(ref, keys.tolist(), X, states))
    assert set(engine.keys()) == set(states)


def test_one_key_many_events_is_sequential():
    model = make_model()
    ref = clone(model)
    engine = KeyedLSTM(model)
    X = np.random.default_rng(2).normal(size=(25, N_IN))
    assert np.array_equal(engine.step_many(["k"] * 25, X), np.array([as_row(ref.advance(x)) for x in X]))
    assert np.array_equal(engine.state("k").h, ref.state.h)


def test_step_one_matches_step_many():
    a, b = make_model(n_outputs=1), make_model(n_outputs=1)
    ea, eb = KeyedLSTM(a), KeyedLSTM(b)
    rng = np.random.default_rng(3)
    keys = mixed_keys(rng, 20, POOL)
    X = rng.normal(size=(20, N_IN))
    outs = [ea.step_one(k, x) for k, x in zip(keys, X)]
    assert all(isinstance(o, float) for o in outs)
    assert np.array_equal(np.array(outs), eb.step_many(keys, X)[:, 0])


def test_new_keys_start_from_zero():
    model = make_model()
    engine = KeyedLSTM(model)
    fresh = clone(model)
    x = np.array([0.3, -1.0, 2.0])
    engine.step_many(["old"] * 3, np.ones((3, N_IN)))
    for _ in range(3):
        fresh.advance(np.ones(N_IN))
    fresh.reset_state()  # same statistics, zero state
    assert np.array_equal(engine.step_one("new", x), as_row(fresh.advance(x)))
    s = KeyedLSTM(make_model())
    s.set_state("z", zero_state(model))
    assert not s.state("z").h.any() and not s.state("z").c.any()


def test_frozen_input_statistics():
    model = make_model()
    engine = KeyedLSTM(model, update_input_stats=False)
    engine.step_many([1, 2], np.ones((2, N_IN)))
    F0 = model._F.copy()
    engine.step_many([1, 2, 3], np.random.default_rng(0).normal(size=(3, N_IN)))
    assert np.array_equal(model._F, F0)


def test_inference_memory_is_h_and_c():
    for cell, n in (("lstm", 2), ("rnn", 1)):
        for dtype in ("float64", "float32"):
            m = make_model(cell, layers=2, dtype=dtype)
            e = KeyedLSTM(m)
            assert e.state_nbytes_per_key == n * 2 * 5 * np.dtype(dtype).itemsize
            assert e._S.shape[1] * e._S.itemsize == e.state_nbytes_per_key


# -------------------------------------------------------------------- learning
def reference_batch(model, engine, keys, X, Y, mask):
    """Per-event reference with a frozen (lr=0) clone: outputs, states, due gradients.

    Returns (outputs, states, weights_after): the latter = the model before the batch after
    one optimizer step on the mean of the per-update gradients, summed in wave order
    (the w-th event of every key, keys in arrival order) in float64.
    """
    before = clone(model)
    ref = clone(model)
    ref._F[K.F_LR] = 0.0
    states = {k: engine.state(k) for k in engine.keys()}  # noqa: SIM118  (KeyedLSTM is no dict: no __iter__)
    zero = zero_state(ref)
    outs, grads, seen = [], [], {}
    for e, (k, x) in enumerate(zip(keys, X)):
        wave = seen.get(k, 0)
        seen[k] = wave + 1
        ref.state = states.get(k, zero)
        n0 = ref.n_updates
        outs.append(as_row(ref.advance(x)))
        if mask[e]:
            ref.label(int(Y[e]) if ref.loss == "cross_entropy" else Y[e])
            if ref.n_updates > n0:
                grads.append((wave, e, ref.gradients()))
        states[k] = ref.state
    if grads:
        grads.sort(key=lambda g: g[:2])
        total = {n: np.zeros_like(v) for n, v in grads[0][2].items()}
        for _, _, g in grads:
            for n in total:
                total[n] = total[n] + g[n]
        before._set_block(1, {n: v / len(grads) for n, v in total.items()})
        assert optim.optimizer_step(before._P, before._F, before._I)
    return np.array(outs), states, before, ref, len(grads)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss", ["squared", "huber", "cross_entropy"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_learn_many_equals_reference(cell, layers, loss, dtype):
    n_out = 3 if loss == "cross_entropy" else 2
    model = make_model(cell, layers, n_outputs=n_out, dtype=dtype, loss=loss, update_every=2,
                       optimizer="adam" if layers == 1 else "sgd")
    engine = KeyedLSTM(model, learn=True, capacity=3)
    rng = np.random.default_rng(zlib.crc32(repr((cell, layers, loss, dtype)).encode()))
    total_contrib = 0
    for size in (12, 40, 1, 33):
        keys = mixed_keys(rng, size, POOL[:5])
        X = rng.normal(0, 2, (size, N_IN))
        Y = rng.integers(0, n_out, size).astype(float) if loss == "cross_entropy" else rng.normal(0, 2, (size, n_out))
        mask = rng.random(size) < 0.7
        outs, states, after, ref, n_grads = reference_batch(model, engine, keys, X, Y, mask)
        n_upd = model.n_updates
        pre = clone(model)
        got = engine.learn_many(keys, X, Y, mask)
        assert np.array_equal(got, outs)
        for k, s in states.items():
            g = engine.state(k)
            assert np.array_equal(g.buffer, s.buffer) and np.array_equal(g.counters, s.counters), k
        assert engine.last_contributions == n_grads
        total_contrib += n_grads
        if n_grads <= 1:
            assert np.array_equal(model._P, after._P)  # weights, mean gradient, moments
        else:
            # the due windows share one backward pass, whose sums run in another order: the
            # mean gradient agrees to rounding, and the step is exactly one optimizer step on it
            n = model._n_par
            g, g_ref = model._P[n:2 * n], after._P[n:2 * n]
            tol = 1e-12 if dtype == "float64" else 1e-5
            np.testing.assert_allclose(g, g_ref, rtol=tol, atol=tol * np.abs(g_ref).max())
            pre._P[n:2 * n] = g
            assert optim.optimizer_step(pre._P, pre._F, pre._I)
            assert np.array_equal(model._P, pre._P)
        fy = int(model._I[K.I_FY])
        assert np.array_equal(model._F[K.F_HEADER:fy + 3 * n_out], ref._F[K.F_HEADER:fy + 3 * n_out])
        assert model.n_updates == n_upd + (n_grads > 0)
        assert model.n_dropped_labels == ref.n_dropped_labels
    assert total_contrib > 0


@pytest.mark.parametrize("cell,layers,dtype", [("lstm", 1, "float32"), ("lstm", 2, "float64"), ("rnn", 1, "float64")])
def test_learning_does_not_depend_on_threads(cell, layers, dtype):
    """A wave's events run in chunks side by side and its due keys' tiles in groups side by
    side: outputs, states, weights and counters are the same, bit for bit, with 1, 2 or 3
    threads (3 chunks run on fewer cores too: the chunking is exercised on any machine).
    Batches large enough for several forward chunks and backward groups, labels lagged
    and masked, updates every 2 steps (labels that fall off their window are counted)."""
    runs = []
    for threads in (1, 2, 3):
        model = make_model(cell, layers, dtype=dtype, update_every=2)
        engine = KeyedLSTM(model, learn=True, threads=threads)
        rng = np.random.default_rng(7)
        outs = []
        for size in (3000, 700, 5):
            keys = rng.integers(0, 400, size)
            engine.step_many(keys, rng.normal(0, 2, (size, N_IN)))  # every key a step deep, for lag=1
            X = rng.normal(0, 2, (size, N_IN))
            Y = rng.normal(0, 2, (size, 2))
            outs.append(engine.learn_many(keys, X, Y, rng.random(size) < 0.7, lag=1))
            assert engine.last_contributions > 0
        rows = sorted(engine.keys())
        runs.append((np.concatenate(outs), model._P.copy(), model._F.copy(),
                     np.stack([engine.state(k).buffer for k in rows]),
                     (model.n_steps, model.n_updates, model.n_skipped_updates, model.n_dropped_labels)))
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert np.array_equal(a, b)
    assert runs[0][4][3] > 0  # labels did fall off their windows


def _learn_in_child(threads):
    model = make_model(dtype="float32")
    engine = KeyedLSTM(model, learn=True, threads=threads)
    rng = np.random.default_rng(3)
    out = engine.learn_many(rng.integers(0, 200, 800), rng.normal(size=(800, N_IN)), rng.normal(size=(800, 2)))
    return out, model._P


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork: POSIX only")
def test_a_process_forked_after_learning_on_threads_learns_on_one():
    """Numba's GNU OpenMP threads do not survive a fork: a child entering a threaded loop is
    terminated. A child forked after its parent learned on threads learns on one thread,
    with the same numbers (the parent learns on 3 chunks first)."""
    expected = _learn_in_child(3)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(_learn_in_child, (3,)).get(timeout=60)  # a terminated child never answers
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


def test_threads_setting_is_checked():
    with pytest.raises(ValueError, match="threads"):
        KeyedLSTM(make_model(), learn=True, threads=0)


def test_learn_one_is_the_single_stream_core():
    """One event per call: the mean of one gradient is that gradient, so a key learning
    alone through the engine is exactly OnlineLSTM.learn_one."""
    model = make_model(n_outputs=1, bptt=6, update_every=2)
    ref = clone(model)
    engine = KeyedLSTM(model, learn=True)
    rng = np.random.default_rng(5)
    for _ in range(30):
        x, y = rng.normal(size=N_IN), float(rng.normal())
        assert engine.learn_one("solo", x, y) == ref.learn_one(x, y)
    assert np.array_equal(model._P, ref._P)
    assert model.n_updates == ref.n_updates == 15
    assert np.array_equal(engine.state("solo").buffer, ref.state.buffer)


def test_step_many_in_a_learning_engine_enters_history():
    model = make_model()
    ref = clone(model)
    ref._F[K.F_LR] = 0.0
    engine = KeyedLSTM(model, learn=True)
    rng = np.random.default_rng(6)
    keys = [1, 2, 1, 1, 2]
    X = rng.normal(size=(5, N_IN))
    states = {}
    assert np.array_equal(engine.step_many(keys, X), per_event_advance(ref, keys, X, states))
    for k in states:
        assert np.array_equal(engine.state(k).buffer, states[k].buffer)
    assert model.n_updates == 0


def test_learning_needs_learn_true():
    with pytest.raises(RuntimeError, match="learn=True"):
        KeyedLSTM(make_model()).learn_many([1], np.ones((1, N_IN)), np.ones((1, 2)))


def test_learning_improves_many_keys():
    """Sanity: shared weights learn a per-key sine with per-key phase."""
    model = OnlineLSTM(n_inputs=1, hidden=8, lr=1e-2, seed=0)
    engine = KeyedLSTM(model, learn=True)
    keys = np.arange(16)
    phase = keys * 0.4
    err = []
    for t in range(300):
        X = np.sin(0.3 * t + phase)[:, None]
        Y = np.sin(0.3 * (t + 1) + phase)
        err.append(np.abs(engine.learn_many(keys, X, Y)[:, 0] - Y).mean())
    assert np.mean(err[-30:]) < 0.5 * np.mean(err[:30])


# ---------------------------------------------------------------------- expiry
def test_ttl_in_calls():
    engine = KeyedLSTM(make_model(), ttl=2, ttl_unit="calls")
    x = np.ones((1, N_IN))
    engine.step_many(["a"], x)                   # call 0
    h_a = engine.state("a").h.copy()
    engine.step_many(["b"], x)                   # call 1
    engine.step_many(["b"], x)                   # call 2: "a" idle for 2 calls, kept
    assert "a" in engine
    engine.step_many(["b"], x)                   # call 3: idle for 3 > 2: swept
    assert "a" not in engine and "b" in engine
    engine.step_many(["a"], x)                   # back from zero
    assert np.array_equal(engine.state("a").h, h_a)


def test_ttl_in_seconds_and_reuse_of_rows():
    now = [0.0]
    engine = KeyedLSTM(make_model(), ttl=10, ttl_unit="seconds", clock=lambda: now[0], capacity=4)
    for t in range(50):
        now[0] = float(t)
        engine.step_many([f"k{t}", f"k{t}"], np.ones((2, N_IN)))
    assert len(engine) <= 21                     # at most ~2 ttl worth of keys alive
    assert engine._S.shape[0] <= 32              # memory stays bounded: rows are reused
    assert "k49" in engine and "k0" not in engine


def test_ttl_expired_key_restarts_even_before_a_sweep():
    engine = KeyedLSTM(make_model(), ttl=5, ttl_unit="events")
    engine.step_many(["a"], np.ones((1, N_IN)))
    h1 = engine.state("a").h.copy()
    engine._last_sweep = 1e18                   # no sweep: the per-call check alone
    engine.step_many(["b"] * 7, np.ones((7, N_IN)))
    engine.step_many(["a"], np.ones((1, N_IN)))
    assert np.array_equal(engine.state("a").h, h1)


def test_max_keys_evicts_least_recently_used():
    engine = KeyedLSTM(make_model(), max_keys=3)
    x = np.ones((1, N_IN))
    for k in ("a", "b", "c"):
        engine.step_many([k], x)
    engine.step_many(["a"], x)                   # "b" is now the least recently used
    engine.step_many(["d"], x)
    assert set(engine.keys()) == {"a", "c", "d"}
    engine.step_many(["e", "a", "f"], np.ones((3, N_IN)))
    assert set(engine.keys()) == {"e", "a", "f"}
    with pytest.raises(ValueError, match="max_keys"):
        engine.step_many(["p", "q", "r", "s"], np.ones((4, N_IN)))
    assert set(engine.keys()) == {"e", "a", "f"}
    assert engine._S.shape[0] <= 1024


def test_forget_and_clear():
    engine = KeyedLSTM(make_model())
    engine.step_many([1, 2, 3], np.ones((3, N_IN)))
    assert engine.forget(2) and not engine.forget(2)
    assert len(engine) == 2 and 2 not in engine
    engine.clear()
    assert len(engine) == 0
    engine.step_many([4], np.ones((1, N_IN)))
    assert list(engine.keys()) == [4]


# ----------------------------------------------------------------- persistence
@pytest.mark.parametrize("learn", [False, True])
@pytest.mark.parametrize("keys", [[10, -2, 2 ** 40], ["x", "y", "z"], ["x", 3, ("t", b"\x01", 2.5, None, True)]])
def test_snapshot_restore_round_trip(tmp_path, learn, keys):
    model = make_model(dtype="float32")
    engine = KeyedLSTM(model, learn=learn, ttl=100, ttl_unit="events")
    rng = np.random.default_rng(7)
    X = rng.normal(size=(12, N_IN))
    ks = [keys[i % 3] for i in range(12)]
    if learn:
        engine.learn_many(ks, X, rng.normal(size=(12, 2)))
    else:
        engine.step_many(ks, X)
    blob = engine.snapshot()
    twin = KeyedLSTM.from_snapshot(blob)
    engine.save(tmp_path / "keyed.slstm")
    loaded = KeyedLSTM.load(tmp_path / "keyed.slstm")
    pickled = pickle.loads(pickle.dumps(engine))
    assert set(twin.keys()) == set(keys)
    X2 = rng.normal(size=(6, N_IN))
    ks2 = [keys[i % 3] for i in range(6)] + ["new"]
    X2 = np.vstack([X2, X2[:1]])
    outs = []
    for e in (engine, twin, loaded, pickled):
        if learn:
            outs.append(e.learn_many(ks2, X2, np.ones((7, 2))))
        else:
            outs.append(e.step_many(ks2, X2))
    for o in outs[1:]:
        assert np.array_equal(o, outs[0])
    for e in (twin, loaded, pickled):
        assert np.array_equal(e.model._P, engine.model._P)
        for k in keys:
            assert np.array_equal(e.state(k).buffer, engine.state(k).buffer)
    assert twin.n_events == engine.n_events


def test_restore_in_place_and_corruption():
    engine = KeyedLSTM(make_model())
    engine.step_many([1, 2], np.ones((2, N_IN)))
    snap = engine.snapshot()
    engine.step_many([3], np.ones((1, N_IN)))
    engine.restore(snap)
    assert set(engine.keys()) == {1, 2}
    bad = bytearray(snap)
    bad[-10] ^= 0xFF
    with pytest.raises(FormatError):
        engine.restore(bytes(bad))
    assert set(engine.keys()) == {1, 2}          # untouched by a failed restore
    with pytest.raises(FormatError):
        KeyedLSTM.from_snapshot(make_model().to_bytes())  # an OnlineLSTM, not a KeyedLSTM


def test_unsupported_key_type_needs_a_codec():
    engine = KeyedLSTM(make_model())
    engine.step_many([frozenset({1})], np.ones((1, N_IN)))
    with pytest.raises(TypeError, match="encode_key"):
        engine.snapshot()
    blob = engine.snapshot(encode_key=lambda k: sorted(k))
    twin = KeyedLSTM.from_snapshot(blob, decode_key=frozenset)
    assert list(twin.keys()) == [frozenset({1})]


# ----------------------------------------------------------- per-key state I/O
@pytest.mark.parametrize("learn", [False, True])
def test_state_bytes_round_trip(learn):
    model = make_model(dtype="float32")
    a = KeyedLSTM(model, learn=learn)
    b = KeyedLSTM(clone(model), learn=learn)
    a.step_many(["k", "k"], np.ones((2, N_IN)))
    blob = a.state_bytes("k")
    assert len(blob) == 32 + a._width * 4
    b.set_state_bytes("k", blob)
    assert np.array_equal(b.state("k").buffer, a.state("k").buffer)
    assert np.array_equal(b.step_many(["k"], np.ones((1, N_IN))), a.step_many(["k"], np.ones((1, N_IN))))
    other = KeyedLSTM(make_model(dtype="float64"), learn=learn)
    with pytest.raises(ValueError, match="does not fit"):
        other.set_state_bytes("k", blob)
    with pytest.raises(ValueError, match="magic"):
        b.set_state_bytes("k", b"X" * len(blob))
    with pytest.raises(ValueError, match="bytes"):
        b.set_state_bytes("k", blob[:-4])
    with pytest.raises(KeyError):
        a.state_bytes("missing")


def test_state_interop_with_the_single_stream_model():
    model = make_model()
    engine = KeyedLSTM(model)
    x = np.array([0.1, 0.2, 0.3])
    model.advance(x)
    engine.set_state("k", model.state)             # hand a stream to the engine ...
    ref = clone(model)
    assert np.array_equal(engine.step_one("k", x), ref.advance(x))
    twin = clone(model)
    twin.state = engine.state("k")                 # ... and back (h and c when serving)
    assert np.array_equal(twin.state.h, ref.state.h) and np.array_equal(twin.state.c, ref.state.c)


# ------------------------------------------------------------------ bad inputs
def test_bad_inputs_name_row_and_position_and_change_nothing():
    model = make_model(loss="cross_entropy", n_outputs=3)
    engine = KeyedLSTM(model, learn=True)
    engine.learn_many([1, 2], np.ones((2, N_IN)), [0, 1])
    before = (model._P.copy(), model._F.copy(), engine._S.copy(), engine._C.copy(), engine.n_events, len(engine))

    def unchanged():
        now = (model._P, model._F, engine._S, engine._C, engine.n_events, len(engine))
        return all(np.array_equal(a, b) for a, b in zip(before, now))

    X = np.ones((4, N_IN))
    X[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"row 2 \(key 'c'\): input position 1 is nan"):
        engine.learn_many(["a", "b", "c", "d"], X, [0, 1, 2, 0])
    with pytest.raises(ValueError, match=r"row 1 \(key 2\): target 3.0 is not a class index"):
        engine.learn_many([1, 2], np.ones((2, N_IN)), [0, 3])
    with pytest.raises(ValueError, match=r"row 1 \(key 2\): target 0.5 is not a class index"):
        engine.learn_many([1, 2], np.ones((2, N_IN)), [0, 0.5])
    with pytest.raises(ValueError, match=r"row 0 \(key 1\): target position 0 is inf"):
        engine.learn_many([1, 2], np.ones((2, N_IN)), [np.inf, 1])
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        engine.learn_many([1, 2], np.ones((2, 2)), [0, 1])
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        engine.learn_many([1, 2, 3], np.ones((2, N_IN)), [0, 1, 1])
    with pytest.raises(ValueError, match="mask"):
        engine.learn_many([1, 2], np.ones((2, N_IN)), [0, 1], mask=[True])
    with pytest.raises(TypeError, match=r"keys\[1\]"):
        engine.learn_many([1, [2]], np.ones((2, N_IN)), [0, 1])
    with pytest.raises(TypeError):
        engine.step_many("ab", np.ones((2, N_IN)))
    assert unchanged()
    engine.learn_many([1, 2], np.ones((2, N_IN)), [np.inf, 1], mask=[False, True])  # masked: not looked at
    assert engine.n_events == before[4] + 2


def test_inference_bad_inputs():
    engine = KeyedLSTM(make_model())
    engine.step_many([5], np.ones((1, N_IN)))
    S0 = engine._S.copy()
    X = np.ones((3, N_IN))
    X[1, 2] = np.inf
    with pytest.raises(ValueError, match=r"row 1 \(key 6\): input position 2 is inf"):
        engine.step_many([5, 6, 7], X)
    with pytest.raises(ValueError, match="finite"):
        engine.step_one(5, [1.0, np.nan, 0.0])
    assert np.array_equal(engine._S, S0) and len(engine) == 1
    assert engine.step_many([], np.zeros((0, N_IN))).shape == (0, 2)


def test_model_layout_change_is_refused():
    model = make_model()
    engine = KeyedLSTM(model)
    model.add_inputs(1)
    with pytest.raises(RuntimeError, match="layout"):
        engine.step_many([1], np.ones((1, N_IN + 1)))


def test_constructor_checks():
    m = make_model()
    with pytest.raises(ValueError):
        KeyedLSTM(m, ttl_unit="days")
    with pytest.raises(ValueError):
        KeyedLSTM(m, max_keys=0)
    with pytest.raises(ValueError):
        KeyedLSTM(m, ttl=-1)
    with pytest.raises(TypeError):
        KeyedLSTM("model")


# ------------------------------------------------------------------ properties
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 5), st.floats(-5, 5)), min_size=1, max_size=40),
       st.integers(1, 4))
def test_property_batches_equal_per_event(events, n_batches):
    model = make_model("lstm", 2, n_outputs=1, dtype="float32")
    ref = clone(model)
    engine = KeyedLSTM(model)
    keys = [k for k, _ in events]
    X = np.array([[v, -v, 1.0] for _, v in events])
    states = {}
    bounds = np.linspace(0, len(keys), n_batches + 1).astype(int)
    for a, b in itertools.pairwise(bounds):
        if a == b:
            continue
        assert np.array_equal(engine.step_many(keys[a:b], X[a:b]), per_event_advance(ref, keys[a:b], X[a:b], states))


# ----------------------------------------------- the core's exp is unchanged
def _exp_binary_expansion(x):
    """The core's exp_clamped before 2^n came from its bit pattern (frozen copy)."""
    x = min(max(x, -44.0), 44.0)
    n = np.floor(x * activations._LOG2E + 0.5)
    r = (x - n * activations._LN2_HI) - n * activations._LN2_LO
    p = 1.0 / 6227020800.0
    for c in (479001600.0, 39916800.0, 3628800.0, 362880.0, 40320.0, 5040.0, 720.0, 120.0, 24.0, 6.0):
        p = p * r + 1.0 / c
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    a, e = abs(n), 1.0
    for bit, f in ((32.0, 4294967296.0), (16.0, 65536.0), (8.0, 256.0), (4.0, 16.0), (2.0, 4.0), (1.0, 2.0)):
        if a >= bit:
            e *= f
            a -= bit
    return p * e if n >= 0.0 else p / e


def test_exp_clamped_bits_unchanged():
    rng = np.random.default_rng(0)
    xs = np.concatenate([rng.uniform(-50, 50, 3000), rng.normal(0, 3, 3000),
                         (np.arange(-66, 66)[:, None] * np.log(2) + np.array([-1e-12, 0.0, 1e-12])).ravel(),
                         [0.0, -0.0, 44.0, -44.0, 1e300, -1e300, np.inf, -np.inf]])
    for x in xs:
        assert activations.exp_clamped(float(x)) == _exp_binary_expansion(float(x)), x
    for x in xs[np.abs(xs) < 1e38].astype(np.float32):
        assert activations.exp_clamped(x) == _exp_binary_expansion(float(x)), x
    assert np.isnan(activations.exp_clamped(np.nan))


# ------------------------------------------------------------------- key kinds
def test_integer_keys_are_one_key_space():
    model = make_model()
    ref = clone(model)
    engine = KeyedLSTM(model)
    big = 2 ** 70  # beyond int64: kept in the dict
    keys = [5, np.int64(5), np.uint8(5), "5", big, True, 5.5, -(2 ** 63), 2 ** 63 - 1]
    X = np.random.default_rng(8).normal(size=(len(keys), N_IN))
    engine.step_many(keys, X)
    # 5, np.int64(5) and np.uint8(5) are one key; "5", big, True, 5.5 each their own
    want_keys = [5, 5, 5, "5", big, "bool", 5.5, -(2 ** 63), 2 ** 63 - 1]
    states = {}
    per_event_advance(ref, want_keys, X, states)
    assert len(engine) == 7
    assert np.array_equal(engine.state(5).h, states[5].h)
    assert np.array_equal(engine.state(True).h, states["bool"].h)
    assert np.array_equal(engine.state(np.int16(5)).h, states[5].h)
    u = np.array([2 ** 64 - 1, 3], dtype=np.uint64)   # does not fit int64: the general path
    engine.step_many(u, np.ones((2, N_IN)))
    assert 2 ** 64 - 1 in engine and 3 in engine
    twin = KeyedLSTM.from_snapshot(engine.snapshot())
    assert set(map(repr, twin.keys())) == set(map(repr, engine.keys()))


def test_integer_table_under_churn_matches_a_dict():
    """Insertions, forgets, LRU evictions and sweeps against a plain-dict model of the keys."""
    rng = np.random.default_rng(9)
    engine = KeyedLSTM(make_model(), capacity=1, max_keys=300)
    alive = {}
    for step in range(60):
        ks = rng.integers(-500, 500, rng.integers(1, 80))
        engine.step_many(ks, np.ones((ks.size, N_IN)))
        for k in ks.tolist():
            alive[k] = step
        held = set(engine.keys())
        assert set(ks.tolist()) <= held <= set(alive) and len(held) == len(engine) <= 300
        evicted = set(alive) - held
        if evicted:  # the least recently used went first
            assert max(alive[k] for k in evicted) <= min(alive[k] for k in held)
        alive = {k: alive[k] for k in held}
        for k in rng.integers(-500, 500, 10).tolist():
            assert engine.forget(k) == (k in alive)
            alive.pop(k, None)
            assert k not in engine
        rows = [engine._row_any(k) for k in engine.keys()]  # noqa: SIM118  (KeyedLSTM has no __iter__)
        assert len(set(rows)) == len(rows) == len(alive)
    assert engine._TK.shape[0] <= 4096


def test_step_one_fast_paths_match():
    model = make_model(n_outputs=1)
    ref = clone(model)
    for kw in ({}, {"ttl": 3, "ttl_unit": "calls"}):
        m, r = clone(model), clone(ref)
        engine = KeyedLSTM(m, **kw)
        rng = np.random.default_rng(10)
        states = {}
        keys = [int(k) for k in rng.integers(0, 4, 40)] + ["s", "s", 2]
        X = rng.normal(size=(len(keys), N_IN))
        got = [engine.step_one(k, x) for k, x in zip(keys, X)]
        if not kw:
            assert np.array_equal(np.array(got), per_event_advance(r, keys, X, states)[:, 0])
        with pytest.raises(ValueError, match="key 2: input has 2 values"):
            engine.step_one(2, [1.0, 2.0])
        with pytest.raises(ValueError, match="finite"):
            engine.step_one("s", [1.0, np.nan, 2.0])
