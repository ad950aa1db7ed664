"""Throughput of the Flink adapter's plumbing (FileSource -> key_by -> keyed bytes state ->
FileSink) per PyFlink execution mode, with a no-op engine or any engine factory.

Run it from the Flink venv (bash .ci/flink-setup.sh /work/venv-flink):

    /work/venv-flink/bin/python bench/bench_flink.py --events 200000 --keys 50
    /work/venv-flink/bin/python bench/bench_flink.py --modes thread --keys 5000 --bundle-size 10000

Modes: ``thread`` (pemja, embedded in the JVM), ``process`` (Beam workers; the local
mini-cluster runs them in the client process, "loopback"), ``process-workers`` (real worker
processes as on a cluster: ``_python_worker_execution_mode=process``).

Each configuration is one ``python -m streamlstm.adapters.flink`` subprocess (one JVM,
one local mini-cluster), checkpointing every second. Reported:
* ``job s``: env.execute() wall time (includes 5-10 s of job start-up);
* ``ev/s``: events / (last - first event seen by the engine), summed over worker processes,
  when the engine records it (the built-in no-op engine does): the steady-state rate.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)


# ------------------------------------------------------------------------------------------
# the no-op engine (imported by the workers as bench_flink:noop_engine)

class NoopEngine:
    """Keeps a fixed-size bytes blob per key (read it, write it back), predicts 0.0.

    On close() appends ``{"pid", "n", "first", "last"}`` to ``timing_path``."""

    def __init__(self, timing_path: str = "", state_bytes: str = "512"):
        self.timing_path = timing_path
        self.blob = bytes(int(state_bytes))
        self.n = 0
        self.first = None
        self.last = None

    def step(self, state, t, values):
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now
        self.n += 1
        return (state if state is not None else self.blob), 0.0, None

    def close(self):
        if self.timing_path and self.first is not None:
            with open(self.timing_path, "a") as f:
                f.write(json.dumps({"pid": os.getpid(), "n": self.n, "first": self.first, "last": self.last}) + "\n")


def noop_engine(timing_path: str = "", state_bytes: str = "512"):
    return NoopEngine(timing_path, state_bytes)


# ------------------------------------------------------------------------------------------

def write_events(path: str, n: int, n_keys: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            f.write(f"k{rng.randrange(n_keys)},{i},{rng.uniform(-1, 1):.6f}\n")


def run_one(mode: str, events_path: str, work: str, args) -> dict:
    os.makedirs(work, exist_ok=True)
    timing = os.path.join(work, "timing.jsonl")
    engine = args.engine or "bench_flink:noop_engine"
    engine_args = args.engine_arg if args.engine else [timing, str(args.state_bytes)]
    cmd = [sys.executable, "-m", "streamlstm.adapters.flink", "--input", events_path,
           "--output", os.path.join(work, "out"), "--work-dir", work, "--pythonpath", HERE,
           "--engine", engine, "--mode", "thread" if mode == "thread" else "process",
           "--parallelism", str(args.parallelism), "--checkpoint-ms", str(args.checkpoint_ms),
           "--restart-attempts", "0"]
    for a in engine_args:
        cmd += ["--engine-arg", a]
    if args.bundle_size:
        cmd += ["--bundle-size", str(args.bundle_size)]
    if args.state_cache_size:
        cmd += ["--state-cache-size", str(args.state_cache_size)]
    env = dict(os.environ)
    tmp = os.path.join(work, "tmp")
    os.makedirs(tmp, exist_ok=True)
    env.update(TMPDIR=tmp, JVM_ARGS=f"-Djava.io.tmpdir={tmp}", FLINK_LOG_DIR=os.path.join(work, "log"),
               NUMBA_CACHE_DIR=os.path.join(work, "numba-cache"))
    env.pop("_python_worker_execution_mode", None)
    if mode == "process-workers":
        env["_python_worker_execution_mode"] = "process"
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # this run's own process group (python + JVM)
        out, _ = p.communicate()
        return {"mode": mode, "error": f"timeout after {args.timeout} s"}
    wall = time.perf_counter() - t0
    res = {"mode": mode, "wall_s": round(wall, 2)}
    if p.returncode != 0:
        lines = [ln for ln in out.splitlines() if "Error" in ln or "Exception" in ln]
        res["error"] = (lines[-1] if lines else out[-300:]).strip()[:300]
        return res
    for ln in out.splitlines():
        if ln.startswith("flink job done in"):
            res["job_s"] = float(ln.split()[4])
    if os.path.exists(timing):
        recs = [json.loads(ln) for ln in open(timing) if ln.strip()]
        n = sum(r["n"] for r in recs)
        span = max(r["last"] for r in recs) - min(r["first"] for r in recs)
        res.update(engine_events=n, span_s=round(span, 3), events_per_s=round(n / span) if span > 0 else None)
    if "job_s" in res:
        res["events_per_s_job"] = round(args.events / res["job_s"])
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--keys", type=int, default=50)
    ap.add_argument("--modes", default="thread,process,process-workers")
    ap.add_argument("--parallelism", type=int, default=1)
    ap.add_argument("--checkpoint-ms", type=int, default=1000)
    ap.add_argument("--bundle-size", type=int, default=None, help="python.fn-execution.bundle.size (process)")
    ap.add_argument("--state-cache-size", type=int, default=None, help="python.state.cache-size (process)")
    ap.add_argument("--state-bytes", type=int, default=512, help="no-op engine's per-key blob")
    ap.add_argument("--engine", default=None, help="module:factory instead of the no-op engine")
    ap.add_argument("--engine-arg", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    base = tempfile.mkdtemp(prefix="bench-flink-")
    try:
        events_path = os.path.join(base, "events.csv")
        write_events(events_path, args.events, args.keys)
        results = []
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            r = run_one(mode, events_path, os.path.join(base, mode), args)
            r.update(events=args.events, keys=args.keys, parallelism=args.parallelism,
                     bundle_size=args.bundle_size, state_cache_size=args.state_cache_size)
            results.append(r)
            print(json.dumps(r), flush=True)
        print(f"\n{'mode':16} {'events':>8} {'keys':>6} {'job s':>7} {'ev/s (engine)':>14} {'ev/s (job)':>11}")
        for r in results:
            if "error" in r:
                print(f"{r['mode']:16} error: {r['error']}")
                continue
            print(f"{r['mode']:16} {r['events']:>8} {r['keys']:>6} {r.get('job_s', float('nan')):>7.2f} "
                  f"{r.get('events_per_s') or '-':>14} {r.get('events_per_s_job') or '-':>11}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
