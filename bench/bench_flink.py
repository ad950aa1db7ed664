"""Throughput of the Flink adapter: our engines vs a no-op stateful function, same job, same box.

Run it from the Flink venv (bash .ci/flink-setup.sh /work/venv-flink):

    /work/venv-flink/bin/python bench/bench_flink.py                       # thread mode
    /work/venv-flink/bin/python bench/bench_flink.py --modes thread,process-workers --write-results

Every configuration is one ``python -m streamlstm.adapters.flink`` job (one JVM, one local
mini-cluster, checkpoint every second, parallelism 1): FileSource -> key_by ->
ModelProcessFunction (ValueState of bytes) -> FileSink. Only the engine differs:

* ``noop``: reads the key's bytes, writes them back (a fixed blob the first time), emits the
  input line: the cost of the PyFlink plumbing itself;
* ``serve``: ``ServingEngine`` (frozen shared model, per key the ``KeyedLSTM.state_bytes``);
* ``learn``: ``LearningEngine`` (per-key model, ``OnlineLSTM.to_bytes()`` in state);
* ``noop-learn``: the no-op with a blob as large as a learning key's state (isolates what
  moving that many bytes through Flink state costs);
* ``serve-unc``: ``serve`` with ``--interval 0.9 --anomaly`` (per key a calibrator row and
  the anomaly scorer's state next to h and c);
* ``forecast``: ``ForecastingEngine`` (``--ahead 1``: per key a default ``Forecaster``, its
  ``to_bytes()`` in state), on rows ``key,time,y`` of keyed noisy seasonal series.

Every engine is wrapped by the same timer (one ``perf_counter`` per event). Reported:
``ev/s`` = events / (last - first event seen by the engine), the steady-state rate without
the job's start-up; ``job s`` = env.execute() wall time (includes 5-10 s of start-up).
Modes: ``thread`` (pemja, embedded in the JVM), ``process`` (Beam workers in the client
process, "loopback"), ``process-workers`` (real worker processes as on a cluster).

``--baseline REF`` (a git ref, e.g. ``v0.1.0``) also runs every configuration with the
package (``streamlstm/`` and ``adapters/``) of that commit, put first on the jobs'
PYTHONPATH, alternating with the working tree's, ``--repeat`` times each: old and new in
one run on the same loaded machine, compared by the median of their ev/s.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import _results

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "RESULTS.md")
START, END = "<!-- flink:start -->", "<!-- flink:end -->"


# ------------------------------------------------------------------------------------------
# engines (imported by the workers as bench_flink:timed_engine)

class NoopEngine:
    """Reads the key's bytes, writes them back (``blob_bytes`` zero bytes the first time),
    emits the line unchanged."""

    def __init__(self, blob_bytes: int):
        self.blob = bytes(int(blob_bytes))

    def process(self, state, line):
        return (state if state is not None else self.blob), line


class Timed:
    """Records the first and last event time and the count; appends them on close()."""

    def __init__(self, inner, timing_path: str):
        self.inner = inner
        self.timing_path = timing_path
        self.n = 0
        self.first = None
        self.last = None
        self.inside = 0.0

    def process(self, state, line):
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.n += 1
        r = self.inner.process(state, line)
        self.last = time.perf_counter()
        self.inside += self.last - now
        return r

    def close(self):
        if self.timing_path and self.first is not None:
            with open(self.timing_path, "a") as f:
                f.write(json.dumps({"pid": os.getpid(), "n": self.n, "first": self.first, "last": self.last,
                                    "inside": self.inside, "package": _package_dir(),
                                    "decoded": getattr(self.inner, "n_decoded", None)}) + "\n")


def _package_dir() -> str:
    import streamlstm.adapters.flink

    return os.path.dirname(os.path.dirname(os.path.abspath(streamlstm.adapters.flink.__file__)))


UNCERTAINTY = '{"interval": [0.9], "anomaly": true}'
FORECAST = '{"ahead": 1}'


def timed_engine(timing_path: str, kind: str, arg: str):
    """kind noop: arg = blob size; serve / learn / serve-unc: arg = model file; forecast: its settings."""
    from streamlstm.adapters.flink import forecasting_engine, learning_engine, serving_engine

    if kind == "noop":
        inner = NoopEngine(int(arg))
    elif kind == "serve-unc":
        inner = serving_engine(arg, "fail", "64", UNCERTAINTY)
    elif kind == "forecast":
        inner = forecasting_engine(arg)
    else:
        inner = {"serve": serving_engine, "learn": learning_engine}[kind](arg)
    return Timed(inner, timing_path)


# ------------------------------------------------------------------------------------------

def make_model(path: str, n_inputs: int, hidden: int) -> dict:
    """A model trained on a few hundred events; returns the state sizes per key."""
    from streamlstm import OnlineLSTM
    from streamlstm.adapters.flink import ForecastingEngine, LearningEngine, ServingEngine

    rng = random.Random(0)
    m = OnlineLSTM(n_inputs=n_inputs, hidden=hidden, lr=1e-2, seed=0)
    for _ in range(300):
        m.learn_one([rng.uniform(-1, 1) for _ in range(n_inputs)], rng.uniform(-1, 1))
    m.save(path)
    state = unc_state = None
    serving = ServingEngine(path, uncertainty=UNCERTAINTY)
    forecasting = ForecastingEngine(ahead=json.loads(FORECAST)["ahead"])
    for t in range(100):
        xs = ",".join("0.5" for _ in range(n_inputs))
        unc_state, _ = serving.process(unc_state, f"k,{t},{xs},0.1")
        state, _ = forecasting.process(state, f"k,{t},{rng.gauss(0, 1)}")
    return {"serve": len(ServingEngine(path).zero_state), "learn": len(LearningEngine(path).initial_state),
            "serve-unc": len(unc_state or b""), "forecast": len(state or b"")}


def write_events(path: str, n: int, n_keys: int, n_inputs: int, labelled: float, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            xs = ",".join(f"{rng.uniform(-1, 1):.6f}" for _ in range(n_inputs))
            y = f",{rng.uniform(-1, 1):.6f}" if rng.random() < labelled else ""
            f.write(f"k{rng.randrange(n_keys)},{i},{xs}{y}\n")


def write_series(path: str, n: int, n_keys: int, seed: int = 0) -> None:
    """Rows ``key,time,y`` of keyed series (a daily cycle of 24 steps, a level per key, noise)."""
    import math

    rng = random.Random(seed)
    steps = [0] * n_keys
    with open(path, "w") as f:
        for i in range(n):
            k = rng.randrange(n_keys)
            steps[k] += 1
            y = 10.0 * (k + 1) + 3.0 * math.sin(2 * math.pi * steps[k] / 24) + rng.gauss(0, 0.5)
            f.write(f"k{k},{i},{y:.4f}\n")


def baseline_package(ref: str, base: str) -> str:
    """A directory holding the ``streamlstm`` package (with its ``adapters``) of commit ``ref``,
    laid out as installed; put it first on PYTHONPATH to run that version."""
    archive = subprocess.run(["git", "archive", ref, "streamlstm", "adapters"], cwd=REPO_ROOT,
                             capture_output=True, check=True).stdout
    src = os.path.join(base, f"baseline-src-{ref}")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(src, filter="data")
    shim = os.path.join(base, f"baseline-{ref}")
    os.makedirs(shim)
    shutil.move(os.path.join(src, "streamlstm"), os.path.join(shim, "streamlstm"))
    shutil.move(os.path.join(src, "adapters"), os.path.join(shim, "streamlstm", "adapters"))
    return shim


def run_one(mode: str, engine: str, events_path: str, n_events: int, work: str, args, model: str,
            sizes: dict, code: str = "working tree", package_dir: str | None = None) -> dict:
    os.makedirs(work, exist_ok=True)
    timing = os.path.join(work, "timing.jsonl")
    kind, arg = {"noop": ("noop", sizes["serve"]), "noop-learn": ("noop", sizes["learn"]),
                 "serve": ("serve", model), "learn": ("learn", model), "serve-unc": ("serve-unc", model),
                 "forecast": ("forecast", FORECAST)}[engine]
    cmd = [sys.executable, "-m", "streamlstm.adapters.flink", "--input", events_path,
           "--output", os.path.join(work, "out"), "--work-dir", work, "--pythonpath", HERE,
           "--engine", "bench_flink:timed_engine", "--engine-arg", timing, "--engine-arg", kind,
           "--engine-arg", str(arg), "--mode", "thread" if mode == "thread" else "process",
           "--parallelism", "1", "--checkpoint-interval", str(args.checkpoint_ms), "--restart-attempts", "0"]
    env = dict(os.environ)
    tmp = os.path.join(work, "tmp")
    os.makedirs(tmp, exist_ok=True)
    env.update(TMPDIR=tmp, JVM_ARGS=f"-Djava.io.tmpdir={tmp}", FLINK_LOG_DIR=os.path.join(work, "log"),
               NUMBA_CACHE_DIR=args.numba_cache)
    env.pop("_python_worker_execution_mode", None)
    if mode == "process-workers":
        env["_python_worker_execution_mode"] = "process"
    if package_dir is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_dir, env.get("PYTHONPATH")) if p)
        env["NUMBA_CACHE_DIR"] = os.path.join(package_dir, "numba-cache")
    res = {"mode": mode, "engine": engine, "code": code, "events": n_events,
           "state_bytes": sizes["learn"] if engine in ("learn", "noop-learn") else sizes.get(engine, sizes["serve"])}
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # this run's own process group (python + JVM)
        out, _ = p.communicate()
        res["error"] = f"timeout after {args.timeout} s"
        return res
    res["wall_s"] = round(time.perf_counter() - t0, 2)
    if p.returncode != 0:
        lines = [ln for ln in out.splitlines() if "Error" in ln or "Exception" in ln]
        res["error"] = (lines[-1] if lines else out[-300:]).strip()[:300]
        return res
    for ln in out.splitlines():
        if ln.startswith("flink job done in"):
            res["job_s"] = float(ln.split()[4])
    if os.path.exists(timing):
        recs = [json.loads(ln) for ln in Path(timing).read_text().splitlines() if ln.strip()]
        n = sum(r["n"] for r in recs)
        span = max(r["last"] for r in recs) - min(r["first"] for r in recs)
        res.update(engine_events=n, span_s=round(span, 3), events_per_s=round(n / span) if span > 0 else None,
                   us_in_function=round(sum(r["inside"] for r in recs) / n * 1e6, 1),
                   us_per_event=round(span / n * 1e6, 1))
        res["package"] = recs[0]["package"]
        if recs[0].get("decoded") is not None:
            res["decoded"] = sum(r["decoded"] for r in recs)
    return res


def _table(results: list) -> list:
    base = {(r["mode"], r["engine"]): r.get("events_per_s") for r in results
            if r.get("code", "working tree") == "working tree"}
    lines = [("| mode | function | state bytes/key | events | ev/s (steady) | vs no-op | µs/event in the function "
             "| job s (with start-up) |"),
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['mode']} | {r['engine']} | | {r['events']} | error: {r['error'][:80]} | | | |")
            continue
        ref = base.get((r["mode"], "noop-learn" if r["engine"] == "learn" else "noop"))
        ratio = (f"{r['events_per_s'] / ref:.0%}" if ref and r.get("events_per_s")
                 and r["engine"] in ("serve", "learn", "serve-unc", "forecast") else "")
        if r["engine"] == "serve-unc" and base.get((r["mode"], "serve")) and r.get("events_per_s"):
            ratio += f" ({r['events_per_s'] / base[(r['mode'], 'serve')]:.0%} of serve)"
        if r["engine"] == "learn" and base.get((r["mode"], "noop")) and r.get("events_per_s"):
            ratio += f" ({r['events_per_s'] / base[(r['mode'], 'noop')]:.0%} of small no-op)"
        name = r["engine"] if r.get("code", "working tree") == "working tree" else f"{r['engine']} ({r['code']})"
        lines.append(f"| {r['mode']} | {name} | {r['state_bytes']} | {r['events']} | "
                     f"{r.get('events_per_s') or '-':,} | {ratio} | {r.get('us_in_function', '-')} | "
                     f"{r.get('job_s', float('nan')):.1f} |")
    return lines


def _comparison(results: list, baseline: str) -> list:
    """Median ev/s per configuration, working tree vs the baseline ref."""
    runs: dict = {}
    for r in results:
        if r.get("events_per_s"):
            runs.setdefault((r["mode"], r["engine"]), {}).setdefault(r["code"], []).append(r["events_per_s"])
    lines = [f"| mode | function | ev/s {baseline} (runs) | ev/s working tree (runs) | working tree / {baseline} |",
             "|---|---|---:|---:|---:|"]
    for (mode, engine), by_code in runs.items():
        old, new = by_code.get(baseline, []), by_code.get("working tree", [])
        if not old or not new:
            continue
        o, n = statistics.median(old), statistics.median(new)
        lines.append(f"| {mode} | {engine} | {o:,.0f} ({', '.join(f'{v:,}' for v in old)}) | "
                     f"{n:,.0f} ({', '.join(f'{v:,}' for v in new)}) | {n / o:.0%} |")
    return lines


def write_results(results: list, args) -> None:
    import numpy
    import pyflink.version

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True).stdout.strip()
        if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                          capture_output=True, text=True).stdout.strip():
            commit += " + uncommitted changes"
    except OSError:
        commit = "?"
    cpu = _results.cpu_model()
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [START, "## Flink adapter throughput (`bench/bench_flink.py`)", "",
            (f"{now} · {cpu} ({os.cpu_count()} CPUs, shared) · Python {platform.python_version()} · "
            f"apache-flink {pyflink.version.__version__} · numpy {numpy.__version__} · streamlstm ({commit}) · "
            f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"), "",
            (f"One local job per row: FileSource → key_by → KeyedProcessFunction (ValueState of bytes) → FileSink, "
            f"parallelism 1, checkpoint every {args.checkpoint_ms} ms, {args.keys} keys, model: "
            f"n_inputs={args.inputs}, hidden={args.hidden}, float64; {args.labelled:.0%} of rows carry the target. "
            "`ev/s` = events / time between the first and the last event seen by the function (steady state, "
            "same timer wrapped around every function); `vs no-op` divides by the no-op function on the same "
            "job with a state blob of the same size (learn: also vs the small no-op)."), "",
            *_table(results), "",
            ("- `noop`: reads the key's bytes from Flink state, writes them back, emits the line: the PyFlink "
            "floor (parse, state read/write across the JVM boundary, output)."),
            ("- `serve`: `ServingEngine` — parse the row, compare the key's bytes from Flink with the memo "
            "(reload the row with `KeyedLSTM.set_state_bytes` only if they differ), `step_one`, `state_bytes` "
            "back to Flink, format `key,time,prediction,error`."),
            ("- `learn`: `LearningEngine` — per-key model: `learn_one` (or `advance`) then `to_bytes()` back into "
            "Flink state every event (required: a Python KeyedProcessFunction has no pre-checkpoint hook); the "
            "decoded model is memoised by its exact bytes, so `from_bytes` runs only after a restore or an "
            "eviction. `to_bytes` (~250-350 µs at H=16 on a quiet core, more under load) dominates: the whole per-key model (weights, optimizer moments, gradient, ring) is serialised after every event; `noop-learn` moves a blob of the same size."),
            ("- `serve-unc`: `serve` with `--interval 0.9 --anomaly`: per key the calibrator's row and the "
            "anomaly scorer's state travel next to h and c (one versioned container per key), the bounds are "
            "taken before and the residual folded in after each labelled row."),
            (f"- `forecast`: `ForecastingEngine` (`--ahead 1`, default `Forecaster`: experts, autoregressions, "
            f"LSTM expert), {args.forecast_events} rows `key,time,y` over the same {args.keys} keys: per key its "
            "own forecaster, `learn_one` + `forecast` and its whole `to_bytes()` back into Flink state every "
            "event (the forecaster's serialisation dominates; decoded forecasters are memoised like `learn`'s)."),
            "", END]
    _results.write_section("flink", "\n".join(body), RESULTS)
    print(f"wrote the flink section of {RESULTS}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=150_000, help="events for noop and serve")
    ap.add_argument("--learn-events", type=int, default=15_000, help="events for learn and noop-learn")
    ap.add_argument("--forecast-events", type=int, default=3_000, help="events for forecast")
    ap.add_argument("--keys", type=int, default=50)
    ap.add_argument("--inputs", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--labelled", type=float, default=0.8, help="share of rows with a target")
    ap.add_argument("--modes", default="thread")
    ap.add_argument("--engines", default="noop,serve,serve-unc,noop-learn,learn,forecast")
    ap.add_argument("--checkpoint-ms", type=int, default=1000)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--write-results", action="store_true", help="replace the flink section of bench/RESULTS.md")
    ap.add_argument("--baseline", default=None, metavar="REF",
                    help="also run each configuration with the package of this git ref (e.g. v0.1.0), alternating")
    ap.add_argument("--repeat", type=int, default=1, help="runs per configuration (and per code version)")
    args = ap.parse_args(argv)

    base = tempfile.mkdtemp(prefix="bench-flink-")
    # the workers load the kernels this process compiles (make_model) from this cache
    args.numba_cache = os.environ["NUMBA_CACHE_DIR"] = os.path.join(base, "numba-cache")
    try:
        model = os.path.join(base, "model.slstm")
        sizes = make_model(model, args.inputs, args.hidden)
        files = {}
        for name, n in (("small", args.events), ("learn", args.learn_events)):
            files[name] = os.path.join(base, f"events-{name}.csv")
            write_events(files[name], n, args.keys, args.inputs, args.labelled)
        files["forecast"] = os.path.join(base, "events-forecast.csv")
        write_series(files["forecast"], args.forecast_events, args.keys)
        codes: list[tuple[str, str | None]] = [("working tree", None)]
        if args.baseline:
            codes.append((args.baseline, baseline_package(args.baseline, base)))
        results = []
        i = 0
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
                for _rep in range(args.repeat):
                    for code, package_dir in codes:
                        i += 1
                        big = engine in ("learn", "noop-learn")
                        events = "forecast" if engine == "forecast" else "learn" if big else "small"
                        n_events = {"forecast": args.forecast_events, "learn": args.learn_events,
                                    "small": args.events}[events]
                        r = run_one(mode, engine, files[events], n_events,
                                    os.path.join(base, f"{i}-{mode}-{engine}"), args, model, sizes, code,
                                    package_dir)
                        r.update(keys=args.keys, hidden=args.hidden, inputs=args.inputs)
                        results.append(r)
                        print(json.dumps(r), flush=True)
        print()
        print("\n".join(_table(results)))
        if args.baseline:
            print()
            print("\n".join(_comparison(results, args.baseline)))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        if args.write_results:
            write_results(results, args)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
