"""Flink adapter: the real engines (serving, per-key learning) in Flink jobs, compared with
the core run in this process; checkpoints, recovery after an injected failure, restarts.

Equality is EXACT (string equality of round-trip ``repr`` floats, and equal SHA-256 digests
of every stored state): the job and the reference run the same compiled kernels on the same
machine, on the same float64 values (parsed from the same text by ``float``), in the same
order per key; the state travels through Flink as raw bytes, and with frozen input
statistics (serving) or one model per key (learning) a key's results depend on nothing but
the model file and that key's own events. Nothing is tolerated, so any lost, replayed or
reordered event, or any state not restored bit for bit, fails the test.
"""

import re
from collections import defaultdict

import pytest
from flink_helpers import (
    make_model,
    reference_forecasting,
    reference_learning,
    reference_serving,
    write_events,
    write_series,
)

from streamlstm import OnlineLSTM
from streamlstm.adapters.flink import BadRow, LearningEngine, ServingEngine, format_output, parse_line, state_digest

pytestmark = pytest.mark.flink


def _by_key(lines):
    d = defaultdict(list)
    for line in lines:
        d[line.split(",", 1)[0]].append(line)
    return dict(d)


def _assert_same_per_key(got, expected):
    # Flink keeps order per key only; compare each key's sequence exactly (exactly-once)
    g, e = _by_key(got), _by_key(expected)
    assert sorted(g) == sorted(e)
    for k in e:
        if g[k] != e[k]:
            i = next(i for i, (a, b) in enumerate(zip(g[k] + [None], e[k] + [None])) if a != b)
            pytest.fail(f"key {k}: {len(g[k])} rows, expected {len(e[k])}; first difference at row {i}:\n"
                        f"  got      {(g[k] + [None])[i]}\n  expected {(e[k] + [None])[i]}")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("model") / "model.slstm")


# --- no JVM ---------------------------------------------------------------------------

def test_versions_in_flink_venv():
    import numba
    import numpy
    import pyflink.version

    assert pyflink.version.__version__ == "2.3.0"
    assert tuple(int(x) for x in numpy.__version__.split(".")[:2]) < (2, 2)
    assert numba.__version__


def test_parse_and_format_lines():
    assert parse_line("a,17,1.5,-2\n") == ("a", "17", (1.5, -2.0))
    with pytest.raises(ValueError):
        parse_line("a,17")
    assert format_output("a", "17", 0.25, -0.5) == "a,17,0.25,-0.5"
    assert format_output("a", "17", [0.25, 1.0]) == "a,17,0.25,1.0"


def _drive(engine, rows_path):
    """The engine as Flink drives it: per key, the state bytes it returned last time."""
    state, out = {}, []
    with open(rows_path) as rows:
        for line in rows:
            new, o = engine.process(state.get(line.split(",", 1)[0]), line)
            if new is not None:
                state[line.split(",", 1)[0]] = new
            if o is not None:
                out.append(f"{o},{state_digest(new)}")
    return out


def test_engines_in_process_match_the_core(tmp_path, model_path):
    rows = write_events(tmp_path / "ev.csv", 600, 7, seed=5)
    want = reference_serving(model_path, rows, True)
    memo = ServingEngine(model_path)
    assert _drive(memo, tmp_path / "ev.csv") == want
    assert memo.n_loaded == 7  # each key's row loaded once (its first event), then reused
    no_memo = ServingEngine(model_path, cache_mb=0)
    assert _drive(no_memo, tmp_path / "ev.csv") == want
    assert no_memo.n_loaded == 600
    want = reference_learning(model_path, rows, True)
    memo = LearningEngine(model_path)
    assert _drive(memo, tmp_path / "ev.csv") == want
    assert memo.n_decoded == 0  # every event reused its decoded model, bit-identically
    no_memo = LearningEngine(model_path, cache_mb=0)
    assert _drive(no_memo, tmp_path / "ev.csv") == want
    assert no_memo.n_decoded == 600 - 7


@pytest.mark.parametrize("cls", [ServingEngine, LearningEngine])
def test_engine_memo_survives_a_rewind_of_flink_state(tmp_path, model_path, cls):
    # What a restore does to a long-lived engine: Flink's state goes back to a checkpoint
    # (here: a copy of the state dict after row 200; keys first seen later vanish) and the
    # rows after it are replayed. The memo must not serve the newer, memoised states.
    rows = write_events(tmp_path / "ev.csv", 500, 6, seed=8)
    lines = (tmp_path / "ev.csv").read_text().splitlines()
    want = (reference_serving if cls is ServingEngine else reference_learning)(model_path, rows, True)
    engine, state, out = cls(model_path), {}, []
    for i, line in enumerate(lines):
        if i == 200:
            checkpoint = dict(state)
        if i == 350:  # fail, restore, replay 200..499 with the same engine object
            state, out = dict(checkpoint), out[:200]
            for j in range(200, 350):
                new, o = engine.process(state.get(lines[j].split(",", 1)[0]), lines[j])
                state[lines[j].split(",", 1)[0]] = new
                out.append(f"{o},{state_digest(new)}")
        new, o = engine.process(state.get(line.split(",", 1)[0]), line)
        state[line.split(",", 1)[0]] = new
        out.append(f"{o},{state_digest(new)}")
    assert out == want


