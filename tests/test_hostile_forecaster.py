"""Hostile forecaster files (issue 13): ``Forecaster.from_bytes`` and the CLI's engine
checkpoints refuse, with a ``FormatError`` (exit 2 for the CLI) naming the field, every
value that would crash, exhaust memory or silently corrupt the engine."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from streamlstm import Forecaster, persistence
from streamlstm.persistence import FormatError

KIND = "streamlstm.Forecaster"


def _trained() -> Forecaster:
    model = Forecaster(horizon=2, season=4, ar_orders=(2,), n_features=1, lstm_hidden=2)
    for t in range(30):
        for k in ("a", "b"):
            model.learn_one(10.0 + (t % 4) + (k == "b"), [0.1 * t], k)
    return model


@pytest.fixture(scope="module")
def blob() -> bytes:
    return _trained().to_bytes()


def _edit(blob: bytes, change) -> bytes:
    _, meta, arrays = persistence.loads(blob)
    change(meta, arrays)
    return persistence.dumps(KIND, meta, arrays)


def _set(where: str, name: str, value):
    def change(meta, arrays):
        if where == "param":
            meta["params"][name] = value
        elif where == "stream":
            meta["streams"][0][name] = value
        elif where == "meta":
            meta[name] = value
        else:
            arrays[name] = value(arrays[name]) if callable(value) else value
    return change


def _nan_at(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.reshape(-1)[0] = np.nan
    return a


HOSTILE = {
    # an index into the stream list that numpy would wrap or Python would raise IndexError on
    "lstm owner past the streams": (_set("meta", "lstm_owner", 7), "lstm_owner"),
    # int64 history: learn_one would truncate every new value (silent corruption)
    "integer history": (_set("array", "stream/0/history", lambda a: a.astype(np.int64)), "stream/0/history"),
    "history too short": (_set("array", "stream/0/history", lambda a: a[:3]), "stream/0/history"),
    "horizon without its arrays": (_set("param", "horizon", 10 ** 6), "agg/weights"),
    "ar order of a float": (_set("param", "ar_orders", [2.5]), "ar_orders"),
    "unknown setting": (_set("param", "bogus", 1), "params"),
    "missing setting": (lambda m, a: m["params"].pop("lstm"), "params"),
    "infinite ridge": (_set("param", "ridge", float("inf")), "ridge"),
    # the history kept grows with it: 2**62 would ask numpy for exabytes at the next key
    "max season past the limit": (_set("param", "max_season", 1 << 21), "max_season"),
    "negative count": (_set("stream", "n", -3), "'n'"),
    "string count": (_set("stream", "n", "30"), "'n'"),
    "another season": (_set("stream", "season", 5), "'season'"),
    "season of 0 after values": (_set("stream", "season", 0), "'season'"),
    "non-finite level": (_set("stream", "level", float("nan")), "'level'"),
    "list key": (_set("stream", "key", [1]), "key"),
    "duplicate key": (lambda m, a: m["streams"][1].update(key="a"), "twice"),
    "nan in covariance": (_set("array", "ar/0/P", _nan_at), "ar/0/P"),
    "negative weight": (_set("array", "agg/weights", lambda a: -a), "agg/weights"),
    "far horizons' second level of another shape": (_set("array", "agg/meta", lambda a: a[:1]), "agg/meta"),
    "negative squared regret of the second level": (_set("array", "agg/meta", lambda a: a * 0.0 - 1.0), "agg/meta"),
    "nan in the second level": (_set("array", "agg/meta", _nan_at), "agg/meta"),
    "profile of the wrong length": (_set("array", "stream/0/profile", lambda a: a[:2]), "stream/0/profile"),
    "holt-winters indices of the wrong length": (_set("array", "stream/0/hw_indices", lambda a: a[:1]),
                                                 "stream/0/hw_indices"),
    "nan in an LSTM state": (_set("array", "stream/1/lstm_buffer", _nan_at), "stream/1/lstm_buffer"),
    "negative LSTM step count": (_set("array", "stream/1/lstm_counters", lambda a: a * 0 - 1), "LSTM state"),
    "LSTM state of another size": (_set("array", "stream/1/lstm_buffer", lambda a: a[:4]), "stream/1/lstm_buffer"),
    "negative update count": (_set("array", "ar/updates", lambda a: a - 10 ** 6), "ar/updates"),
    "unexpected array": (_set("array", "stream/9/history", np.zeros(3)), "unexpected arrays"),
    "positive with a value <= 0": (_set("array", "stream/0/history", lambda a: a * 0.0), "positive"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_forecaster_is_refused_naming_the_field(blob, case):
    change, named = HOSTILE[case]
    with pytest.raises(FormatError, match="forecaster") as info:
        Forecaster.from_bytes(_edit(blob, change))
    assert named in str(info.value)


def test_a_file_from_before_the_far_horizons_second_level_loads_and_starts_it_afresh():
    model = Forecaster(horizon=4, season=4, lstm=False)
    for t in range(40):
        model.learn_one(10.0 + (t % 4) + 0.1 * t)
    assert (model._agg.meta[1] > 0).all()
    old = Forecaster.from_bytes(_edit(model.to_bytes(), lambda meta, arrays: arrays.pop("agg/meta")))
    assert np.array_equal(old._agg.meta, np.zeros((2, 2)))
    assert np.array_equal(old._agg.weights, model._agg.weights)
    assert np.array_equal(old.forecast(), model.forecast())
    old.learn_one(14.5)
    assert np.isfinite(old.forecast()).all()


def test_a_season_that_would_allocate_terabytes_per_new_key_is_refused():
    """No stream saved: a new key would allocate 3 * season values at its first value."""
    empty = Forecaster(season=4, lstm=False).to_bytes()
    with pytest.raises(FormatError, match="allocate"):
        Forecaster.from_bytes(_edit(empty, _set("param", "season", 10 ** 9)))


def test_an_lstm_expert_of_other_settings_is_refused(blob):
    other = Forecaster(horizon=2, season=4, ar_orders=(2,), n_features=1, lstm_hidden=3)
    lstm = np.frombuffer(other._lstm.model.to_bytes(), dtype=np.uint8)
    with pytest.raises(FormatError, match="lstm/model"):
        Forecaster.from_bytes(_edit(blob, _set("array", "lstm/model", lstm.copy())))


def test_valid_files_still_round_trip_and_continue_bit_identically(blob):
    model = Forecaster.from_bytes(blob)
    twin = Forecaster.from_bytes(model.to_bytes())
    assert twin.to_bytes() == model.to_bytes() == blob
    for t in range(5):
        for k in ("b", "a", "new"):
            model.learn_one(11.0 + t, [0.5], k)
            twin.learn_one(11.0 + t, [0.5], k)
            assert np.array_equal(model.forecast(k, [[0.5]] * 2), twin.forecast(k, [[0.5]] * 2))


def test_the_owner_index_crash_is_gone_in_a_fresh_process(blob, tmp_path):
    """The reproduction: an out-of-range ``lstm_owner`` raised ``IndexError`` out of
    ``from_bytes`` (a crash of any caller catching ``FormatError``)."""
    path = tmp_path / "owner.bin"
    path.write_bytes(_edit(blob, _set("meta", "lstm_owner", 7)))
    code = textwrap.dedent(f"""
        from streamlstm import Forecaster, FormatError
        try:
            Forecaster.from_bytes(open({str(path)!r}, "rb").read())
        except FormatError as exc:
            print("refused:", exc)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "refused:" in run.stdout and "lstm_owner" in run.stdout


