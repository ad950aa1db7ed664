"""Behaviour of OnlineLSTM beyond the maths: purity, persistence, robustness, learning."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from streamlstm import FormatError, InputError, OnlineLSTM, persistence


def _stream(n: int, n_in: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_in)) * 3 + 10
    Y = np.sin(np.cumsum(X[:, 0]) * 0.1) * 5 + 50
    return X, Y


def _snapshot(m: OnlineLSTM) -> dict[str, np.ndarray]:
    """Everything a model keeps, less the scratch fields that every call writes."""
    from streamlstm._kernels import layout as K
    F = m._F.copy()
    F[m._fout:m._fout + m.n_outputs] = 0.0
    fxs = int(m._I[K.I_FX_SCRATCH])
    F[fxs:fxs + 3 * m.n_inputs] = 0.0
    return {"P": m._P.copy(), "R": m._R[:m._state_end].copy(), "F": F, "I": m._I.copy()}


def _assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for k in a:
        if k == "I":  # the status field of I records the last refusal; everything else must match
            from streamlstm._kernels import layout as K
            a_i, b_i = a[k].copy(), b[k].copy()
            a_i[[K.I_STATUS, K.I_ERRPOS]] = 0
            b_i[[K.I_STATUS, K.I_ERRPOS]] = 0
            np.testing.assert_array_equal(a_i, b_i)
        else:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_predict_one_is_pure(dtype, cell):
    X, Y = _stream(50)
    m = OnlineLSTM(n_inputs=2, hidden=6, layers=2, cell=cell, dtype=dtype, bptt=4)
    m.learn_many(X[:40], Y[:40])
    before = _snapshot(m)
    a = m.predict_one(X[40])
    b = m.predict_one(X[40])
    many = m.predict_many(X[40:45])
    assert a == b
    assert many[0, 0] == a
    _assert_same(before, _snapshot(m))
    # the look-ahead is exactly what advancing would give
    assert m.advance(X[40]) == a


def test_predict_many_equals_rolled_advance():
    X, Y = _stream(30)
    m = OnlineLSTM(n_inputs=2, hidden=5, bptt=4)
    m.learn_many(X[:20], Y[:20])
    twin = copy.deepcopy(m)
    rolled = m.predict_many(X[20:])
    advanced = twin.advance_many(X[20:])
    np.testing.assert_array_equal(rolled, advanced)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop"])
def test_save_load_resume_is_bit_identical(tmp_path, dtype, optimizer):
    X, Y = _stream(120)
    mask = np.arange(120) % 3 != 0
    kw = dict(n_inputs=2, hidden=7, layers=2, bptt=8, update_every=2, optimizer=optimizer, lr=1e-2, dtype=dtype, l2=1e-4)
    straight = OnlineLSTM(**kw)
    p_straight = straight.learn_many(X, Y, mask)

    first = OnlineLSTM(**kw)
    p1 = first.learn_many(X[:61], Y[:61], mask[:61])  # stops mid-window, labels pending
    first.save(tmp_path / "m.slstm")
    resumed = OnlineLSTM.load(tmp_path / "m.slstm")
    p2 = resumed.learn_many(X[61:], Y[61:], mask[61:])
    np.testing.assert_array_equal(np.vstack([p1, p2]), p_straight)
    _assert_same(_snapshot(straight), _snapshot(resumed))
    assert resumed.get_params() == straight.get_params()


def test_pickle_and_deepcopy_continue_identically():
    X, Y = _stream(80)
    m = OnlineLSTM(n_inputs=2, hidden=5, bptt=6)
    m.learn_many(X[:40], Y[:40])
    for twin in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        np.testing.assert_array_equal(twin.learn_many(X[40:], Y[40:]), copy.deepcopy(m).learn_many(X[40:], Y[40:]))


def test_corrupt_truncated_and_newer_files_are_refused(tmp_path):
    m = OnlineLSTM(n_inputs=1, hidden=3)
    blob = m.to_bytes()
    with pytest.raises(FormatError, match="truncated"):
        OnlineLSTM.from_bytes(blob[:-10])
    with pytest.raises(FormatError, match="truncated"):
        OnlineLSTM.from_bytes(blob[:20])
    flipped = bytearray(blob)
    flipped[len(flipped) // 2] ^= 0xFF
    with pytest.raises(FormatError, match="corrupt"):
        OnlineLSTM.from_bytes(bytes(flipped))
    with pytest.raises(FormatError, match="not a streamlstm file"):
        OnlineLSTM.from_bytes(b"PK\x03\x04" + blob)
    newer = bytearray(blob)
    newer[len(persistence.MAGIC)] = persistence.FORMAT_VERSION + 1
    with pytest.raises(FormatError, match="newer streamlstm"):
        OnlineLSTM.from_bytes(bytes(newer))
    other = persistence.dumps("KeyedStates", {}, {})
    with pytest.raises(FormatError, match="not a 'OnlineLSTM'"):
        OnlineLSTM.from_bytes(other)
    path = tmp_path / "m.slstm"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(FormatError, match=str(path.name)):
        OnlineLSTM.load(path)


def test_file_loads_without_pickle():
    """The format is a JSON header plus raw arrays: no pickle opcode can run."""
    blob = OnlineLSTM(n_inputs=1, hidden=3).to_bytes()
    kind, meta, arrays = persistence.loads(blob)
    assert kind == "OnlineLSTM" and meta["config"]["hidden"] == 3
    assert all(a.dtype != object for a in arrays.values())


def test_bad_inputs_name_the_position_and_change_nothing():
    m = OnlineLSTM(n_inputs=3, hidden=4)
    m.learn_one([1.0, 2.0, 3.0], 1.0)
    before = _snapshot(m)
    with pytest.raises(ValueError, match="position 1 is nan"):
        m.learn_one([1.0, float("nan"), 3.0], 1.0)
    with pytest.raises(ValueError, match="position 2 is inf"):
        m.predict_one([1.0, 2.0, float("inf")])
    with pytest.raises(ValueError, match="has 2 values, expected 3"):
        m.advance([1.0, 2.0])
    with pytest.raises(ValueError, match="target position 0 is nan"):
        m.learn_one([1.0, 2.0, 3.0], float("nan"))
    with pytest.raises(ValueError, match="lag 5 is out of range"):
        m.label(1.0, lag=5)
    with pytest.raises(TypeError, match="sequence of 3 numbers"):
        m.predict_one(["a", "b", "c"])
    _assert_same(before, _snapshot(m))


def test_block_error_keeps_rows_before_it():
    X, Y = _stream(10, n_in=1)
    X[6, 0] = np.nan
    m = OnlineLSTM(n_inputs=1, hidden=4)
    with pytest.raises(InputError, match="row 6: input position 0 is nan") as info:
        m.learn_many(X, Y)
    assert info.value.rows_done == 6
    assert info.value.predictions.shape == (6, 1)
    assert m.n_steps_stream == 6
    twin = OnlineLSTM(n_inputs=1, hidden=4)
    np.testing.assert_array_equal(twin.learn_many(X[:6], Y[:6]), info.value.predictions)


def test_cross_entropy_targets_are_checked():
    m = OnlineLSTM(n_inputs=1, n_outputs=3, loss="cross_entropy", hidden=4)
    p = m.learn_one([0.5], 2)
    assert p.shape == (3,) and abs(p.sum() - 1) < 1e-12
    with pytest.raises(ValueError, match="not a class index"):
        m.learn_one([0.5], 3)
    with pytest.raises(ValueError, match="not a class index"):
        m.label(1.5)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_unrepresentable_gradient_skips_the_update_and_keeps_weights(dtype):
    """A gradient whose square overflows the dtype is skipped and counted, weights untouched.

    Targets are clipped to ±1e15 (standardised units), so in float64 the guard needs
    huge weights to trip; in float32 a huge raw target suffices.
    """
    m = OnlineLSTM(n_inputs=1, hidden=4, standardize_targets=False, standardize_inputs=False, clip=None, dtype=dtype)
    m.learn_one([0.1], 1.0)
    if dtype == "float64":
        w = m.weights()
        w["readout.weight"][:] = 1e160
        m.set_weights(w)
    w = m.weights()
    m.learn_one([0.1], 1e300)
    assert m.n_skipped_updates == 1
    for k, v in m.weights().items():
        np.testing.assert_array_equal(v, w[k])
    n = m._n_par  # weights and optimizer moments stay finite; gradients() shows what was refused
    assert np.isfinite(m._P[:n]).all() and np.isfinite(m._P[2 * n:]).all()


def test_state_swap_serves_many_streams():
    X, _ = _stream(20)
    m = OnlineLSTM(n_inputs=2, hidden=5)
    a, b = m.state, m.state
    outs_interleaved = []
    for t in range(10):
        m.state = a
        oa = m.advance(X[t])
        a = m.state
        m.state = b
        ob = m.advance(X[10 + t])
        b = m.state
        outs_interleaved.append((oa, ob))
    m.reset_state()
    alone_a = [m.advance(X[t]) for t in range(10)]
    m.reset_state()
    alone_b = [m.advance(X[10 + t]) for t in range(10)]
    assert [o[0] for o in outs_interleaved] == alone_a
    assert [o[1] for o in outs_interleaved] == alone_b


def test_add_inputs_keeps_old_predictions_and_trains():
    X, Y = _stream(60)
    m = OnlineLSTM(n_inputs=2, hidden=5)
    m.learn_many(X[:50], Y[:50])
    before = m.predict_one(X[50])
    m.add_inputs(2)
    assert m.n_inputs == 4
    padded = np.concatenate([X[50], [0.0, 0.0]])
    # standardised new columns are 0 while their statistics are empty
    assert m.predict_one(padded) == before
    m.learn_many(np.hstack([X[50:], np.ones((10, 2))]), Y[50:])
    assert np.isfinite(m.weights()["weight_ih_l0"]).all()


def test_add_outputs_grows_the_readout():
    m = OnlineLSTM(n_inputs=1, n_outputs=2, loss="cross_entropy", hidden=4)
    m.learn_one([0.1], 1)
    m.add_outputs(1)
    p = m.learn_one([0.2], 2)
    assert p.shape == (3,)
    assert m.weights()["readout.weight"].shape == (3, 4)


def test_from_torch_arrays_match_pytorch():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 6, num_layers=2).double()
    head = torch.nn.Linear(6, 2).double()
    X = np.random.default_rng(1).normal(size=(25, 3))
    with torch.no_grad():
        out, _ = lstm(torch.from_numpy(X)[:, None, :])
        expected = head(out[:, 0, :]).numpy()
    m = OnlineLSTM.from_torch({k: v.numpy() for k, v in lstm.state_dict().items()},
                              {k: v.numpy() for k, v in head.state_dict().items()})
    got = np.array([m.advance(x) for x in X])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_seed_determinism():
    a, b = OnlineLSTM(n_inputs=2, hidden=5, seed=7), OnlineLSTM(n_inputs=2, hidden=5, seed=7)
    c = OnlineLSTM(n_inputs=2, hidden=5, seed=8)
    assert all((a.weights()[k] == b.weights()[k]).all() for k in a.weights())
    assert any((a.weights()[k] != c.weights()[k]).any() for k in a.weights())


@pytest.mark.parametrize("kwargs, message", [
    (dict(hidden=0), "hidden must be an integer >= 1"),
    (dict(cell="gru"), "cell must be one of"),
    (dict(update_every=8, bptt=4), "must not exceed bptt"),
    (dict(lr=-1.0), "lr must be a finite number"),
    (dict(clip=0.0), "clip must be a positive number"),
    (dict(dtype="float16"), "dtype must be"),
    (dict(loss="cross_entropy"), "n_outputs >= 2"),
])
def test_constructor_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OnlineLSTM(n_inputs=1, **kwargs)


def test_learns_a_noisy_sine():
    """Acceptance: after 5,000 events the one-step MAE is below 20% of the series' std."""
    rng = np.random.default_rng(0)
    n = 5000
    t = np.arange(n + 1)
    series = 10 + 3 * np.sin(2 * np.pi * t / 25) + 0.3 * rng.normal(size=n + 1)
    m = OnlineLSTM(n_inputs=1, hidden=32, lr=3e-3, seed=0)
    preds = m.learn_many(series[:-1], series[1:])[:, 0]
    mae = np.mean(np.abs(preds[-1000:] - series[1:][-1000:]))
    assert mae < 0.2 * series.std(), (mae, series.std())


def test_extreme_finite_values_leave_statistics_and_state_finite():
    m = OnlineLSTM(n_inputs=1, hidden=4)
    for v in (1.0, 2.0, 1e308, -1e308, 3.0):
        m.learn_one([v], v)
    assert np.isfinite(m.state.h).all() and np.isfinite(m.state.c).all()
    count, mean, _var = m.input_statistics()
    assert count.tolist() == [3.0] and mean.tolist() == [2.0]  # the two extremes were left out
    assert np.isfinite(m.predict_one([2.0]))


def test_frozen_statistics_survive_save_and_serve_purely(tmp_path):
    X, Y = _stream(40)
    m = OnlineLSTM(n_inputs=2, hidden=4)
    m.learn_many(X[:30], Y[:30])
    m.statistics_frozen = True
    stats = m.input_statistics()
    m.advance_many(X[30:])
    np.testing.assert_array_equal(m.input_statistics()[1], stats[1])
    m.save(tmp_path / "m.slstm")
    assert OnlineLSTM.load(tmp_path / "m.slstm").statistics_frozen
