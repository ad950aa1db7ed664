"""Property tests: shapes, bad inputs, and garbage streams never poison a model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamlstm import InputError, OnlineLSTM

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

anything_float = st.floats(allow_nan=True, allow_infinity=True, width=64)
wild_float = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300),
    st.sampled_from([0.0, -0.0, 1e-300, -1e-300, 1e300, -1e300, 5e-324]),
)


def _finite_model(m: OnlineLSTM) -> bool:
    """Weights and optimizer moments finite (the gradient block may show a refused gradient)."""
    n = m._n_par
    return bool(np.isfinite(m._P[:n]).all() and np.isfinite(m._P[2 * n:]).all())


@SETTINGS
@given(
    n_in=st.integers(1, 4), n_out=st.integers(1, 3), hidden=st.integers(1, 6), layers=st.integers(1, 2),
    cell=st.sampled_from(["lstm", "rnn"]), T=st.integers(1, 12), dtype=st.sampled_from(["float64", "float32"]),
)
def test_shapes(n_in, n_out, hidden, layers, cell, T, dtype):
    m = OnlineLSTM(n_inputs=n_in, n_outputs=n_out, hidden=hidden, layers=layers, cell=cell, dtype=dtype, bptt=4)
    X = np.random.default_rng(0).normal(size=(T, n_in))
    Y = np.random.default_rng(1).normal(size=(T, n_out))
    assert m.learn_many(X, Y).shape == (T, n_out)
    assert m.predict_many(X).shape == (T, n_out)
    one = m.predict_one(X[0])
    if n_out == 1:
        assert isinstance(one, float)
    else:
        assert one.shape == (n_out,)
    assert m.state.h.shape == (layers, hidden)


@SETTINGS
@given(values=st.lists(anything_float, min_size=0, max_size=5))
def test_any_input_vector_is_accepted_or_refused_cleanly(values):
    m = OnlineLSTM(n_inputs=3, hidden=3)
    ok = len(values) == 3 and all(math.isfinite(v) for v in values)
    if ok:
        m.learn_one(values, 1.0)
        assert m.n_steps == 1
    else:
        with pytest.raises(ValueError) as info:
            m.learn_one(values, 1.0)
        message = str(info.value)
        assert ("expected 3" in message) or ("not a finite number" in message)
        assert m.n_steps == 0
    assert _finite_model(m)


@SETTINGS
@given(
    rows=st.lists(st.tuples(wild_float, wild_float, st.one_of(wild_float, st.just(float("nan")))), min_size=1, max_size=40),
    optimizer=st.sampled_from(["adam", "sgd", "rmsprop"]),
    standardize=st.booleans(), clip=st.sampled_from([None, 1.0]), dtype=st.sampled_from(["float64", "float32"]),
)
def test_garbage_stream_never_makes_nan_weights(rows, optimizer, standardize, clip, dtype):
    """Huge, tiny and signed-zero values, with NaN targets refused along the way."""
    m = OnlineLSTM(n_inputs=2, hidden=4, optimizer=optimizer, lr=0.5, clip=clip, dtype=dtype,
                   standardize_inputs=standardize, standardize_targets=standardize, bptt=3)
    for a, b, y in rows:
        try:
            m.learn_one([a, b], y)
        except ValueError:
            assert not math.isfinite(y)
        assert _finite_model(m)
        m.predict_one([a, b])  # never raises for finite input, whatever the output is


@SETTINGS
@given(mask=st.lists(st.booleans(), min_size=1, max_size=25), bad_row=st.integers(0, 24))
def test_block_refusal_keeps_the_rows_before(mask, bad_row):
    T = len(mask)
    X = np.linspace(-1, 1, T)[:, None]
    Y = np.cos(np.arange(T))
    if bad_row < T:
        X[bad_row, 0] = np.inf
    m = OnlineLSTM(n_inputs=1, hidden=3, bptt=4)
    twin = OnlineLSTM(n_inputs=1, hidden=3, bptt=4)
    if bad_row < T:
        with pytest.raises(InputError) as info:
            m.learn_many(X, Y, mask)
        assert info.value.rows_done == bad_row
        kept = twin.learn_many(X[:bad_row], Y[:bad_row], mask[:bad_row]) if bad_row else np.empty((0, 1))
        np.testing.assert_array_equal(info.value.predictions, kept)
        assert m.n_steps_stream == bad_row
    else:
        np.testing.assert_array_equal(m.learn_many(X, Y, mask), twin.learn_many(X, Y, mask))