# ------------------------------------------------------------------ CLI engine checkpoints
def _engine(keyed: bool):
    pytest.importorskip("click")
    from streamlstm.adapters._forecasting import ForecastEngine

    job = {"target": "y", "features": ["x"], "key": "k" if keyed else None, "ahead": 2}
    eng = ForecastEngine(job, {"lstm_hidden": 2})
    model = eng.model
    for t in range(6):
        for k in (("a", "b") if keyed else (None,)):
            model.learn_one(1.0 + t, [0.5], k)
            eng.ring[k] = np.full(2, float(t))
    eng.imputer.sum[:] = 3.0
    eng.imputer.count[:] = 2
    _, meta, arrays = persistence.loads(eng.snapshot({}))
    return ForecastEngine, meta, arrays


@pytest.mark.parametrize("keyed", [False, True])
@pytest.mark.parametrize("edit, named", [
    (lambda m: m.update(keys=m["keys"][:1] * 2), "keys"),
    (lambda m: m.update(keys=["zz"] * len(m["keys"])), "keys"),
    (lambda m: m.update(learned=-1), "learned"),
    (lambda m: m["imputer"].update(sum=[float("nan")]), "imputer"),
    (lambda m: m["imputer"].update(count=[1, 2]), "imputer"),
])
def test_engine_checkpoint_fields_are_checked(keyed, edit, named):
    from streamlstm.adapters._csvio import CliError

    engine_cls, meta, arrays = _engine(keyed)
    assert engine_cls.restore(meta, arrays, True).ring.keys() == set(meta["keys"])
    edit(meta)
    with pytest.raises(CliError, match=named) as info:
        engine_cls.restore(meta, arrays, True)
    assert info.value.code == 2


