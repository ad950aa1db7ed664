"""Fixtures for the Flink adapter tests (run them from the Flink venv, see .ci/flink-setup.sh):

    /work/venv-flink/bin/python -m pytest tests/flink -m flink

Every job runs in its own subprocess (``python -m streamlstm.adapters.flink``) with a hard
timeout, its temp files and logs under the test's tmp_path (the jobs share one numba cache,
NUMBA_CACHE, so the core compiles once per session); the pytest process never starts a JVM. Without pyflink or Java 17 the tests are skipped.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
JOB_TIMEOUT = float(os.environ.get("FLINK_TEST_JOB_TIMEOUT", "300"))
# One numba cache for all jobs of a session (the core compiles once, not once per job).
NUMBA_CACHE = os.path.join(os.environ.get("NUMBA_CACHE_DIR") or tempfile.gettempdir(), "streamlstm-flink-numba")


def _skip_reason():
    try:
        import pyflink  # noqa: F401
    except ImportError:
        return "pyflink not installed (use the venv from .ci/flink-setup.sh)"
    if shutil.which("java") is None:
        return "java not found (Java 17 needed by PyFlink)"
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "flink: needs PyFlink + Java (tests/flink, slow: starts Flink jobs)")


def pytest_collection_modifyitems(config, items):
    reason = _skip_reason()
    if reason is None:
        return
    for item in items:
        if "flink" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


class FlinkRun:
    def __init__(self, returncode, output, work_dir, out_dir):
        self.returncode = returncode
        self.output = output  # the job's stdout+stderr
        self.work_dir = work_dir
        self.out_dir = out_dir

    def rows(self):
        from streamlstm.adapters.flink import read_output

        return read_output(self.out_dir)

    def log_text(self):
        logs = os.path.join(self.work_dir, "log")
        text = []
        for f in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
            with open(os.path.join(logs, f), errors="replace") as fh:
                text.append(fh.read())
        return "\n".join(text)


@pytest.fixture
def flink_job(tmp_path):
    """run(input_paths, *cli_args, env=None, timeout=JOB_TIMEOUT) -> FlinkRun: one
    ``python -m streamlstm.adapters.flink`` job (cli_args give --model/--engine and the rest).
    Fails the test on timeout; the caller checks returncode."""
    counter = [0]

    def run(input_paths, *extra_cli, env=None, timeout=JOB_TIMEOUT):
        counter[0] += 1
        work = tmp_path / f"job{counter[0]}"
        out_dir = work / "out"
        work.mkdir()
        tmp = work / "tmp"
        tmp.mkdir()
        cmd = [sys.executable, "-m", "streamlstm.adapters.flink", "--output", str(out_dir), "--work-dir", str(work),
               "--pythonpath", HERE]
        for p in [input_paths] if isinstance(input_paths, (str, os.PathLike)) else input_paths:
            cmd += ["--input", str(p)]
        cmd += [str(x) for x in extra_cli]
        e = dict(os.environ)
        e.update(TMPDIR=str(tmp), JVM_ARGS=f"-Djava.io.tmpdir={tmp}", FLINK_LOG_DIR=str(work / "log"),
                 NUMBA_CACHE_DIR=NUMBA_CACHE)
        e.pop("_python_worker_execution_mode", None)
        e.update(env or {})
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, cwd=REPO_ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # the job's own process group (python + its JVM)
            out, _ = p.communicate()
            pytest.fail(f"flink job timed out after {timeout} s:\n{out[-4000:]}")
        print(f"flink job {' '.join(str(x) for x in extra_cli)}: {time.monotonic() - t0:.1f} s")
        return FlinkRun(p.returncode, out, str(work), str(out_dir))

    return run