def test_engines_bad_rows_and_foreign_state(model_path):
    for cls in (ServingEngine, LearningEngine):
        with pytest.raises(BadRow):
            cls(model_path).process(None, "a,1,0.5")          # one input missing
        with pytest.raises(BadRow):
            cls(model_path).process(None, "a,1,0.5,x,1.0")    # not a number
        with pytest.raises(BadRow):
            cls(model_path).process(None, "a,1,0.5,nan")      # refused by the core
        skip = cls(model_path, "skip")
        assert skip.process(None, "key,time,x1,x2,y") == (None, None) and skip.n_bad == 1
    other = OnlineLSTM(n_inputs=2, hidden=3).to_bytes()
    with pytest.raises(RuntimeError, match="does not fit this model"):
        ServingEngine(model_path).process(ServingEngine(other).zero_state, "a,1,0.5,0.5")
    with pytest.raises(RuntimeError, match="not a streamlstm model"):
        LearningEngine(model_path).process(b"junk", "a,1,0.5,0.5")


# --- jobs: results equal the core's ---------------------------------------------------

def test_serving_job_matches_keyed_reference(tmp_path, flink_job, model_path):
    # thread mode, 2 subtasks (one engine each), a header and a bad row skipped
    rows = write_events(tmp_path / "ev.csv", 4000, 30, seed=1, bad_lines=["key,time,x1,x2,y", "k1,5,oops,1"])
    run = flink_job(tmp_path / "ev.csv", "--model", model_path, "--mode", "thread", "--parallelism", "2",
                    "--checkpoint-interval", "500", "--on-bad-row", "skip")
    assert run.returncode == 0, run.output[-4000:]
    _assert_same_per_key(run.rows(), reference_serving(model_path, rows))


def test_learning_job_matches_per_key_models(tmp_path, flink_job, model_path):
    rows = write_events(tmp_path / "ev.csv", 2000, 12, seed=2)
    run = flink_job(tmp_path / "ev.csv", "--model", model_path, "--learn", "--mode", "thread",
                    "--parallelism", "2", "--checkpoint-interval", "500")
    assert run.returncode == 0, run.output[-4000:]
    _assert_same_per_key(run.rows(), reference_learning(model_path, rows))


@pytest.mark.parametrize("learn", [False, True])
def test_jobs_with_intervals_and_anomaly_scores_match_the_core(tmp_path, flink_job, model_path, learn):
    # --interval twice and --anomaly on the serving / learning engine, 2 subtasks: every cell
    # equals the core's calibrator and scorer fed each key's residuals in Python
    rows = write_events(tmp_path / "ev.csv", 1500, 12, seed=13)
    run = flink_job(tmp_path / "ev.csv", "--model", model_path, *(["--learn"] if learn else []),
                    "--interval", "0.9", "--interval", "0.5", "--anomaly", "--mode", "thread",
                    "--parallelism", "2", "--checkpoint-interval", "500")
    assert run.returncode == 0, run.output[-4000:]
    uncertainty = {"interval": [0.9, 0.5], "anomaly": True}
    want = (reference_learning if learn else reference_serving)(model_path, rows, uncertainty=uncertainty)
    _assert_same_per_key(run.rows(), want)


def test_process_mode_real_workers_embedded_model(tmp_path, flink_job, model_path):
    # _python_worker_execution_mode=process: separate Python worker processes, as on a
    # cluster (the local default, "loopback", runs them inside the client process); the
    # model's bytes travel inside the job (--embed-model), not as a file.
    rows = write_events(tmp_path / "ev.csv", 2000, 20, seed=3)
    run = flink_job(tmp_path / "ev.csv", "--model", model_path, "--embed-model", "--learn", "--mode", "process",
                    "--parallelism", "2", "--checkpoint-interval", "500",
                    env={"_python_worker_execution_mode": "process"})
    assert run.returncode == 0, run.output[-4000:]
    _assert_same_per_key(run.rows(), reference_learning(model_path, rows))


# --- jobs: recovery from a checkpoint is exactly-once ---------------------------------

# Unaligned checkpoints: with aligned ones the barrier queues behind every record in the
# network buffers (hundreds of KB of lines, i.e. most of these small files), so under a slow
# operator (--learn) the first checkpoint could complete only at the end of the input and the
# failure would never be mid-stream. Exactly-once holds either way (docs/flink.md).
FORECAST_SETTINGS = '{"ahead": 2, "interval": [0.9], "anomaly": true}'
UNCERTAINTY = {"interval": [0.9], "anomaly": True}


