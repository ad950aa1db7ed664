#!/usr/bin/env python
"""KeyedLSTM benchmark: one model serving (and learning from) many keyed streams.

Measured in one process, one thread (NUMBA/OPENBLAS/OMP threads = 1), float32, n_inputs=1,
n_outputs=1, layers=1, default OnlineLSTM settings (online standardisation, Adam, clip 1.0,
bptt=16, update_every=1):

* for 1, 1,000, 100,000 and 1,000,000 keys at H=32: events/s of ``step_many`` (inference)
  and ``learn_many`` (every event labelled) on micro-batches of B events whose keys are
  drawn uniformly from the key population (all keys exist beforehand), and of the
  single-stream API in a Python loop with state swapping (``model.state = s;
  model.advance(x)`` / ``learn_one(x, y)``; ``states[k] = model.state``) on the same key
  distribution, in the same run;
* bytes per key: tracemalloc's count of everything the engine allocates while the keys
  are created (state rows, counters, the key dictionary and the key objects), divided by
  the number of keys; and the state row alone (``state_nbytes_per_key``);
* learning keys are capped by a memory budget (``--learn-mem-gb``): a learning key keeps
  the core's whole TBPTT history (``bptt`` steps of inputs and activations);
* GFLOP/s of ``step_many`` at H = 32, 64, 128 (2·4H·(1+H) + 2H flops per event, the
  count of bench_core.py) against the one-thread float32 GEMM ceiling (numpy matmul,
  threadpoolctl limit 1, best of n×n sizes).

Writes a section between ``<!-- keyed:start -->`` and ``<!-- keyed:end -->`` into
bench/RESULTS.md (other sections are kept) and the raw numbers to bench/keyed_results.json.

    python bench/bench_keyed.py            # full run (a few minutes)
    python bench/bench_keyed.py --quick    # smoke run
    python bench/bench_keyed.py --against /tmp/v010
        # KeyedLSTM against another checkout (a worktree of v0.1.0) at 100,000 keys, H=32,
        # float32, interleaved in one process, with the per-event loop: section "keyed-versions"
"""
from __future__ import annotations

import os

# One BLAS thread (the GEMM ceiling is a one-thread figure). Numba keeps its threads: our
# engines are built with threads=1 except the --against row that uses them.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import datetime as _dt
import gc
import json
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import _results
import _versions
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from streamlstm import KeyedLSTM, LSTMState, OnlineLSTM
from streamlstm.keyed import usable_cpus

START, END = "<!-- keyed:start -->", "<!-- keyed:end -->"
# CPU time of this (single-threaded) process: on the shared 2-core machine other jobs take
# turns on our core, which wall time would count and CPU time does not (cache and memory
# contention remain). Wall-clock numbers go to the JSON too.
clock = time.process_time


def flops_per_event(H, n_in=1, n_out=1):
    return 2 * 4 * H * (n_in + H) + 2 * H * n_out


def make_model(H, seed=0, lib=None):
    return (lib.OnlineLSTM if lib else OnlineLSTM)(n_inputs=1, n_outputs=1, hidden=H, dtype="float32", seed=seed)


def gemm_ceiling(quick):
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:  # OPENBLAS_NUM_THREADS=1 is set above anyway
        import contextlib
        threadpool_limits = lambda **kw: contextlib.nullcontext()
        threadpool_info = list
    sizes = (256, 512) if quick else (256, 512, 1024)
    reps = 5 if quick else 9
    res = {}
    rng = np.random.default_rng(0)
    with threadpool_limits(limits=1, user_api="blas"):
        info = [d for d in threadpool_info() if d.get("user_api") == "blas"]
        for n in sizes:
            a = rng.standard_normal((n, n), dtype=np.float32)
            b = rng.standard_normal((n, n), dtype=np.float32)
            c = a @ b
            ts = []
            for _ in range(reps):
                t = clock()
                np.matmul(a, b, out=c)
                ts.append(clock() - t)
            res[n] = 2.0 * n ** 3 / statistics.median(ts) / 1e9
    blas = [{k: d.get(k) for k in ("internal_api", "architecture", "version", "num_threads")} for d in info]
    return {"sizes": res, "peak_gflops": max(res.values()), "blas": blas}


