"""Issue 13, the core's half: no file, byte string, state or setting can crash the process,
exhaust memory or silently corrupt a model. Each class of attack is tried through every way
in: ``load``, ``from_bytes``, ``model.state = ...``, keyed snapshots, per-key state bytes,
the Flink learning engine and ``streamlstm run --load``."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest

from streamlstm import FormatError, KeyedLSTM, OnlineLSTM, persistence
from streamlstm.settings import ModelSettings, describe, names


def _ce_model(**kw) -> OnlineLSTM:
    """A cross-entropy model with a label pending in its ring (the update waits for 2 steps)."""
    m = OnlineLSTM(n_inputs=1, n_outputs=3, hidden=4, loss="cross_entropy", bptt=4, update_every=2, **kw)
    m.advance([0.1])
    m.label(1, 0)
    return m


def _rewrite(blob: bytes, change) -> bytes:
    """The container with ``change(meta, arrays)`` applied and the CRC recomputed."""
    kind, meta, arrays = persistence.loads(blob)
    change(meta, arrays)
    return persistence.dumps(kind, meta, arrays)


def _bad_class(value: float):
    def change(meta, arrays):
        flag = arrays["ring/flag"][:, 0]
        arrays["ring/y"][flag == 1, 0] = value
    return change


# ------------------------------------------------------------------ 1. index values
SEGV_SCRIPT = textwrap.dedent("""
    import sys
    from streamlstm import OnlineLSTM, persistence
    m = OnlineLSTM(n_inputs=1, n_outputs=3, hidden=4, loss="cross_entropy", bptt=4, update_every=2)
    m.advance([0.1]); m.label(1, 0)
    kind, meta, arrays = persistence.loads(m.to_bytes())
    flag = arrays["ring/flag"][:, 0]
    arrays["ring/y"][flag == 1, 0] = float(sys.argv[1])
    try:
        t = OnlineLSTM.from_bytes(persistence.dumps(kind, meta, arrays))
    except persistence.FormatError as exc:
        print("refused:", exc)
        sys.exit(0)
    t.learn_one([0.2], 0)
    print("learned")