@pytest.mark.parametrize("kind,mode,n,fail_at", [
    ("serve", "thread", 20000, 6000),
    ("learn", "thread", 3000, 1000),
    ("serve", "process", 8000, 3000),
    ("forecast", "thread", 2400, 800),
    ("serve+uncertainty", "thread", 12000, 4000),
])
def test_recovers_from_checkpoint_after_injected_failure(tmp_path, flink_job, model_path, kind, mode, n, fail_at):
    if kind == "forecast":
        lines = write_series(n, 20, seed=4)
        (tmp_path / "ev.csv").write_text("\n".join(lines) + "\n")
    else:
        rows = write_events(tmp_path / "ev.csv", n, 40, seed=4)
    ckpt = tmp_path / "checkpoints"
    marker = tmp_path / "failed-once"
    model = FORECAST_SETTINGS if kind == "forecast" else model_path
    run = flink_job(tmp_path / "ev.csv", "--engine", "flink_helpers:checked_engine",
                    *[a for v in (kind, model, fail_at, marker, ckpt) for a in ("--engine-arg", v)],
                    "--mode", mode, "--checkpoint-interval", "200", "--checkpoint-dir", ckpt,
                    "--conf", "execution.checkpointing.unaligned.enabled=true",
                    "--restart-attempts", "2", "--restart-delay", "500 ms")
    assert run.returncode == 0, run.output[-4000:]
    assert marker.exists(), "the injected failure did not happen"
    logs = run.output + run.log_text()
    assert "injected failure" in logs
    m = re.search(r"Restoring job \S+ from Checkpoint (\d+)", logs)
    assert m, "restarted from scratch, not from a checkpoint"
    # every output row carries the digest of the state stored after its event: the last row
    # of a key is its final state, so this compares outputs AND final per-key states
    # (forecasting: of the key's forecaster; its scorer's and last forecasts' show in the cells)
    if kind == "forecast":
        want = reference_forecasting(lines, 2, (0.9,), True, params={}, digests=True)
    elif kind == "serve+uncertainty":
        want = reference_serving(model_path, rows, digests=True, uncertainty=UNCERTAINTY)
    else:
        want = (reference_serving if kind == "serve" else reference_learning)(model_path, rows, digests=True)
    _assert_same_per_key(run.rows(), want)


def test_failure_beyond_restart_attempts_fails_the_job(tmp_path, flink_job, model_path):
    # fail_at=1 with a marker path that can never be created -> fails on every attempt;
    # the job must stop after the fixed-delay attempts instead of retrying for ever.
    write_events(tmp_path / "ev.csv", 200, 5, seed=6)
    ckpt = tmp_path / "checkpoints"
    (ckpt / "x" / "chk-0").mkdir(parents=True)
    (ckpt / "x" / "chk-0" / "_metadata").touch()
    marker = tmp_path / "no-such-dir" / "marker"
    run = flink_job(tmp_path / "ev.csv", "--engine", "flink_helpers:checked_engine",
                    *[a for v in ("serve", model_path, 1, marker, ckpt) for a in ("--engine-arg", v)],
                    "--restart-attempts", "1", "--restart-delay", "200 ms", timeout=180)
    assert run.returncode != 0
    assert "Recovery is suppressed" in run.output


def test_bad_row_fails_the_job_by_default(tmp_path, flink_job, model_path):
    write_events(tmp_path / "ev.csv", 300, 5, seed=7, bad_lines=["k1,5,oops,1"])
    run = flink_job(tmp_path / "ev.csv", "--model", model_path, "--restart-attempts", "0", timeout=180)
    assert run.returncode != 0
    assert "bad row 'k1,5,oops,1'" in run.output + run.log_text()


def test_engines_cross_entropy_rows():
    # class probabilities out, -ln p[target] as the error; the class index is the row's target
    import math

    m = OnlineLSTM(n_inputs=1, n_outputs=3, hidden=4, loss="cross_entropy")
    for cls in (ServingEngine, LearningEngine):
        state, out = cls(m.to_bytes()).process(None, "a,1,0.5,2")
        p = [float(v) for v in out.split(",")[2:5]]
        assert abs(sum(p) - 1.0) < 1e-12
        assert float(out.split(",")[5]) == -math.log(p[2])
        assert cls(m.to_bytes()).process(state, "a,2,0.5")[1].count(",") == 4  # no target: no error


def test_forecasting_job_matches_per_key_forecasters(tmp_path, flink_job):
    # --ahead 2 with the LSTM expert, an interval and anomaly scores, one feature, 2 subtasks:
    # every cell of every key's rows equals the core fed that key's rows in Python
    lines = write_series(900, 6, n_features=1, seed=11)
    (tmp_path / "ev.csv").write_text("\n".join(lines) + "\n")
    run = flink_job(tmp_path / "ev.csv", "--ahead", "2", "--interval", "0.9", "--interval", "0.5", "--anomaly",
                    "--features", "1", "--mode", "thread", "--parallelism", "2", "--checkpoint-interval", "500")
    assert run.returncode == 0, run.output[-4000:]
    want = reference_forecasting(lines, 2, (0.9, 0.5), True, n_features=1, params={})
    assert sum(1 for w in want if w.split(",")[-1]) > 700    # scores, not empty cells
    _assert_same_per_key(run.rows(), want)