@pytest.mark.parametrize("per_key", [False, True])
@pytest.mark.parametrize("edit", [
    lambda m: m["imputer"].update(sum=[1.0]),            # one feature short: found by the fuzzer
    lambda m: m["imputer"].update(sum=[1.0, float("inf")]),
    lambda m: m["imputer"].update(count=[1, -2]),
    lambda m: m.update(imputer=[1.0, 2.0]),
])
def test_the_lstm_engines_saved_imputer_is_checked(per_key, edit):
    """The ``--model lstm`` / regression engine checks its saved imputer as the forecasting
    engine does: a mismatched one was accepted and failed in the next block with a NumPy
    broadcasting error."""
    pytest.importorskip("click")
    from streamlstm.adapters._csvio import CliError
    from streamlstm.adapters._runner import Engine

    job = {"target": "y", "features": ["x1", "x2"], "key": "k", "ahead": 0, "per_key_models": per_key}
    eng = Engine(job, {"hidden": 2, "bptt": 2})
    eng.imputer.sum[:] = 3.0
    eng.imputer.count[:] = 2
    _, meta, arrays = persistence.loads(eng.snapshot({}))
    assert Engine.restore(meta, arrays, True).imputer.sum.tolist() == [3.0, 3.0]
    edit(meta)
    with pytest.raises(CliError, match="imputer") as info:
        Engine.restore(meta, arrays, True)
    assert info.value.code == 2


@pytest.mark.parametrize("keyed", [False, True])
@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_an_infinite_forecast_in_a_checkpoints_ring_is_refused(keyed, value):
    """Found by the long fuzz profile: a ring forecast of inf passed the checks and failed in
    the anomaly scorer at the next value ("forecast inf must be finite"). NaN stays allowed:
    it stands for a forecast not made yet."""
    from streamlstm.adapters._csvio import CliError
    from streamlstm.adapters._runner import check_checkpoint

    _, meta, arrays = _engine(keyed)
    meta["job"].setdefault("model", "engine")  # what the CLI records for the engine's jobs
    check_checkpoint(meta, arrays, "ck")
    arrays["ring"][0, 0] = np.nan
    check_checkpoint(meta, arrays, "ck")
    arrays["ring"][0, 0] = value
    with pytest.raises(CliError, match="'ring' holds an infinite value") as info:
        check_checkpoint(meta, arrays, "ck")
    assert info.value.code == 2
