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
        # the marker, not ``"flink" in item.keywords``: keywords hold this folder's name too,
        # and the unmarked in-process tests here run everywhere
        if item.get_closest_marker("flink") is not None:
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


class ContinuousJob:
    """A running ``--follow`` job (its own process group): drop files into its input
    directory, wait for committed output, stop it with a savepoint (SIGTERM) or SIGKILL it."""

    def __init__(self, popen, log_path, input_dir, out_dir, started):
        self.popen = popen
        self.log_path = log_path
        self.input_dir = input_dir
        self.out_dir = out_dir
        self.started = started

    def output(self):
        with open(self.log_path, errors="replace") as fh:
            return fh.read()

    def rows(self):
        from streamlstm.adapters.flink import read_output

        return read_output(self.out_dir)

    def wait_rows(self, n, timeout=JOB_TIMEOUT):
        """Waits until at least ``n`` committed rows are in the output; returns them."""
        t_end = time.monotonic() + timeout
        while True:
            rows = self.rows()
            if len(rows) >= n:
                return rows
            if self.popen.poll() is not None:
                pytest.fail(f"the job ended (rc {self.popen.returncode}) with {len(rows)} of {n} rows committed:\n"
                            f"{self.output()[-4000:]}")
            if time.monotonic() > t_end:
                self.kill()
                pytest.fail(f"{len(rows)} of {n} rows committed after {timeout} s:\n{self.output()[-4000:]}")
            time.sleep(0.1)

    def stop_with_savepoint(self, timeout=120):
        """SIGTERM to the job's Python process (not its group: the JVM is its child) ->
        the savepoint's path that it prints."""
        self.popen.send_signal(signal.SIGTERM)
        try:
            rc = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"no stop within {timeout} s after SIGTERM:\n{self.output()[-4000:]}")
        out = self.output()
        assert rc == 0, out[-4000:]
        paths = [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("savepoint: ")]
        assert len(paths) == 1, out[-4000:]
        return paths[0]

    def kill(self):
        """SIGKILL to the whole process group (Python and its JVM): no chance to clean up."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait()


def drop_file(input_dir, name, write):
    """Puts a new input file in place atomically: ``write(path)`` writes a hidden file, renamed
    after (the source ignores names starting with '.', and reads a file once, when found)."""
    hidden = os.path.join(input_dir, "." + name)
    result = write(hidden)
    os.rename(hidden, os.path.join(input_dir, name))
    return result


@pytest.fixture
def continuous_job(tmp_path):
    """start(input_dir, out_dir, *cli_args, env=None) -> ContinuousJob: ``python -m
    streamlstm.adapters.flink --follow 0.2 --input input_dir --output out_dir ...``, not
    waited for. Every job still running at the end of the test is killed."""
    jobs = []

    def start(input_dir, out_dir, *extra_cli, env=None):
        work = tmp_path / f"cjob{len(jobs) + 1}"
        (work / "tmp").mkdir(parents=True)
        os.makedirs(input_dir, exist_ok=True)
        cmd = [sys.executable, "-m", "streamlstm.adapters.flink", "--input", str(input_dir), "--follow", "0.2",
               "--output", str(out_dir), "--work-dir", str(work), "--pythonpath", HERE, *[str(x) for x in extra_cli]]
        e = dict(os.environ)
        e.update(TMPDIR=str(work / "tmp"), JVM_ARGS=f"-Djava.io.tmpdir={work / 'tmp'}",
                 FLINK_LOG_DIR=str(work / "log"), NUMBA_CACHE_DIR=NUMBA_CACHE)
        e.pop("_python_worker_execution_mode", None)
        e.update(env or {})
        log_path = str(work / "job.log")
        with open(log_path, "w") as log:
            p = subprocess.Popen(cmd, cwd=REPO_ROOT, env=e, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        job = ContinuousJob(p, log_path, str(input_dir), str(out_dir), time.monotonic())
        jobs.append(job)
        return job

    yield start
    for job in jobs:
        if job.popen.poll() is None:
            job.kill()


def latest_checkpoint(checkpoint_dir):
    """The newest complete checkpoint (``<job id>/chk-N`` holding ``_metadata``) under
    ``checkpoint_dir``, over all jobs that wrote there."""
    import glob

    done = glob.glob(os.path.join(str(checkpoint_dir), "*", "chk-*", "_metadata"))
    assert done, f"no completed checkpoint under {checkpoint_dir}"
    return max((os.path.dirname(m) for m in done), key=lambda d: (os.path.getmtime(os.path.join(d, "_metadata")), d))
