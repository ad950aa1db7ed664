"""The Flink adapter's forecasting engine driven in process (no pyflink, no JVM, no flink
marker: part of the default test run): every output value equals the core's
:class:`Forecaster` and :class:`AnomalyScorer` fed each key's rows in Python (``==`` on round-trip repr strings), with and without the memo of
decoded forecasters, and after Flink state is rewound under a live engine.

The reference (``flink_helpers.reference_forecasting``) is written from the core's public
API alone, one ``Forecaster`` and one ``AnomalyScorer`` per key kept alive in memory (no
bytes round trip), the columns as ``docs/flink.md`` defines them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from flink_helpers import FAST, reference_forecasting, write_series

from streamlstm import AnomalyScorer
from streamlstm.adapters.flink import BadRow, ForecastingEngine, forecasting_engine


def drive(engine, lines):
    """The engine as Flink drives it: per key, the state bytes it returned last."""
    state, out = {}, []
    for line in lines:
        key = line.split(",", 1)[0]
        new, o = engine.process(state.get(key), line)
        if new is not None:
            state[key] = new
        out.append(o)
    return out, state


@pytest.mark.parametrize("ahead,levels,anomaly,n_features", [
    (1, (), False, 0),
    (1, (0.8, 0.95), True, 0),
    (3, (0.9,), True, 2),
])
def test_forecasting_engine_equals_the_core_per_key(ahead, levels, anomaly, n_features):
    lines = write_series(420, 4, n_features, seed=ahead)
    want = reference_forecasting(lines, ahead, levels, anomaly, n_features)
    assert sum(1 for w in want if w.endswith(",") or ",," in w) < len(want)   # values, not only empty cells
    memo = ForecastingEngine(ahead, levels, anomaly, n_features, params=FAST)
    got, _ = drive(memo, lines)
    assert got == want
    assert memo.n_decoded == 0           # every event reused its decoded forecaster
    no_memo = ForecastingEngine(ahead, levels, anomaly, n_features, params=FAST, cache_mb=0)
    got, _ = drive(no_memo, lines)
    assert got == want                   # every event through the key's bytes: bit-identical
    assert no_memo.n_decoded > 400 - 4 - 50
    if anomaly:
        scores = [float(r.rsplit(",", 1)[1]) for r in got if not r.endswith(",")]
        assert len(scores) > 300 and all(0.0 <= s <= 1.0 for s in scores)
    if levels:
        lo, hi = (float(v) for v in got[-1].split(",")[3:5])
        assert lo < float(got[-1].split(",")[2]) < hi


def test_forecasting_engine_with_the_lstm_expert_and_the_factory():
    lines = write_series(160, 2, seed=9, missing=0.0)
    want = reference_forecasting(lines, 2, (0.9,), True, params={})
    engine = forecasting_engine('{"ahead": 2, "interval": [0.9], "anomaly": true}', "fail", "0")
    assert drive(engine, lines)[0] == want


def test_forecasting_engine_memo_survives_a_rewind_of_flink_state():
    # a restore: Flink's state goes back to a checkpoint (keys first seen later vanish) and
    # the rows after it are replayed through the same engine object; output rows after the
    # checkpoint must equal an uninterrupted run's
    lines = write_series(300, 3, seed=4)
    want = reference_forecasting(lines, 2, (0.9,), True)
    engine, state, out = ForecastingEngine(2, (0.9,), True, params=FAST), {}, []
    for i, line in enumerate(lines):
        if i == 120:
            checkpoint = dict(state)
        if i == 200:
            state, out = dict(checkpoint), out[:120]
            for j in range(120, 200):
                key = lines[j].split(",", 1)[0]
                new, o = engine.process(state.get(key), lines[j])
                if new is not None:
                    state[key] = new
                out.append(o)
        key = line.split(",", 1)[0]
        new, o = engine.process(state.get(key), line)
        if new is not None:
            state[key] = new
        out.append(o)
    assert out == want
    assert engine.n_decoded > 0          # the rewound keys were decoded from Flink's bytes


def test_forecasting_engine_rows_and_state_are_checked():
    engine = ForecastingEngine(1, params=FAST)
    with pytest.raises(BadRow, match=r"0 feature.*got 2 value"):
        engine.process(None, "a,1,2.0,3.0")            # a feature the job does not have
    with pytest.raises(BadRow):
        engine.process(None, "a,1,oops")
    with pytest.raises(BadRow, match="finite"):
        engine.process(None, "a,1,inf")                 # refused by the core
    skip = ForecastingEngine(1, params=FAST, on_bad_row="skip")
    assert skip.process(None, "key,time,y") == (None, None) and skip.n_bad == 1
    state, _ = engine.process(None, "a,1,2.0")
    with pytest.raises(RuntimeError, match="not a forecasting engine's key state"):
        engine.process(b"junk", "a,2,2.0")
    with pytest.raises(RuntimeError, match=r"other settings.*'horizon'"):
        ForecastingEngine(2, params=FAST).process(state, "a,2,2.0")
    with pytest.raises(RuntimeError, match="without --anomaly"):
        ForecastingEngine(1, anomaly=True, params=FAST).process(state, "a,2,2.0")
    with pytest.raises(ValueError, match="ahead"):
        ForecastingEngine(0)
    with pytest.raises(ValueError, match="interval level"):
        ForecastingEngine(1, interval=[1.5])


def test_a_savepoint_from_before_a_default_changed_resumes_its_keys_as_they_were_made():
    """max_season's default went from 48 to 288: key states written under 48 go on with it in a
    job that leaves max_season at its default (new keys get 288); a job that sets it refuses them."""
    lines = [f"a,{t},{10 + (t % 7) + 0.1 * t}" for t in range(60)]
    old_job = ForecastingEngine(1, params={**FAST, "max_season": 48})
    _, state = drive(old_job, lines[:40])
    job = ForecastingEngine(1, params=FAST)
    assert job.params["max_season"] == 288
    out, _ = drive_from(job, state, lines[40:])
    assert out == drive_from(old_job, state, lines[40:])[0]          # as the old job would have gone on
    new_key, _ = job.process(None, "b,1,3.0")
    assert ForecastingEngine(1, params=FAST)._decode("b", new_key)[0].max_season == 288
    with pytest.raises(RuntimeError, match=r"other settings.*'max_season'"):
        ForecastingEngine(1, params={**FAST, "max_season": 288}).process(state["a"], lines[40])
    with pytest.raises(RuntimeError, match=r"other settings.*'horizon', 'max_season'"):
        ForecastingEngine(2, params=FAST).process(state["a"], lines[40])


def drive_from(engine, state, lines):
    state = dict(state)
    out = []
    for line in lines:
        key = line.split(",", 1)[0]
        new, o = engine.process(state.get(key), line)
        state[key] = new
        out.append(o)
    return out, state


def test_anomaly_scorer_key_state_round_trip_and_checks():
    rng = np.random.default_rng(3)
    a, b = AnomalyScorer(n_keys=2), AnomalyScorer()
    for v in rng.normal(size=300):
        a.score(float(v), 0.0, key=1)
    b.set_key_state(0, a.key_state(1))
    assert (b.key_state(0) == a.key_state(1)).all()
    for v in rng.normal(size=50):
        assert b.score(float(v), 0.1) == a.score(float(v), 0.1, key=1)
    good = a.key_state(1)
    for row, field, value, match in [(0, 0, 1.5, "count 1.5"), (1, 1, -1.0, "scale -1.0 is negative"),
                                     (3, 4, 2.0, "peak"), (3, 3, -2.0, "values seen"), (2, 5, math.nan, "non-finite")]:
        bad = good.copy()
        bad[row, field] = value
        with pytest.raises(ValueError, match=match):
            b.set_key_state(0, bad)
    with pytest.raises(ValueError, match="expected float64"):
        b.set_key_state(0, good[:3])
    assert (b.key_state(0) == a.key_state(1)).all()   # nothing written by a refused state