def key_batches(rng, n_keys, B, n):
    return [rng.integers(0, n_keys, B) for _ in range(n)]


def timed_batches(fn, batches, X, Y, walls=None):
    ts = []
    for ks in batches:
        w = time.perf_counter()
        t = clock()
        fn(ks, X, Y)
        ts.append(clock() - t)
        if walls is not None:
            walls.append(time.perf_counter() - w)
    return ts


def str_keys(ks):
    return [f"user-{k}" for k in ks.tolist()]


def prefill(engine, n_keys, B, steps=1, strings=False):
    """Create every key with ``steps`` unlabelled events (a learning key needs bptt of them
    for a full TBPTT window, as in a long-running stream)."""
    X = np.full((B, 1), 0.25)
    for _ in range(steps):
        for a in range(0, n_keys, B):
            ks = np.arange(a, min(a + B, n_keys))
            engine.step_many(str_keys(ks) if strings else ks, X[:ks.size])


def build(H, n_keys, learn, B, strings=False, lib=None, threads=1):
    """Engine with n_keys keys (of ``lib``, another checkout's streamlstm, or ours, learning
    on ``threads`` threads); returns (engine, bytes per key by tracemalloc, seconds)."""
    model = make_model(H, lib=lib)
    gc.collect()
    tracemalloc.start()
    t = time.perf_counter()
    base = tracemalloc.get_traced_memory()[0]
    if lib:
        engine = lib.KeyedLSTM(model, learn=learn, capacity=max(n_keys, 1))
    else:
        engine = KeyedLSTM(model, learn=learn, capacity=max(n_keys, 1), threads=threads)
    prefill(engine, n_keys, B, strings=strings)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    if learn:
        prefill(engine, n_keys, B, model.bptt - 1)
    return engine, used / n_keys, time.perf_counter() - t


def loop_baseline(H, n_keys, n_events, learn, seed=1, strings=False, gc_off=False):
    """``loop_rate`` in a fresh interpreter: the cyclic garbage collector's full passes walk
    every object of the process, and this benchmark's own (engines of the reference
    checkout, results) would make them, not the loop, the cost (0.5k instead of 20k
    events/s measured once with the collector on)."""
    params = dict(H=H, n_keys=n_keys, n_events=n_events, learn=learn, seed=seed, strings=strings, gc_off=gc_off)
    out = subprocess.run([sys.executable, __file__, "--loop", json.dumps(params)], check=True,
                         capture_output=True, text=True).stdout
    return float(out.split()[-1])


def loop_rate(H, n_keys, n_events, learn, seed=1, strings=False, gc_off=False):
    """The single-stream API in a Python loop, state swapping, same key distribution.

    Each swap allocates an LSTMState (a garbage-collected object), so the cyclic garbage
    collector's passes are part of the loop's cost, erratically (1x to 3x between runs);
    ``gc_off`` measures the loop's best case with the collector disabled."""
    model = make_model(H)
    if learn:  # unseen keys start like the engine's: bptt unlabelled steps behind them
        for _ in range(model.bptt):
            model.advance([0.25])
        zero = model.state
    else:
        zero = LSTMState(np.zeros(model._state_end, dtype=np.float32), np.zeros(2, dtype=np.int64), 1, H)
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, n_keys, n_events)
    keys = str_keys(keys) if strings else keys.tolist()
    X = rng.normal(size=(n_events, 1))
    Y = rng.normal(size=n_events).tolist()
    states = {}
    get = states.get
    if gc_off:
        gc.collect()
        gc.disable()
    t = clock()
    if learn:
        for k, x, y in zip(keys, X, Y):
            model.state = get(k, zero)
            model.learn_one(x, y)
            states[k] = model.state
    else:
        for k, x in zip(keys, X):
            model.state = get(k, zero)
            model.advance(x)
            states[k] = model.state
    eps = n_events / (clock() - t)
    gc.enable()
    return eps


