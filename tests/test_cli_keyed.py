"""`streamlstm run --key` with shared weights runs on the core's keyed store, `KeyedLSTM`.

A block of rows of many keys is one ``KeyedLSTM`` call: ``step_many`` without learning (the
same numbers as the per-event loop with swapped states) or ``learn_many`` with it (one
optimizer step per block, blocks counted in input rows from the job's first row). These
tests rebuild the CLI's numbers in-process from the same blocks and compare with ``==``.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from test_cli import SMALL, cli, consumed, make_csv, ok, read_line, rows_of, start

from streamlstm import KeyedLSTM, OnlineLSTM, persistence

DATA = Path(__file__).parent / "data"
ARGS = ["--target", "temp", "--key", "sensor", "--time", "time", *SMALL, "--quiet"]


def columns(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """keys, X (hum), y (temp, NaN when empty), known of a make_csv file."""
    rows = rows_of(path.read_bytes())
    keys = [r["sensor"] for r in rows]
    X = np.array([[float(r["hum"])] for r in rows])
    y = np.array([float(r["temp"]) if r["temp"] else np.nan for r in rows])
    return keys, X, y, ~np.isnan(y)


def model_of(path: Path) -> OnlineLSTM:
    _, _, arrays = persistence.read_file(path)
    return OnlineLSTM.from_bytes(arrays["model"].tobytes())


def initial_model(tmp_path: Path, *args: str) -> OnlineLSTM:
    """The model a job starts from: a run over the header alone, saved."""
    empty = tmp_path / "empty.csv"
    empty.write_text("time,sensor,hum,temp\n")
    ok(cli("run", empty, *ARGS, *args, "--save", tmp_path / "start.slstm"))
    return model_of(tmp_path / "start.slstm")


def learn_in_blocks(store: KeyedLSTM, keys, X, y, known, size: int, first: int = 0) -> np.ndarray:
    """``store.learn_many`` over blocks ending at multiples of ``size`` rows counted from row 0
    (the rows start at row ``first`` of the job), each cut before every row whose key is
    already in the call: one call per run of distinct keys."""
    out = []
    a = 0
    while a < len(keys):
        end = min(len(keys), a + size - (first + a) % size)
        b = a + 1
        while b < end and keys[b] not in keys[a:b]:
            b += 1
        out.append(store.learn_many(keys[a:b], X[a:b], np.where(known[a:b], y[a:b], 0.0), known[a:b])[:, 0])
        a = b
    return np.concatenate(out)


def preds(out: bytes) -> np.ndarray:
    if not out.startswith(b"sensor,"):  # a resumed run writes no header
        out = b"sensor,time,temp,pred_temp,error\n" + out
    return np.array([float(r["pred_temp"]) for r in rows_of(out)])


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_keyed_learning_is_keyedlstm_learn_many_on_the_same_blocks(tmp_path, size):
    data = make_csv(tmp_path / "s.csv", 120, keys=("a", "b", "c"), missing_every=7)
    start_model = initial_model(tmp_path)
    r = ok(cli("run", data, *ARGS, "--block-size", size, "--save", tmp_path / "end.slstm"))
    keys, X, y, known = columns(data)
    store = KeyedLSTM(start_model, learn=True)
    want = learn_in_blocks(store, keys, X, y, known, size)
    assert (preds(r.stdout) == want).all()
    end = model_of(tmp_path / "end.slstm")
    assert end.n_updates == start_model.n_updates
    for name, w in start_model.weights().items():
        assert np.array_equal(end.weights()[name], w), name
    _, meta, arrays = persistence.read_file(tmp_path / "end.slstm")
    assert meta["job"]["block_size"] == size and meta["keys"] == ["a", "b", "c"]
    for i, k in enumerate(meta["keys"]):  # the 0.1 layout: whole state buffers and counters per key
        st = store.state(k)
        assert np.array_equal(arrays["states"][i], st.buffer) and np.array_equal(arrays["state_counters"][i], st.counters)


def test_rows_sorted_by_key_learn_per_row_on_the_key_state(tmp_path):
    """A file sorted by key: every batch is one row. Runs of one key's rows go through the
    core's block call on the key's state, which must give what one-row learn_many calls give."""
    data = make_csv(tmp_path / "s.csv", 60, keys=("a", "b", "c"), missing_every=5)
    lines = data.read_text().splitlines()
    (tmp_path / "sorted.csv").write_text("\n".join([lines[0], *sorted(lines[1:], key=lambda s: s.split(",")[1])]) + "\n")
    start_model = initial_model(tmp_path)
    r = ok(cli("run", tmp_path / "sorted.csv", *ARGS, "--block-size", "50"))
    keys, X, y, known = columns(tmp_path / "sorted.csv")
    want = learn_in_blocks(KeyedLSTM(start_model, learn=True), keys, X, y, known, 50)
    assert (preds(r.stdout) == want).all()


def test_keyed_learning_calls_learn_many_once_per_block(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from streamlstm.adapters import cli as cli_module

    data = tmp_path / "s.csv"  # 300 rows of 40 keys, each key every 40 rows
    data.write_text("time,sensor,hum,temp\n" + "".join(f"{t},k{t % 40},{t % 7},{t % 5}\n" for t in range(300)))
    calls: list[int] = []
    block_call = KeyedLSTM.learn_many

    def spy(self, keys, X, Y, mask=None, lag=0):
        calls.append(len(X))
        return block_call(self, keys, X, Y, mask, lag=lag)

    monkeypatch.setattr(KeyedLSTM, "learn_many", spy)
    r = CliRunner().invoke(cli_module.main, ["run", str(data), *map(str, ARGS), "--block-size", "64"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    # after the warm-up's call: blocks of 64 rows, each cut where a key comes back (40 rows on)
    assert calls[-10:] == [40, 24, 40, 24, 40, 24, 40, 24, 40, 4]
    r = CliRunner().invoke(cli_module.main, ["run", str(data), *map(str, ARGS), "--no-learn", "--block-size", "64"],
                           catch_exceptions=False)
    assert r.exit_code == 0 and len(calls) == 1 + 10  # inference: step_many only, no learn_many call


def test_keyed_inference_equals_the_per_event_loop_with_swapped_states(tmp_path):
    data = make_csv(tmp_path / "s.csv", 80, keys=("a", "b", "c"), seed=3)
    ok(cli("run", data, *ARGS, "--save", tmp_path / "m.slstm"))
    other = make_csv(tmp_path / "o.csv", 60, keys=("b", "d", "a"), seed=4)
    r = ok(cli("run", other, *ARGS, "--load", tmp_path / "m.slstm", "--no-learn", "--block-size", "13"))
    _, meta, arrays = persistence.read_file(tmp_path / "m.slstm")
    model = model_of(tmp_path / "m.slstm")
    states = {k: (buf, cnt) for k, buf, cnt in zip(meta["keys"], arrays["states"], arrays["state_counters"])}
    keys, X, _, _ = columns(other)
    want = []
    from streamlstm import LSTMState

    saved: dict[str, LSTMState] = {k: LSTMState(b.copy(), c.astype(np.int64), model.layers, model.hidden)
                                   for k, (b, c) in states.items()}
    for k, x in zip(keys, X):
        if k in saved:
            model.state = saved[k]
        else:
            model.reset_state()
        want.append(model.advance(x))
        saved[k] = model.state
    assert (preds(r.stdout) == np.array(want)).all()


def test_a_checkpoint_written_by_0_1_resumes_on_the_keyed_store_and_info_reads_it(tmp_path):
    """tests/data/cli_keyed_checkpoint_0.1.slstm: `streamlstm run` of 0.1 (a dict of states) over
    the first 60 rows of tests/data/cli_keyed.csv (--key sensor --hidden 4 --bptt 4)."""
    from streamlstm.adapters._runner import Engine

    ck = tmp_path / "ck.slstm"
    shutil.copy(DATA / "cli_keyed_checkpoint_0.1.slstm", ck)
    info = json.loads(ok(cli("info", ck, "--json")).stdout)
    assert info["keys"] == 3 and info["weights"] == "shared" and info["input_rows_consumed"] == 60
    _, meta, arrays = persistence.read_file(ck)
    assert "block_size" not in meta["job"]
    engine = Engine.restore(meta, arrays, True)
    assert engine.store is not None and engine.n_keys == 3
    r = ok(cli("run", DATA / "cli_keyed.csv", *ARGS, "--checkpoint", ck, "--resume", "--block-size", "16"))
    keys, X, y, known = columns(DATA / "cli_keyed.csv")
    want = learn_in_blocks(engine.store, keys[60:], X[60:], y[60:], known[60:], 16, first=60)
    assert (preds(r.stdout) == want).all() and len(want) == 60
    info = json.loads(ok(cli("info", ck, "--json")).stdout)
    assert info["input_rows_consumed"] == 120 and info["keys"] == 3
    assert persistence.read_file(ck)[1]["job"]["block_size"] == 16


def test_resume_keeps_the_block_size_of_the_job(tmp_path):
    data = make_csv(tmp_path / "s.csv", 50)
    ck = tmp_path / "ck.slstm"
    ok(cli("run", data, *ARGS, "--block-size", "8", "--checkpoint", ck))
    r = cli("run", data, *ARGS, "--block-size", "9", "--checkpoint", ck, "--resume")
    assert r.returncode == 2 and "--block-size 9 differs from" in r.stderr.decode() and "--block-size 8" in r.stderr.decode()
    ok(cli("run", data, *ARGS, "--checkpoint", ck, "--resume"))  # not given: the job's own


def test_kill_9_mid_block_on_a_pipe_then_resume_matches_an_uninterrupted_run(tmp_path):
    """A pipe waits for whole learning blocks; checkpoints fall at the first block end after
    each multiple of --checkpoint-every; kill -9 with a block half read loses nothing."""
    data = make_csv(tmp_path / "s.csv", 70, keys=("a", "b"), missing_every=9)  # 140 rows
    args = [*ARGS, "--block-size", "25"]
    full = ok(cli("run", data, *args)).stdout
    lines = data.read_bytes().splitlines(keepends=True)
    ck = tmp_path / "ck.slstm"
    p = start("run", *args, "--checkpoint", ck, "--checkpoint-every", "30")
    fd = p.stdout.fileno()
    buf = bytearray()
    try:
        p.stdin.write(b"".join(lines[:1 + 110]))
        p.stdin.flush()
        got = [read_line(fd, buf, 120) for _ in range(1 + 100)]  # the blocks of rows 1-100
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
    finally:
        p.kill()
    assert bytes(buf) == b""  # rows 101-110 wait for the rest of their block
    # checkpoints after rows 50 (past 30), 75 (past 60) and 100 (past 90); the last one is
    # written after its rows are out, and the kill may come first
    done = consumed(ck)
    assert done in (75, 100)
    r = ok(cli("run", data, *args, "--checkpoint", ck, "--resume"))
    assert b"\n".join(got[:1 + done]) + b"\n" + r.stdout == full


def test_per_key_models_stay_a_model_per_key(tmp_path):
    from streamlstm.adapters._runner import Engine

    job = {"target": "y", "features": ["x"], "key": "k", "ahead": 0, "per_key_models": True}
    eng = Engine(job, {"hidden": 2, "bptt": 2})
    assert eng.store is None and eng.block_rows is None
    shared = Engine({**job, "per_key_models": False}, {"hidden": 2, "bptt": 2})
    assert isinstance(shared.store, KeyedLSTM) and shared.block_rows == 4096
    assert Engine({**job, "per_key_models": False}, {"hidden": 2, "bptt": 2}, learn=False).block_rows is None
