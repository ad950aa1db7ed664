"""Flink plumbing tests: source -> key_by -> keyed bytes state -> file sink, checkpoints, recovery.

They use a scratch engine (flink_helpers.py), not the core. The core-engine tests at the
bottom are skeletons until streamlstm's keyed engine exists.
"""

import re
from collections import defaultdict

import pytest

from flink_helpers import reference, write_events
from streamlstm.adapters.flink import format_output, load_core_engine, parse_line

pytestmark = pytest.mark.flink


def _by_key(lines):
    d = defaultdict(list)
    for line in lines:
        d[line.split(",", 1)[0]].append(line)
    return dict(d)


def _assert_same_per_key(got, expected):
    # order is kept per key only; compare each key's sequence exactly (exactly-once)
    g, e = _by_key(got), _by_key(expected)
    assert sorted(g) == sorted(e)
    for k in e:
        assert g[k] == e[k], f"key {k}: first difference at {next(i for i, (a, b) in enumerate(zip(g[k] + [None], e[k])) if a != b)}"


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


def test_core_engine_seam_is_open():
    with pytest.raises(NotImplementedError):
        load_core_engine("model.bin")


# --- jobs -----------------------------------------------------------------------------

def test_thread_mode_job_matches_reference(tmp_path, flink_job):
    rows = write_events(tmp_path / "ev.csv", 3000, 20, seed=1)
    run = flink_job(tmp_path / "ev.csv", "--mode", "thread", "--checkpoint-ms", "500")
    assert run.returncode == 0, run.output[-4000:]
    _assert_same_per_key(run.rows(), reference(rows))


def test_process_mode_real_workers_parallel_matches_reference(tmp_path, flink_job):
    # _python_worker_execution_mode=process: separate Python worker processes, as on a
    # cluster (the local default, "loopback", runs them inside the client process).
    rows = write_events(tmp_path / "ev.csv", 3000, 20, seed=2)
    run = flink_job(tmp_path / "ev.csv", "--mode", "process", "--parallelism", "2", "--checkpoint-ms", "500",
                    env={"_python_worker_execution_mode": "process"})
    if run.returncode != 0 and "has no attribute 'print'" in run.output:
        # PyFlink's Beam worker replaces builtins.print by a bound method; numba's import
        # then fails (it checks sys.modules[print.__module__].print is print). Needs a guard
        # in streamlstm/__init__.py before numba is imported (see the Flink notes).
        pytest.xfail("numba import in Beam process workers needs the print guard in streamlstm/__init__.py")
    assert run.returncode == 0, run.output[-4000:]
    _assert_same_per_key(run.rows(), reference(rows))


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_recovers_from_checkpoint_after_injected_failure(tmp_path, flink_job, mode):
    rows = write_events(tmp_path / "ev.csv", 20000, 50, seed=3)
    ckpt = tmp_path / "checkpoints"
    marker = tmp_path / "failed-once"
    run = flink_job(tmp_path / "ev.csv", "--mode", mode, "--checkpoint-ms", "200", "--checkpoint-dir", ckpt,
                    "--restart-attempts", "2", "--restart-delay", "500 ms",
                    engine_args=(5000, marker, ckpt))
    assert run.returncode == 0, run.output[-4000:]
    assert marker.exists(), "the injected failure did not happen"
    assert "injected failure" in run.output + run.log_text()
    assert re.search(r"Restoring job \S+ from Checkpoint \d+", run.log_text()), "restarted from scratch, not from a checkpoint"
    _assert_same_per_key(run.rows(), reference(rows))  # exactly once, state restored


def test_failure_beyond_restart_attempts_fails_the_job(tmp_path, flink_job):
    # fail_at=1 with a marker path that can never be created -> fails on every attempt;
    # the job must stop after the fixed-delay attempts instead of retrying for ever.
    write_events(tmp_path / "ev.csv", 200, 5, seed=4)
    ckpt = tmp_path / "checkpoints"
    (ckpt / "x" / "chk-0").mkdir(parents=True)
    (ckpt / "x" / "chk-0" / "_metadata").touch()
    marker = tmp_path / "no-such-dir" / "marker"
    run = flink_job(tmp_path / "ev.csv", "--mode", "thread", "--restart-attempts", "1", "--restart-delay", "200 ms",
                    engine_args=(1, marker, ckpt), timeout=180)
    assert run.returncode != 0
    assert "Recovery is suppressed" in run.output


# --- skeletons for the core engine ----------------------------------------------------

def _core_engine_or_skip():
    pytest.importorskip("streamlstm")
    try:
        load_core_engine.__wrapped__  # placeholder check; replace when the seam is filled
    except AttributeError:
        pytest.skip("streamlstm keyed engine not written yet (streamlstm.adapters.flink.load_core_engine)")


def test_core_engine_job_matches_in_process_loop(tmp_path, flink_job):
    """TODO when the core's keyed engine exists: save a small OnlineLSTM to tmp_path, run the
    job with --engine streamlstm.adapters.flink:load_core_engine --engine-arg <model>, and compare each
    key's (time, prediction, error) rows with the same engine driven in-process per key."""
    _core_engine_or_skip()


def test_core_engine_recovery_is_exactly_once(tmp_path, flink_job):
    """TODO: as test_recovers_from_checkpoint_after_injected_failure, with the core engine
    (frozen weights: learned weights are worker memory, not Flink state)."""
    _core_engine_or_skip()


def test_core_engine_state_bytes_survive_rescaling(tmp_path, flink_job):
    """TODO: run with parallelism 1 and checkpoints retained, resume with parallelism 2 from
    the retained checkpoint (execution.state-recovery.path) and compare with one run."""
    _core_engine_or_skip()