def batch_call(engine, learn):
    """The timed call on one batch, ``fn(keys, X, Y)``: ``learn_many``, or ``step_many`` (no
    targets). The engine is bound here, not in a closure of the caller, so that the caller's
    ``del`` of the engine and of this call frees it."""
    if learn:
        return engine.learn_many
    return lambda ks, X, Y: engine.step_many(ks, X)


def run_keys(args, H, n_keys, learn, strings=False):
    B = args.batch
    bytes_learn_key = None
    capped = None
    if learn:
        probe = KeyedLSTM(make_model(H), learn=True, capacity=1)
        bytes_learn_key = probe.state_nbytes_per_key + 200  # + index and bookkeeping, roughly
        cap = int(args.learn_mem_gb * 1e9 // bytes_learn_key)
        if n_keys > cap:
            capped = cap
    n_eff = capped or n_keys
    engine, bpk, t_build = build(H, n_eff, learn, B, strings)
    rng = np.random.default_rng(7)
    n_batches = args.batches if n_eff > 1 or not learn else max(2, args.batches // 2)
    batches = key_batches(rng, n_eff, B, n_batches)
    distinct = float(np.mean([np.unique(b).size for b in batches]))
    if strings:
        batches = [str_keys(b) for b in batches]
    X = rng.normal(size=(B, 1))
    Y = rng.normal(size=B)
    fn = batch_call(engine, learn)
    fn(batches[0], X, Y)  # warm-up (compilation is cached; first-touch of pages)
    ts, walls = [], []
    for _ in range(args.repeats):
        ts += timed_batches(fn, batches, X, Y, walls)
    med = statistics.median(ts)
    n_loop = args.loop_events_learn if learn else args.loop_events
    loop_eps = loop_baseline(H, n_eff, n_loop, learn, strings=strings)
    loop_nogc = loop_baseline(H, n_eff, n_loop, learn, strings=strings, gc_off=True)
    out = {
        "H": H, "keys": n_keys, "keys_measured": n_eff, "key_type": "str" if strings else "int", "capped": capped is not None, "learn": learn,
        "batch": B, "distinct_keys_per_batch": distinct, "waves_last_batch": int(engine._waves),
        "events_per_s": B / med, "events_per_s_best": B / min(ts), "us_per_event": med / B * 1e6,
        "batch_cpu_s": ts, "batch_wall_s": walls, "loop_events_per_s": loop_eps, "loop_events": n_loop,
        "speedup_vs_loop": (B / med) / loop_eps, "loop_gc_off_events_per_s": loop_nogc,
        "speedup_vs_loop_gc_off": (B / med) / loop_nogc, "bytes_per_key_traced": bpk,
        "state_bytes_per_key": engine.state_nbytes_per_key, "build_s": t_build,
        "gflops": flops_per_event(H) * B / med / 1e9,
    }
    del engine, fn  # fn holds the engine too: both go before the next configuration is built
    gc.collect()
    print(f"  H={H} keys={n_keys:>9,}{' str' if strings else ''}{f' (capped to {n_eff})' if capped else ''} "
          f"{'learn' if learn else 'infer'}: {out['events_per_s']:,.0f} ev/s "
          f"({out['us_per_event']:.2f} µs/ev; loop {loop_eps:,.0f} ev/s x{out['speedup_vs_loop']:.1f}, "
          f"gc off {loop_nogc:,.0f} x{out['speedup_vs_loop_gc_off']:.1f}); "
          f"{bpk:.0f} B/key traced, {out['state_bytes_per_key']} B/key state; {distinct:.0f} keys/batch",
          flush=True)
    return out


def run_flops(args, H, n_keys):
    B = args.batch
    engine = KeyedLSTM(make_model(H), capacity=n_keys)
    prefill(engine, n_keys, B)
    rng = np.random.default_rng(3)
    batches = key_batches(rng, n_keys, B, args.batches)
    X = rng.normal(size=(B, 1))
    engine.step_many(batches[0], X)
    ts, walls = [], []
    for _ in range(args.repeats):
        ts += timed_batches(lambda ks, X, Y: engine.step_many(ks, X), batches, X, None, walls)
    med, best = statistics.median(ts), min(ts)
    fl = flops_per_event(H)
    out = {"H": H, "keys": n_keys, "batch": B, "us_per_event": med / B * 1e6,
           "gflops": fl * B / med / 1e9, "gflops_best": fl * B / best / 1e9, "flops_per_event": fl,
           "batch_cpu_s": ts, "batch_wall_s": walls, "gflops_wall_median": fl * B / statistics.median(walls) / 1e9}
    print(f"  H={H}: {out['us_per_event']:.2f} µs/event, {out['gflops']:.1f} GFLOP/s "
          f"(best batch {out['gflops_best']:.1f})", flush=True)
    return out


def machine_info():
    import numba
    return {"cpu": _results.cpu_model(), "n_cpus": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "numba": numba.__version__,
            "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "loadavg_start": _results.load_average(),
            "git": _results.git_head(REPO)}


def _n(v):
    return f"{v:,.0f}"


def render(args, info, gemm, rows, flops):
    peak = gemm["peak_gflops"]
    L = [START, "## Many keys, one model (`bench/bench_keyed.py`)", ""]
    L.append(f"{info['date']} · {info['cpu']} ({info['n_cpus']} CPUs, shared) · Python {info['python']} · "
             f"numpy {info['numpy']} · numba {info['numba']} · streamlstm ({info['git']} + working tree)"
             + (" · **--quick run**" if args.quick else ""))
    L.append("")
    L.append(f"One thread. float32, n_inputs=1, n_outputs=1, layers=1, OnlineLSTM defaults (standardisation, "
             f"Adam, clip 1.0, bptt=16, update_every=1). Micro-batches of B={args.batch:,} events, keys uniform "
             f"over the population (all keys created beforehand; learning keys with bptt steps of history), "
             f"median over {args.repeats}×{args.batches} batches. Times are CPU time of the (single-threaded) "
             f"process, GEMM ceiling included: other jobs on this shared machine take turns on our core, "
             f"which wall time would count (wall times are in keyed_results.json). Loop = the single-stream API with state swapping in Python (`model.state = s; "
             f"model.advance(x)` or `learn_one(x, y)`; `states[k] = model.state`), same key distribution, "
             f"same run, each in a fresh interpreter (see loop_baseline). Learning on several threads "
             f"(`KeyedLSTM(threads=...)`, the default: the CPUs the process may use) is in the section "
             f"\"KeyedLSTM against v0.1.0\". Load average at start / end: {' '.join(info['loadavg_start'])} / "
             f"{' '.join(info.get('loadavg_end', []))}.")
    L.append("")
    L.append("### Events per second and memory per key (H=32)")
    L.append("")
    L.append("| keys | mode | keys/batch | keyed ev/s | µs/event | loop ev/s | keyed / loop | loop ev/s, gc off | keyed / loop, gc off | bytes/key (all) | bytes/key (state row) |")
    L.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        keys = _n(r["keys"]) + (f" (capped: {_n(r['keys_measured'])})" if r["capped"] else "") \
            + (" str keys" if r.get("key_type") == "str" else "")
        L.append(f"| {keys} | {'learn' if r['learn'] else 'infer'} | {_n(r['distinct_keys_per_batch'])} | "
                 f"{_n(r['events_per_s'])} | {r['us_per_event']:.2f} | {_n(r['loop_events_per_s'])} | "
                 f"**{r['speedup_vs_loop']:.1f}×** | {_n(r['loop_gc_off_events_per_s'])} | "
                 f"**{r['speedup_vs_loop_gc_off']:.1f}×** | {_n(r['bytes_per_key_traced'])} | {r['state_bytes_per_key']:,} |")
    L.append("")
    capped = [r for r in rows if r["capped"]]
    L.append("- The loop allocates an `LSTMState` per swap; Python's cyclic garbage collector then costs it "
             "1x to 3x, erratically from run to run. 'gc off' is the same loop with the collector disabled "
             "(its best case, and the conservative comparison).")
    L.append("- Keys are numpy int64 arrays (integer keys live in an int64 hash table searched inside the "
             "compiled call), except the \"str keys\" row: Python lists of strings like 'user-123' "
             "(a dict lookup per event, and the key strings themselves in memory).")
    L.append("- bytes/key (all): tracemalloc's count of everything allocated while the keys were created "
             "(state rows, TBPTT counters, the key index and key objects, LRU/expiry stamps) / keys. "
             "State row: inference keeps h and c (2·H·layers float32 = 256 B at H=32); learning keeps the "
             "core's whole stream buffer (h, c and the ring of the last bptt=16 steps: inputs, gate "
             "activations, c, tanh c, output, label) + 2 int64 counters.")
    if capped:
        r = capped[0]
        L.append(f"- Learning at {_n(r['keys'])} keys does not fit the memory budget of this run "
                 f"(--learn-mem-gb {args.learn_mem_gb:g}, {r['state_bytes_per_key']:,} B of history per key "
                 f"would need {r['keys'] * r['bytes_per_key_traced'] / 1e9:.1f} GB): measured with "
                 f"{_n(r['keys_measured'])} keys. Smaller bptt shrinks the history proportionally.")
    L.append("- 1 key: a batch is one key's events, which must run one after the other (B waves of one "
             "event), so there is nothing to batch; it still saves the per-event Python call.")
    L.append("- Learning: every labelled event of a key whose update is due (every event here) runs a "
             "TBPTT backward over its own 16-step window; the gradients of the batch are averaged into one "
             "optimizer step. After each wave the due keys share one batched backward pass (tile matrix "
             "products, no fused multiply-add, so that one key's numbers stay the core's); learning still "
             "gains less than inference.")
    L.append("")
    L.append("### Inference GFLOP/s against the one-thread float32 GEMM ceiling")
    L.append("")
    b = gemm["blas"][0] if gemm["blas"] else {}
    L.append(f"GEMM ceiling (numpy matmul, 1 thread, {b.get('internal_api', '?')} {b.get('version', '')} "
             f"kernel {b.get('architecture', '?')}): **{peak:.1f} GFLOP/s** (best of "
             + ", ".join(f"{n}: {g:.1f}" for n, g in gemm["sizes"].items()) + ").")
    L.append("")
    L.append("| H | keys | µs/event | GFLOP/s (median batch) | % of GEMM | GFLOP/s (best batch) |")
    L.append("|---:|---:|---:|---:|---:|---:|")
    for f in flops:
        L.append(f"| {f['H']} | {_n(f['keys'])} | {f['us_per_event']:.2f} | {f['gflops']:.1f} | "
                 f"**{100 * f['gflops'] / peak:.0f}%** | {f['gflops_best']:.1f} |")
    L.append("")
    L.append("Flops per event 2·4H·(1+H) + 2H (gates and readout; activations not counted), end to end "
             "(`step_many` call: key lookup, input standardisation, waves, gates, cell, outputs). The gate "
             "pre-activations of a tile of keys are one matrix-matrix product summed in the core's order "
             "(bias, then k ascending, no FMA), so results equal single-event processing bit for bit; "
             "the cell's float64 exp (the core's, shared) is the other half of the time.")
    L.append("")
    L.append(END)
    return "\n".join(L) + "\n"


def write_section(path, text):
    _results.write_section("keyed", text, path)


def run_against(args):
    """Ours against another checkout at 100,000 keys, H=32: both engines built alike, their
    batches interleaved repeat by repeat (order alternating); CPU-time medians. Learning also
    against the per-event loop with state swapping."""
    ref = _versions.load_reference(args.against)
    rng = np.random.default_rng(7)
    B, n_keys = args.batch, args.against_keys
    batches = key_batches(rng, n_keys, B, args.batches)
    X = rng.normal(size=(B, 1))
    Y = rng.normal(size=B)
    rows = []
    threads = args.threads or usable_cpus()
    for learn in (False, True):
        engines = {"new": build(32, n_keys, learn, B)[0], "ref": build(32, n_keys, learn, B, lib=ref)[0]}
        if learn and threads > 1:
            engines["threads"] = build(32, n_keys, learn, B, threads=threads)[0]
        fns = {k: (e.learn_many if learn else (lambda ks, X, Y, e=e: e.step_many(ks, X))) for k, e in engines.items()}
        for fn in fns.values():
            fn(batches[0], X, Y)  # warm-up (first touch of pages)
        ts = {k: [] for k in fns}
        walls = {k: [] for k in fns}
        for r in range(args.repeats):
            for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                ts[k] += timed_batches(fns[k], batches, X, Y, walls[k])
        eps = {k: B / statistics.median(v) for k, v in ts.items()}
        eps_wall = {k: B / statistics.median(v) for k, v in walls.items()}
        row = {"learn": learn, "keys": n_keys, "batch": B, "events_per_s": eps, "events_per_s_wall": eps_wall,
               "new_over_ref": eps["new"] / eps["ref"], "runs_s": ts, "walls_s": walls}
        if "threads" in engines:  # several threads: wall time (CPU time adds the threads up)
            row["threads"] = threads
            row["threads_over_ref"] = eps_wall["threads"] / eps_wall["ref"]
            row["threads_over_new"] = eps_wall["threads"] / eps_wall["new"]
        if learn:
            row["loop_events_per_s"] = loop_baseline(32, n_keys, args.loop_events_learn, True)
            row["loop_nogc_events_per_s"] = loop_baseline(32, n_keys, args.loop_events_learn, True, gc_off=True)
            row["new_over_loop"] = eps["new"] / row["loop_events_per_s"]
            row["new_over_loop_nogc"] = eps["new"] / row["loop_nogc_events_per_s"]
            if "threads" in row:
                row["threads_over_loop"] = eps_wall["threads"] / row["loop_events_per_s"]
                row["threads_over_loop_nogc"] = eps_wall["threads"] / row["loop_nogc_events_per_s"]
                print(f"  learn, {threads} threads (wall): {eps_wall['threads']:,.0f} ev/s, ref {eps_wall['ref']:,.0f} "
                      f"ev/s (x{row['threads_over_ref']:.2f}), one thread {eps_wall['new']:,.0f} ev/s "
                      f"(x{row['threads_over_new']:.2f})", flush=True)
        print(f"  {'learn' if learn else 'infer'}: new {eps['new']:,.0f} ev/s, ref {eps['ref']:,.0f} ev/s "
              f"(new/ref {row['new_over_ref']:.3f})"
              + (f", loop {row['loop_events_per_s']:,.0f} / no-gc {row['loop_nogc_events_per_s']:,.0f} ev/s "
                 f"(new/loop {row['new_over_loop']:.1f}x, {row['new_over_loop_nogc']:.1f}x)" if learn else ""),
              flush=True)
        rows.append(row)
        del engines, fns
        gc.collect()
    return rows


def render_against(args, info, rows):
    ref = _versions.describe(args.against)
    L = ["<!-- keyed-versions:start -->", f"## KeyedLSTM against {ref}", "",
         (f"{args.against_keys:,} keys (created beforehand; learning keys with bptt steps of history), H=32, "
         f"float32, OnlineLSTM defaults (Adam, bptt=16, update_every=1, every event labelled), micro-batches of "
         f"B={args.batch:,} events with uniform keys, {args.batches} batches × {args.repeats} repeats, the two "
         f"versions interleaved repeat by repeat in one process; events/s from the median batch's CPU time. Loop = "
         f"`model.state = s; model.learn_one(x, y); states[k] = model.state` over {args.loop_events_learn:,} "
         f"events (with the garbage collector on / off), each in a fresh interpreter. Commit {info['git']}, {info['cpu']}; load average at "
         f"start / end: {' '.join(info['loadavg_start'])} / {' '.join(info.get('loadavg_end', []))} (2 shared cores)."),
         "", "| | new ev/s | ref ev/s | new / ref | loop ev/s (gc on / off) | new / loop (gc on / off) |",
         "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        e = r["events_per_s"]
        loop = (f"{r['loop_events_per_s']:,.0f} / {r['loop_nogc_events_per_s']:,.0f} | "
                f"**{r['new_over_loop']:.1f}× / {r['new_over_loop_nogc']:.1f}×**") if r["learn"] else " | "
        L.append(f"| {'learning' if r['learn'] else 'inference'} | {e['new']:,.0f} | {e['ref']:,.0f} | "
                 f"**{r['new_over_ref']:.2f}×** | {loop} |")
    for r in rows:
        if "threads" in r:
            w = r["events_per_s_wall"]
            L.append(f"| learning, {r['threads']} threads (wall time) | {w['threads']:,.0f} | {w['ref']:,.0f} | "
                     f"**{r['threads_over_ref']:.2f}×** | {r['loop_events_per_s']:,.0f} / "
                     f"{r['loop_nogc_events_per_s']:,.0f} | **{r['threads_over_loop']:.1f}× / "
                     f"{r['threads_over_loop_nogc']:.1f}×** |")
            L += ["", (f"Learning on {r['threads']} threads (`KeyedLSTM(threads={r['threads']})`; the default "
                       f"is the CPUs the process may use) is timed by the wall clock, and so is the reference in "
                       f"that row (CPU time would add the threads up; the loop's rate is its CPU time, one thread). "
                       f"{r['threads']} threads over one, same run, wall time: **{r['threads_over_new']:.2f}×**. "
                       f"The numbers are the same, bit for bit, with any thread count (docs/keyed.md, "
                       f"\"Threads\").")]
    L.append("<!-- keyed-versions:end -->")
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer repeats, smaller loops and budget")
    ap.add_argument("--learn-mem-gb", type=float, default=None, help="memory budget for learning keys (GB)")
    ap.add_argument("--results", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--json", default=str(HERE / "keyed_results.json"))
    ap.add_argument("--against", default=None, help="another checkout (e.g. a worktree of v0.1.0) to compare with")
    ap.add_argument("--against-keys", type=int, default=100_000)
    ap.add_argument("--threads", type=int, default=None,
                    help="--against: also learn on this many threads (default: the CPUs the process may use)")
    ap.add_argument("--loop", default=None, help=argparse.SUPPRESS)  # loop_baseline's child process
    args = ap.parse_args()
    if args.loop:
        print(loop_rate(**json.loads(args.loop)))
        return
    q = args.quick
    args.batch = 16384
    args.batches = 3 if q else 6
    args.repeats = 1 if q else 3
    args.loop_events = 3000 if q else 20000
    args.loop_events_learn = 500 if q else 3000
    if args.learn_mem_gb is None:
        args.learn_mem_gb = 0.5 if q else 3.0
    info = machine_info()
    print(f"bench_keyed: {info['cpu']}, load {info['loadavg_start']}", flush=True)
    if args.against:
        rows = run_against(args)
        info["loadavg_end"] = _results.load_average()
        Path(args.json).with_name("keyed_versions.json").write_text(json.dumps(
            {"info": info, "against": _versions.describe(args.against), "rows": rows}, indent=1, default=float))
        _results.write_section("keyed-versions", render_against(args, info, rows), args.results)
        print(f"wrote {args.results}")
        return
    # compile everything once (cached afterwards)
    warm = KeyedLSTM(make_model(8), learn=True)
    warm.learn_many([1, 2, 1], np.ones((3, 1)), np.ones(3))
    warm = KeyedLSTM(make_model(8))
    warm.step_many([1, 2, 1], np.ones((3, 1)))
    print("GEMM ceiling ...", flush=True)
    gemm = gemm_ceiling(q)
    print(f"  {gemm['peak_gflops']:.1f} GFLOP/s", flush=True)
    rows = []
    print("keys sweep (H=32) ...", flush=True)
    for learn in (False, True):
        for n_keys in (1, 1000, 100_000, 1_000_000):
            rows.append(run_keys(args, 32, n_keys, learn))
        if not learn:
            rows.append(run_keys(args, 32, 100_000, False, strings=True))
    print("GFLOP/s (inference, 100,000 keys) ...", flush=True)
    flops = [run_flops(args, H, 100_000) for H in ((32, 128) if q else (32, 64, 128))]
    info["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3] if os.path.exists("/proc/loadavg") else []
    Path(args.json).write_text(json.dumps({"info": info, "gemm": gemm, "keys": rows, "flops": flops,
                                           "quick": q}, indent=1, default=float))
    write_section(args.results, render(args, info, gemm, rows, flops))
    print(f"wrote {args.results} and {args.json}")


if __name__ == "__main__":
    main()