""")


@pytest.mark.parametrize("value", ["1e12", "4", "-1", "1.5"])
def test_out_of_range_class_index_in_a_file_is_refused_not_a_segfault(value):
    """0.1.0 died of SIGSEGV (1e12) or corrupted memory silently (4 of 3 classes) here."""
    run = subprocess.run([sys.executable, "-c", SEGV_SCRIPT, value], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert "refused:" in run.stdout and "not a class index in [0, 3)" in run.stdout, run.stdout


@pytest.mark.parametrize("value", [1e12, 3.0, -1.0, 0.5, np.nan])
def test_bad_class_index_refused_through_every_way_in(tmp_path, value):
    m = _ce_model()
    bad = _rewrite(m.to_bytes(), _bad_class(value))
    with pytest.raises(FormatError, match=r"class index|not finite|non-finite"):
        OnlineLSTM.from_bytes(bad)
    (tmp_path / "m.slstm").write_bytes(bad)
    with pytest.raises(FormatError, match=r"m\.slstm"):
        OnlineLSTM.load(tmp_path / "m.slstm")
    # model.state = ...
    s = m.state
    ring = m._state_spec[0]
    slot, flag_at, y_at = m._state_spec[2], m._state_spec[3], m._state_spec[4]
    pending = [k for k in range(m.bptt) if s.buffer[ring + k * slot + flag_at] == 1.0]
    assert pending
    s.buffer[ring + pending[0] * slot + y_at] = value
    before = m.state
    with pytest.raises(ValueError, match=r"class index|non-finite"):
        m.state = s
    np.testing.assert_array_equal(m.state.buffer, before.buffer)  # nothing changed
    # keyed: set_state, per-key state bytes, learn_state, snapshots
    engine = KeyedLSTM(m.copy(), learn=True)
    with pytest.raises(ValueError, match=r"class index|non-finite"):
        engine.set_state("k", s)
    assert "k" not in engine
    engine.set_state("k", before)
    blob = engine.state_bytes("k")
    n = 32 + (ring + pending[0] * slot + y_at) * 8
    poisoned = blob[:n] + struct.pack("<d", value) + blob[n + 8:]
    with pytest.raises(ValueError, match=r"class index|non-finite"):
        engine.set_state_bytes("j", poisoned)
    assert "j" not in engine
    with pytest.raises(ValueError, match=r"class index|non-finite"):
        engine.learn_state(poisoned, [0.2], 0)
    snap = engine.snapshot()

    def poison_rows(meta, arrays):
        arrays["states"][:, ring + pending[0] * slot + y_at] = value
    with pytest.raises(FormatError, match=r"class index|non-finite"):
        KeyedLSTM.from_snapshot(_rewrite(snap, poison_rows))


def test_negative_and_huge_step_counters_refused():
    m = OnlineLSTM(n_inputs=1, hidden=3)
    s = m.state
    for bad in ([-1, 0], [0, -5], [2 ** 63 - 1, 0]):
        s.counters[:] = bad
        with pytest.raises(ValueError, match="step counter"):
            m.state = s

    def counters(meta, arrays):
        arrays["counters"][5] = -3
    with pytest.raises(FormatError, match="'counters'"):
        OnlineLSTM.from_bytes(_rewrite(m.to_bytes(), counters))


def test_flink_learning_engine_refuses_bad_state_bytes():
    flink = pytest.importorskip("streamlstm.adapters.flink")
    m = _ce_model()
    engine = flink.LearningEngine(OnlineLSTM(n_inputs=1, n_outputs=3, hidden=4, loss="cross_entropy", bptt=4,
                                             update_every=2).to_bytes())
    with pytest.raises(RuntimeError, match="class index"):
        engine.process(_rewrite(m.to_bytes(), _bad_class(1e12)), "a,1,0.5,0")
    other = OnlineLSTM(n_inputs=1, n_outputs=3, hidden=5, loss="cross_entropy", bptt=4, update_every=2)
    with pytest.raises(RuntimeError, match="another shape"):
        engine.process(other.to_bytes(), "a,1,0.5,0")


def test_cli_run_load_refuses_a_bad_class_index(tmp_path):
    pytest.importorskip("click")
    path = tmp_path / "bad.slstm"
    path.write_bytes(_rewrite(_ce_model().to_bytes(), _bad_class(1e12)))
    csv = "x,y\n" + "".join(f"{i / 10},{i % 3}\n" for i in range(10))
    run = subprocess.run([sys.executable, "-m", "streamlstm.adapters.cli", "run", "--load", str(path),
                          "--target", "y"], input=csv, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, (run.returncode, run.stderr)
    assert "class index" in run.stderr and "internal error" not in run.stderr


# ---------------------------------------------------------- 2. no allocation before checks
def _header_says(blob: bytes, **settings) -> bytes:
    def change(meta, arrays):
        meta["config"].update(settings)
    return _rewrite(blob, change)


@pytest.mark.parametrize("settings", [dict(hidden=8000), dict(layers=10 ** 6), dict(bptt=10 ** 9),
                                      dict(n_inputs=10 ** 8)])
def test_huge_sizes_in_a_small_file_are_refused_before_building(settings):
    blob = _header_says(OnlineLSTM(n_inputs=1, hidden=4).to_bytes(), **settings)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(FormatError, match=r"arrays|array '"):
            OnlineLSTM.from_bytes(blob)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * len(blob) + 2 ** 20, peak
    assert time.perf_counter() - t0 < 2.0


def test_unbounded_and_special_files_are_refused_after_a_few_bytes(tmp_path):
    with pytest.raises(FormatError, match="bad magic"):
        OnlineLSTM.load("/dev/zero")
    # a FIFO whose header announces a terabyte: refused from the header, nothing more is read
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    header = json.dumps({"kind": "OnlineLSTM", "meta": {}, "arrays": [
        {"name": "w", "dtype": "float64", "shape": [2 ** 37]}]}).encode()
    head = persistence.MAGIC + struct.pack("<IQ", 1, len(header)) + header

    def writer():
        try:   # the reader may close the pipe while a write, or the final flush, is under way
            with open(fifo, "wb") as fh:
                fh.write(head)
                for _ in range(64):  # far less than announced, then the pipe closes
                    fh.write(b"\0" * 65536)
        except BrokenPipeError:
            pass
    t = threading.Thread(target=writer)
    t.start()
    with pytest.raises(FormatError, match=r"over .* bytes|truncated"):
        persistence.read_file(fifo)
    t.join(10)


# ------------------------------------------------------------- 3. non-finite values
@pytest.mark.parametrize("array", ["theta/weight_ih_l0", "moment1/bias_l0", "moment2/readout.weight",
                                   "stats/inputs", "stats/targets", "state/h", "state/c", "ring/l0/act",
                                   "ring/y"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_arrays_refused_naming_the_array(array, value):
    m = OnlineLSTM(n_inputs=2, hidden=3)
    m.learn_one([1.0, 2.0], 3.0)

    def change(meta, arrays):
        arrays[array].reshape(-1)[0] = value
    with pytest.raises(FormatError, match=f"'{array}'"):
        OnlineLSTM.from_bytes(_rewrite(m.to_bytes(), change))


@pytest.mark.parametrize("setting, value", [("lr", float("nan")), ("lr", float("inf")), ("eps", 0.0),
                                            ("betas", [0.9, 1.0]), ("rho", 1.5), ("momentum", 1.0),
                                            ("huber_delta", -1.0), ("hidden", 0), ("hidden", True),
                                            ("cell", "gru"), ("seed", "x"), ("clip", float("nan")),
                                            ("eps", 10 ** 400), ("clip", 10 ** 400)])
def test_bad_settings_in_a_file_are_refused_naming_the_setting(setting, value):
    blob = _header_says(OnlineLSTM(n_inputs=1, hidden=3).to_bytes(), **{setting: value})
    with pytest.raises(FormatError, match=setting):
        OnlineLSTM.from_bytes(blob)


def test_hyper_parameters_in_the_arrays_must_match_the_settings():
    def change(meta, arrays):
        arrays["F/header"][0] = np.nan  # the learning rate the kernels read
    with pytest.raises(FormatError, match=r"F/header\[0\] \(lr\)"):
        OnlineLSTM.from_bytes(_rewrite(OnlineLSTM(n_inputs=1, hidden=3).to_bytes(), change))


# -------------------------------------------------------------------- 4. shapes
@pytest.mark.parametrize("array, replacement", [
    ("theta/weight_ih_l0", np.zeros((16, 1))),      # a block for 1 input in a file that says 3
    ("stats/inputs", np.zeros((3, 4))),             # too many statistics
    ("state/h", np.float64(0.0)),                   # a 0-d array
    ("counters", np.zeros(7)),                      # float counters
])
def test_arrays_that_disagree_with_the_header_are_refused(array, replacement):
    def change(meta, arrays):
        arrays[array] = np.asarray(replacement)
    with pytest.raises(FormatError, match=f"'{array}'"):
        OnlineLSTM.from_bytes(_rewrite(OnlineLSTM(n_inputs=3, hidden=4).to_bytes(), change))


def _raw_container(header: object, body: bytes = b"") -> bytes:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    blob = persistence.MAGIC + struct.pack("<IQ", 1, len(raw)) + raw + body
    return blob + struct.pack("<I", zlib.crc32(blob))


@pytest.mark.parametrize("header, message", [
    ({"kind": "OnlineLSTM", "meta": {}, "arrays": [{"name": "w", "dtype": "float64", "shape": [-1]}]}, "shape"),
    ({"kind": "OnlineLSTM", "meta": {}, "arrays": [{"name": "w", "dtype": "float64", "shape": [1.5]}]}, "shape"),
    ({"kind": "OnlineLSTM", "meta": {}, "arrays": [{"name": "w", "dtype": "object", "shape": [1]}]}, "dtype"),
    ({"kind": "OnlineLSTM", "meta": {}, "arrays": [{"name": "w", "dtype": "float64", "shape": [10 ** 30]}]},
     "truncated"),
    ({"kind": "OnlineLSTM", "meta": {}, "arrays": [{"name": 3, "dtype": "float64", "shape": [1]}]}, "name"),
    ({"kind": "OnlineLSTM", "meta": {}, "arrays": "w"}, "arrays"),
    ({"kind": 5, "meta": {}, "arrays": []}, "kind"),
    ({"kind": "OnlineLSTM", "meta": [], "arrays": []}, "meta"),
    ([1, 2], "header"),
    (b"[" * 100000 + b"]" * 100000, "unreadable header"),
    (b"\xff\xfe", "unreadable header"),
    ({"kind": "OnlineLSTM", "meta": {}, "arrays": []}, "config"),
    ({"kind": "OnlineLSTM", "meta": {"config": {"n_inputs": 1, "hidden": 10 ** 400}}, "arrays": []}, "hidden"),
    ({"kind": "OnlineLSTM", "meta": {"config": {"n_inputs": 1, "colour": 1}}, "arrays": []}, "colour"),
    ({"kind": "OnlineLSTM", "meta": {"config": {"hidden": 2}}, "arrays": []}, "n_inputs"),
])
def test_malformed_headers_raise_format_error_naming_the_field(header, message):
    with pytest.raises(FormatError, match=message):
        OnlineLSTM.from_bytes(_raw_container(header))


def test_negative_version_and_header_length_refused():
    blob = OnlineLSTM(n_inputs=1, hidden=2).to_bytes()
    n = len(persistence.MAGIC)
    with pytest.raises(FormatError, match="version"):
        persistence.loads(blob[:n] + struct.pack("<I", 0) + blob[n + 4:])
    with pytest.raises(FormatError, match="header length"):
        persistence.loads(blob[:n + 4] + struct.pack("<Q", 2 ** 63) + blob[n + 12:])


def test_keyed_snapshot_fields_checked():
    engine = KeyedLSTM(OnlineLSTM(n_inputs=1, hidden=3), ttl=5)
    engine.step_many(["a", 1], [[0.5], [0.7]])
    snap = engine.snapshot()

    def nan_age(meta, arrays):
        arrays["age"][0] = np.nan
    with pytest.raises(FormatError, match="'age'"):
        KeyedLSTM.from_snapshot(_rewrite(snap, nan_age))
    for field, value, message in (("calls", -1, "calls"), ("events", 1.5, "events"),
                                  ("since_sweep", float("inf"), "since_sweep"), ("width", 7, "states"),
                                  ("object_keys", [[1]], "TypeError|key")):
        def change(meta, arrays, field=field, value=value):
            meta[field] = value
        with pytest.raises(FormatError, match=message):
            KeyedLSTM.from_snapshot(_rewrite(snap, change))

    def nan_state(meta, arrays):
        arrays["states"][1, 0] = np.inf
    with pytest.raises(FormatError, match="non-finite"):
        KeyedLSTM.from_snapshot(_rewrite(snap, nan_state))

    def bad_ttl(meta, arrays):
        meta["config"]["ttl"] = float("nan")
    with pytest.raises(FormatError, match="ttl"):
        KeyedLSTM.from_snapshot(_rewrite(snap, bad_ttl))


# ------------------------------------------------------------------- 6. settings
@pytest.mark.parametrize("kwargs, message", [
    (dict(betas=(0.9, 1.0)), r"betas\[1\] must be a finite number in \[0, 1\)"),
    (dict(betas=(1.2, 0.9)), r"betas\[0\] must be a finite number in \[0, 1\)"),
    (dict(eps=0.0), r"eps must be a finite number in \(0, inf\)"),
    (dict(rho=1.0), r"rho must be a finite number in \[0, 1\)"),
    (dict(momentum=1.0), r"momentum must be a finite number in \[0, 1\)"),
    (dict(lr=float("inf")), r"lr must be a finite number in \[0, inf\)"),
    (dict(lr=float("nan")), r"lr must be a finite number"),
    (dict(huber_delta=0.0), "huber_delta"),
    (dict(l2=float("nan")), "l2"),
    (dict(hidden=True), "hidden must be an integer >= 1"),
    (dict(standardize_inputs="yes"), "standardize_inputs must be True or False"),
    (dict(seed=-1), "seed must be an integer >= 0"),
])
def test_settings_refused_with_name_and_range(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OnlineLSTM(n_inputs=1, **kwargs)


def test_settings_round_trip_through_get_params():
    m = OnlineLSTM(n_inputs=2, hidden=3, betas=[0.8, 0.95], loss="huber")
    assert set(m.get_params()) == set(names())
    twin = OnlineLSTM(**m.get_params())
    assert twin.get_params() == m.get_params()
    assert ModelSettings.from_config(m.get_params()).as_config() == m.get_params()


def test_every_setting_is_documented_with_a_default():
    info = list(describe())
    assert [s.name for s in info] == list(names())
    for s in info:
        assert s.doc and s.type
        if s.name != "n_inputs":
            ModelSettings(n_inputs=1, **{s.name: s.default})  # the default passes its own check


def test_river_and_cli_setting_names_match_the_schema():
    """The adapters list the settings by hand today; every one they offer must exist here."""
    schema = set(names())
    cli = pytest.importorskip("streamlstm.adapters.cli")
    cli_names = {n for n in cli._MODEL_NAMES if n not in ("beta1", "beta2", "standardize", "standardize_target")}
    cli_names |= {"betas", "standardize_inputs", "standardize_targets"}
    assert cli_names <= schema, cli_names - schema
    pytest.importorskip("river")
    from streamlstm.adapters.river import params as river_params
    offered = set(river_params._CORE) | set(river_params._CORE_OPTIONAL)
    assert offered <= schema, offered - schema


# ---------------------------------------------------------------- 7. one absurd reading
def _mae_after(dtype: str, pos: int, value: float | None, n: int = 5000, warm: int = 200) -> float:
    rng = np.random.default_rng(1)
    total = (warm if pos else 0) + n + 2
    t = np.arange(total)
    s = 20 + 5 * np.sin(2 * np.pi * t / 30) + 0.5 * rng.normal(size=total)
    if value is not None:
        s[pos] = value
    m = OnlineLSTM(n_inputs=1, hidden=8, lr=3e-3, dtype=dtype, seed=0)
    p = m.learn_many(s[:-1], s[1:])[:, 0]
    assert np.isfinite(m.input_statistics()[2]).all() and np.isfinite(m.target_statistics()[2]).all()
    return float(np.mean(np.abs(p[-500:] - s[1:][-500:])))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("pos", [0, 200])
@pytest.mark.parametrize("value", [1e300, -1e300])
def test_one_absurd_reading_does_not_freeze_the_normaliser(dtype, pos, value):
    clean = _mae_after(dtype, pos, None)
    dirty = _mae_after(dtype, pos, value)
    assert dirty <= 1.1 * clean, (dirty, clean)


def test_statistics_restart_after_an_absurd_first_reading():
    m = OnlineLSTM(n_inputs=1, hidden=3)
    for v in (1e300, 1.0, 3.0):
        m.advance([v])
    count, mean, var = m.input_statistics()
    assert count.tolist() == [2.0] and mean.tolist() == [2.0] and var.tolist() == [1.0]


# ---------------------------------------------------------------------- 10. threads
def test_concurrent_use_of_one_model_raises_instead_of_losing_updates():
    m = OnlineLSTM(n_inputs=1, hidden=64, bptt=16)
    X = np.random.default_rng(0).normal(size=(40000, 1))
    errors: list[BaseException] = []

    def long_block():
        try:
            m.learn_many(X, X[:, 0])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
    t = threading.Thread(target=long_block)
    t.start()
    deadline = time.monotonic() + 60
    while not m._busy and t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.0005)
    assert m._busy, "the block call ended before the second thread could try"
    with pytest.raises(RuntimeError, match="another thread"):
        m.learn_one([0.5], 1.0)
    with pytest.raises(RuntimeError, match="another thread"):
        m.predict_one([0.5])
    t.join()
    assert not errors
    assert m.n_steps == 40000  # the block's events were all taken, none from the refused calls
    m.learn_one([0.5], 1.0)    # and the model is free again


# ------------------------------------------------------------- 12. numbers that are not
@pytest.mark.parametrize("x", [[True, 1.0], [np.True_], ["1.5"], np.array(["1.5"]), [None],
                               np.array(["2020-01-01"], dtype="datetime64[D]"),
                               np.ma.masked_array([1.0], mask=[True])])
def test_things_that_only_look_like_numbers_are_refused_as_inputs(x):
    m = OnlineLSTM(n_inputs=1, hidden=3)
    before = m.state.buffer.copy()
    for call in (m.predict_one, m.advance, lambda v: m.learn_one(v, 1.0), m.predict_many, m.advance_many):
        with pytest.raises((TypeError, ValueError)):
            call(x)
    np.testing.assert_array_equal(m.state.buffer, before)


@pytest.mark.parametrize("y", [True, np.True_, "1.5", np.datetime64("2020-01-01"), np.ma.masked_array([1.0], mask=[1])])
def test_things_that_only_look_like_numbers_are_refused_as_targets(y):
    m = OnlineLSTM(n_inputs=1, hidden=3)
    with pytest.raises((TypeError, ValueError)):
        m.learn_one([0.5], y)
    with pytest.raises((TypeError, ValueError)):
        m.learn_many([[0.5]], y if isinstance(y, np.ma.MaskedArray) else [y])
    assert m.n_steps == 0


def test_unmasked_masked_arrays_are_used_as_numbers():
    m = OnlineLSTM(n_inputs=2, hidden=3)
    assert m.predict_one(np.ma.masked_array([1.0, 2.0], mask=[0, 0])) == m.predict_one([1.0, 2.0])


# -------------------------------------------------------- files written by 0.1.0
V010 = os.path.join(os.path.dirname(__file__), "data", "v0.1.0")


@pytest.mark.parametrize("name", ["ce_float32.slstm", "reg_float64.slstm"])
def test_models_written_by_0_1_0_load_and_write_the_same_bytes(name):
    """Written by 0.1.0 (commit 9e19979): every check accepts what the old writer wrote."""
    path = os.path.join(V010, name)
    m = OnlineLSTM.load(path)
    assert m.to_bytes() == Path(path).read_bytes()
    m.learn_one([0.1, 0.2], 1)


def test_keyed_snapshot_and_state_bytes_written_by_0_1_0_load():
    e = KeyedLSTM.load(os.path.join(V010, "keyed_float32.slstm"))
    assert sorted(map(str, e.keys())) == ["('x', 1)", "3", "a"]
    blob = Path(V010, "state_float32.bin").read_bytes()
    e.set_state_bytes("copy", blob)
    assert e.state_bytes("copy") == blob == e.state_bytes("a")
