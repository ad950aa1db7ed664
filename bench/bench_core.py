#!/usr/bin/env python
"""Core speed benchmark: streamlstm.OnlineLSTM vs a hand-written PyTorch loop.

One event = one call from Python with a 1-element float64 numpy input, the way a
streaming user calls the model.  Measured (medians over repeats, one thread):

* predict per event   ours: ``predict_one(x)``;
                      torch: ``nn.LSTMCell`` + ``nn.Linear`` step under
                      ``torch.no_grad()`` carrying (h, c), ``.item()`` on the output.
* learn per event     TBPTT(k1, 16) for k1 in {1, 16}.
                      ours: ``OnlineLSTM(bptt=16, update_every=k1, optimizer="adam")``,
                      ``learn_one(x, y)``;
                      torch: the usual online TBPTT loop: keep the last 16 inputs and the
                      detached state 16 steps back; every k1 events re-run the window from
                      that state with grad, MSE on the last k1 steps, backward, global-norm
                      clipping (ours clips at 1.0 by default), Adam step.  Events between
                      updates take a no_grad step.  The prediction returned is the one made
                      before learning, as ``learn_one`` does.
* ours ``predict_many`` per row (the compiled loop without per-call Python overhead).
* cold compile (fresh process, empty NUMBA_CACHE_DIR) and warm start (second fresh
  process, same cache dir): import + first predict + first learn.
* one-thread float32 GEMM GFLOP/s with numpy in a subprocess with OPENBLAS_CORETYPE and
  OPENBLAS_L2_SIZE unset (kernel reported by threadpoolctl), and the GFLOP/s of our
  forward step at H=128: 2*4H*(in+H) + 2*H*out flops per step.

Writes a section delimited by ``<!-- core:start -->`` / ``<!-- core:end -->`` into the
results markdown (other sections of the file are kept), a plot, and raw numbers as JSON.

    python bench/bench_core.py            # full run (a few minutes)
    python bench/bench_core.py --quick    # smoke run
    python bench/bench_core.py --against /tmp/v010 --hidden 32
        # ours against another checkout (a worktree of v0.1.0), interleaved in one
        # process: predict, TBPTT(1,16), TBPTT(16,16) and cold compile; section "core-versions"
"""
from __future__ import annotations

import os

# One thread everywhere, before numpy / numba / torch are imported.
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse
import datetime as _dt
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import deque
from pathlib import Path

import _results
import _versions
import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

START = "<!-- core:start -->"
END = "<!-- core:end -->"
K2 = 16
DTYPES = ("float32", "float64")


# --------------------------------------------------------------------------- data
def make_stream(n: int, seed: int = 0):
    """Noisy sine; target = next input.  Inputs as 1-element float64 arrays."""
    rng = np.random.default_rng(seed)
    t = np.arange(n + 1)
    s = np.sin(0.07 * t) + 0.5 * np.sin(0.011 * t) + 0.1 * rng.standard_normal(n + 1)
    xs = [np.array([v], dtype=np.float64) for v in s[:-1]]
    ys = [float(v) for v in s[1:]]
    return xs, ys


def _timed(fn, xs, ys=None, clock=time.perf_counter) -> float:
    """µs per event for one pass of fn over the events."""
    t0 = clock()
    if ys is None:
        for x in xs:
            fn(x)
    else:
        for x, y in zip(xs, ys):
            fn(x, y)
    return (clock() - t0) / len(xs) * 1e6


# --------------------------------------------------------------------------- torch
class TorchPredictor:
    """Hand-written streaming inference: LSTMCell + Linear, state carried."""

    def __init__(self, H: int, dtype: str, seed: int = 0):
        import torch

        torch.manual_seed(seed)
        self.torch = torch
        self.dtype = getattr(torch, dtype)
        self.cell = torch.nn.LSTMCell(1, H).to(self.dtype)
        self.lin = torch.nn.Linear(H, 1).to(self.dtype)
        self.h = torch.zeros(1, H, dtype=self.dtype)
        self.c = torch.zeros(1, H, dtype=self.dtype)

    def predict_one(self, x):
        torch = self.torch
        with torch.no_grad():
            xt = torch.as_tensor(x, dtype=self.dtype).view(1, 1)
            self.h, self.c = self.cell(xt, (self.h, self.c))
            return self.lin(self.h).item()


class TorchTBPTT:
    """Hand-written online TBPTT(k1, k2) with LSTMCell, MSE, clipping, Adam."""

    def __init__(self, H: int, dtype: str, k1: int, k2: int = K2, lr: float = 1e-3,
                 clip: float | None = 1.0, seed: int = 0):
        import torch

        torch.manual_seed(seed)
        self.torch = torch
        self.F = torch.nn.functional
        self.dtype = getattr(torch, dtype)
        self.cell = torch.nn.LSTMCell(1, H).to(self.dtype)
        self.lin = torch.nn.Linear(H, 1).to(self.dtype)
        self.params = list(self.cell.parameters()) + list(self.lin.parameters())
        self.opt = torch.optim.Adam(self.params, lr=lr)
        self.k1, self.k2, self.clip = k1, k2, clip
        zero = (torch.zeros(1, H, dtype=self.dtype), torch.zeros(1, H, dtype=self.dtype))
        self.state = zero                       # current (detached) state
        self.states = deque([zero], maxlen=k2)  # states after steps t-k2 .. t-1
        self.xs: deque = deque(maxlen=k2)       # inputs of steps t-k2+1 .. t
        self.ys: deque = deque(maxlen=k2)
        self.n = 0

    def learn_one(self, x, y):
        torch = self.torch
        xt = torch.as_tensor(x, dtype=self.dtype).view(1, 1)
        self.xs.append(xt)
        self.ys.append(y)
        self.n += 1
        if self.n % self.k1 == 0:
            # re-run the window from the detached state k2 steps back
            h, c = self.states[0]
            outs = []
            for xi in self.xs:
                h, c = self.cell(xi, (h, c))
                outs.append(self.lin(h))
            pred = outs[-1].item()  # = prediction for this step with the current weights
            k = min(self.k1, len(outs))
            out = torch.cat(outs[-k:])
            tgt = torch.tensor(list(self.ys)[-k:], dtype=self.dtype).view(k, 1)
            loss = self.F.mse_loss(out, tgt)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.clip is not None:
                torch.nn.utils.clip_grad_norm_(self.params, self.clip)
            self.opt.step()
            self.state = (h.detach(), c.detach())
        else:
            with torch.no_grad():
                h, c = self.cell(xt, self.state)
                pred = self.lin(h).item()
            self.state = (h, c)
        self.states.append(self.state)
        return pred


# --------------------------------------------------------------------------- ours
def import_ours():
    try:
        import streamlstm  # noqa: F401
        from streamlstm import OnlineLSTM
        return OnlineLSTM
    except Exception as e:  # pragma: no cover - reported
        return e


def make_ours(OnlineLSTM, H, dtype, k1=1):
    return OnlineLSTM(n_inputs=1, n_outputs=1, hidden=H, layers=1, bptt=K2,
                      update_every=k1, optimizer="adam", dtype=dtype, seed=0)


# --------------------------------------------------------------------------- runs
def bench_pair(name, fns, xs, ys, repeats, warm, clock=time.perf_counter):
    """Interleave the contenders repeat by repeat (fair under background load)."""
    res = {k: [] for k in fns}
    if warm:
        for fn in fns.values():
            _timed(fn, xs[:warm], None if ys is None else ys[:warm])
    order = list(fns)
    for r in range(repeats):
        for k in (order if r % 2 == 0 else order[::-1]):
            res[k].append(_timed(fns[k], xs, ys, clock))
    out = {k: {"median_us": statistics.median(v), "runs_us": v} for k, v in res.items()}
    msg = "  ".join(f"{k}={out[k]['median_us']:.2f}" for k in out)
    print(f"  {name:<22s} {msg}  (µs/event)", flush=True)
    return out


def run_speed(args, OnlineLSTM):
    import torch

    torch.set_num_threads(1)
    ours_ok = not isinstance(OnlineLSTM, Exception) and not args.skip_ours
    n_pred, n_learn, repeats = args.events_predict, args.events_learn, args.repeats
    xs_p, _ = make_stream(n_pred, seed=1)
    xs_l, ys_l = make_stream(n_learn + 64, seed=2)
    warm_x, warm_y = xs_l[:64], ys_l[:64]
    xs_l, ys_l = xs_l[64:], ys_l[64:]
    results = {}
    for dtype in DTYPES:
        for H in args.hidden:
            key = f"{dtype}/H{H}"
            print(f"{key}", flush=True)
            r = {}
            # predict
            fns = {"torch": TorchPredictor(H, dtype).predict_one}
            if ours_ok:
                m = make_ours(OnlineLSTM, H, dtype)
                fns = {"ours": m.predict_one, **fns}
            r["predict"] = bench_pair("predict", fns, xs_p, None, repeats, warm=min(200, n_pred))
            if ours_ok:
                X = np.concatenate(xs_p).reshape(-1, 1)
                m.predict_many(X[:64])
                runs = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    m.predict_many(X)
                    runs.append((time.perf_counter() - t0) / len(X) * 1e6)
                r["predict_many"] = {"ours": {"median_us": statistics.median(runs), "runs_us": runs}}
                print(f"  {'predict_many':<22s} ours={statistics.median(runs):.3f}  (µs/row)", flush=True)
            # learn
            for k1 in (1, 16):
                t = TorchTBPTT(H, dtype, k1)
                _timed(t.learn_one, warm_x, warm_y)
                fns = {"torch": t.learn_one}
                if ours_ok:
                    mo = make_ours(OnlineLSTM, H, dtype, k1)
                    _timed(mo.learn_one, warm_x, warm_y)
                    fns = {"ours": mo.learn_one, **fns}
                r[f"learn_{k1}_{K2}"] = bench_pair(f"learn TBPTT({k1},{K2})", fns, xs_l, ys_l,
                                                   repeats, warm=0)
                if ours_ok:
                    r[f"learn_{k1}_{K2}"]["ours"]["n_updates"] = int(getattr(mo, "n_updates", -1))
            results[key] = r
    return results


# --------------------------------------------------------------------------- subprocess parts
COMPILE_SNIPPET = textwrap.dedent(
    """
    import time, json, sys
    T0 = time.perf_counter()
    import numpy as np
    import streamlstm
    from streamlstm import OnlineLSTM
    out = {"import_s": time.perf_counter() - T0}
    x = np.array([0.5])
    for dt in ("float64", "float32"):
        t = time.perf_counter()
        m = OnlineLSTM(n_inputs=1, n_outputs=1, hidden=16, layers=1, bptt=16,
                       update_every=1, optimizer="adam", dtype=dt, seed=0)
        m.predict_one(x)
        t1 = time.perf_counter()
        m.learn_one(x, 0.1)
        i = 0
        while getattr(m, "n_updates", 1) < 1 and i < 64:
            m.learn_one(x, 0.1); i += 1
        t2 = time.perf_counter()
        out[dt] = {"first_predict_s": t1 - t, "first_learn_s": t2 - t1}
    out["total_s"] = time.perf_counter() - T0
    print("RESULT " + json.dumps(out))
    """
)

GEMM_SNIPPET = textwrap.dedent(
    """
    import time, json, statistics, sys, os
    import numpy as np
    try:
        from threadpoolctl import threadpool_limits, threadpool_info
    except ImportError:  # OPENBLAS_NUM_THREADS=1 is set by the parent anyway
        import contextlib
        threadpool_limits = lambda **kw: contextlib.nullcontext()
        threadpool_info = lambda: [{"user_api": "blas", "internal_api": "openblas",
                                    "architecture": "unknown (threadpoolctl not installed)"}]
    sizes = [int(s) for s in sys.argv[1].split(",")]
    reps = int(sys.argv[2])
    res = {"sizes": {}}
    with threadpool_limits(limits=1, user_api="blas"):
        info = [d for d in threadpool_info() if d.get("user_api") == "blas"]
        rng = np.random.default_rng(0)
        for n in sizes:
            a = rng.standard_normal((n, n), dtype=np.float32)
            b = rng.standard_normal((n, n), dtype=np.float32)
            c = a @ b
            ts = []
            for _ in range(reps):
                t = time.perf_counter(); np.matmul(a, b, out=c); ts.append(time.perf_counter() - t)
            res["sizes"][n] = 2.0 * n ** 3 / statistics.median(ts) / 1e9
        # matrix-vector at the shape of one H=128 LSTM step (4H x (1+H)), for context
        W = rng.standard_normal((512, 129), dtype=np.float32)
        v = rng.standard_normal(129, dtype=np.float32)
        o = W @ v
        N = 20000
        best = []
        for _ in range(reps):
            t = time.perf_counter()
            for _ in range(N):
                np.dot(W, v, out=o)
            best.append((time.perf_counter() - t) / N)
        res["gemv_128_us"] = statistics.median(best) * 1e6
    res["blas"] = [{k: d.get(k) for k in ("internal_api", "architecture", "version",
                                           "num_threads", "filepath")} for d in info]
    res["env"] = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                                                  "OPENBLAS_NUM_THREADS")}
    print("RESULT " + json.dumps(res))
    """
)


def _run_snippet(code, env, argv=(), timeout=900):
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", code, *argv], env=env, cwd=str(REPO),
                       capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    for line in p.stdout.splitlines()[::-1]:
        if line.startswith("RESULT "):
            d = json.loads(line[7:])
            d["process_wall_s"] = wall
            return d
    raise RuntimeError(f"subprocess failed (rc={p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")


def _child_env(repo=REPO, **extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(repo), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def run_compile(repo=REPO):
    cache = tempfile.mkdtemp(prefix="streamlstm_numba_cache_")
    try:
        env = _child_env(repo, NUMBA_CACHE_DIR=cache)
        cold = _run_snippet(COMPILE_SNIPPET, env)
        n_files = sum(1 for _ in Path(cache).rglob("*") if _.is_file())
        warm = _run_snippet(COMPILE_SNIPPET, env)
        return {"cold": cold, "warm": warm, "cache_files": n_files}
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def run_gemm(quick):
    sizes = "256,512,1024" if quick else "256,512,1024,2048"
    reps = "3" if quick else "7"
    env = _child_env()
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(k, None)
    env["OPENBLAS_NUM_THREADS"] = "1"
    out = {"unset": _run_snippet(GEMM_SNIPPET, env, (sizes, reps))}
    machine = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    if machine:  # also as the machine has it, for comparison
        out["machine_env"] = _run_snippet(GEMM_SNIPPET, _child_env(OPENBLAS_NUM_THREADS="1"), (sizes, reps))
    for d in out.values():
        d["peak_gflops"] = max(d["sizes"].values())
    return out


# --------------------------------------------------------------------------- report
def machine_info():
    import numba
    import torch
    try:
        import streamlstm
        from streamlstm import OnlineLSTM  # noqa: F401
        sv = getattr(streamlstm, "__version__", "?")
    except Exception:
        sv = "not importable"
    return {
        "cpu": _results.cpu_model(), "n_cpus": os.cpu_count(),
        "python": platform.python_version(), "numpy": np.__version__,
        "numba": numba.__version__, "torch": torch.__version__, "streamlstm": sv,
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "loadavg_start": _results.load_average(),
        "openblas_env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
        "git": _results.git_head(REPO),
    }


def flops_per_step(H, n_in=1, n_out=1):
    return 2 * 4 * H * (n_in + H) + 2 * H * n_out


def _f(v, nd=2):
    if v is None:
        return "—"
    return f"{v:.{nd}f}" if v < 100 else f"{v:.0f}"


def _med(r, sect, who):
    try:
        return r[sect][who]["median_us"]
    except (KeyError, TypeError):
        return None


def _ratio(t, o):
    return f"{t / o:.1f}×" if (t and o) else "—"


def render(args, info, speed, comp, gemm):
    L = [START, "## Core speed (`bench/bench_core.py`)", ""]
    L.append(f"{info['date']} · {info['cpu']} ({info['n_cpus']} CPUs) · Python {info['python']} · "
             f"numpy {info['numpy']} · numba {info['numba']} · torch {info['torch']} · "
             f"streamlstm {info['streamlstm']} ({info['git']})"
             + (" · **--quick run**" if args.quick else ""))
    L.append("")
    L.append(f"One thread (torch.set_num_threads(1), NUMBA/OPENBLAS/OMP threads = 1). Median over "
             f"{args.repeats} repeats of {args.events_predict} predict / {args.events_learn} learn events, "
             f"ours and torch interleaved repeat by repeat. Input: 1-element float64 numpy array per event; "
             f"n_inputs=1, n_outputs=1, layers=1, Adam. torch/ours > 1 means ours is faster. "
             f"Load average at start: {' '.join(info['loadavg_start'])} (shared machine).")
    L.append("")
    if speed:
        for dtype in DTYPES:
            L.append(f"### {dtype} — µs per event")
            L.append("")
            L.append("| H | predict ours | predict torch | torch/ours | TBPTT(1,16) ours | torch | torch/ours "
                     "| TBPTT(16,16) ours | torch | torch/ours | ours predict_many µs/row |")
            L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for H in args.hidden:
                r = speed.get(f"{dtype}/H{H}", {})
                row = [str(H)]
                for sect in ("predict", f"learn_1_{K2}", f"learn_16_{K2}"):
                    o, t = _med(r, sect, "ours"), _med(r, sect, "torch")
                    row += [_f(o), _f(t), _ratio(t, o)]
                row.append(_f(_med(r, "predict_many", "ours"), 3))
                L.append("| " + " | ".join(row) + " |")
            L.append("")
        L.append("Torch side: predict = `nn.LSTMCell` + `nn.Linear` under `torch.no_grad()`, state carried, "
                 "`.item()`; learn = online TBPTT(k1,16): last 16 inputs and the detached state 16 steps back "
                 "kept, every k1 events the window is re-run with grad from that state, MSE on the last k1 "
                 "steps, backward, `clip_grad_norm_(1.0)`, Adam step; other events take a no_grad step. "
                 "Ours: default `OnlineLSTM` settings (clip=1.0, online input/target standardisation, "
                 "which the torch loop does not do).")
        L.append("")
    if comp:
        L.append("### Compile / start-up (hidden=16, import + first predict + first learn, float64 then float32)")
        L.append("")
        L.append("| | import s | f64 first predict s | f64 first learn s | f32 first predict s | f32 first learn s "
                 "| total s | process wall s |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name in ("cold", "warm"):
            d = comp[name]
            L.append(f"| {name} ({'empty' if name == 'cold' else 'filled'} NUMBA_CACHE_DIR) | "
                     f"{d['import_s']:.2f} | {d['float64']['first_predict_s']:.2f} | "
                     f"{d['float64']['first_learn_s']:.2f} | {d['float32']['first_predict_s']:.2f} | "
                     f"{d['float32']['first_learn_s']:.2f} | {d['total_s']:.2f} | {d['process_wall_s']:.2f} |")
        L.append("")
        L.append(f"Cache files written by the cold run: {comp['cache_files']}.")
        L.append("")
    if gemm:
        g = gemm["unset"]
        b = g["blas"][0] if g["blas"] else {}
        L.append("### Machine ceiling and our forward step")
        L.append("")
        sizes = ", ".join(f"{n}: {v:.1f}" for n, v in g["sizes"].items())
        L.append(f"- One-thread float32 GEMM (numpy, OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset): "
                 f"**{g['peak_gflops']:.1f} GFLOP/s** (best of n×n sizes, median of repeats: {sizes}). "
                 f"threadpoolctl: {b.get('internal_api')} {b.get('version')}, kernel "
                 f"**{b.get('architecture')}**, {b.get('num_threads')} thread.")
        me = info["openblas_env"]
        if "machine_env" in gemm:
            m = gemm["machine_env"]
            mb = m["blas"][0] if m["blas"] else {}
            L.append(f"- With the machine's setting (OPENBLAS_CORETYPE={me['OPENBLAS_CORETYPE']}, "
                     f"OPENBLAS_L2_SIZE={me['OPENBLAS_L2_SIZE']}): {m['peak_gflops']:.1f} GFLOP/s, "
                     f"kernel {mb.get('architecture')}.")
        else:
            L.append("- OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE were not set in this environment.")
        L.append(f"- numpy float32 matrix-vector at one H=128 step's shape (512×129): "
                 f"{g['gemv_128_us']:.2f} µs per call (includes numpy call overhead).")
        fl = flops_per_step(128)
        for dtype in DTYPES:
            r = speed.get(f"{dtype}/H128", {}) if speed else {}
            parts = []
            for sect, lab in (("predict", "predict_one"), ("predict_many", "predict_many")):
                us = _med(r, sect, "ours")
                if us:
                    gf = fl / (us * 1e3)
                    parts.append(f"{lab} {gf:.2f} GFLOP/s ({100 * gf / g['peak_gflops']:.1f}% of GEMM)")
            tus = _med(r, "predict", "torch")
            if tus:
                gf = fl / (tus * 1e3)
                parts.append(f"torch step {gf:.2f} GFLOP/s ({100 * gf / g['peak_gflops']:.1f}%)")
            if parts:
                L.append(f"- Forward step at H=128, {dtype} ({fl} flops/step = 2·4H·(1+H) + 2H): "
                         + "; ".join(parts) + ".")
        L.append("")
    L.append("![core speed](core_speed.png)" if args.png_rel else "")
    L.append(END)
    return "\n".join(L) + "\n"


def write_section(path: Path, section: str):
    _results.write_section("core", section, path)


def plot(args, speed, path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharey=True)
    styles = {"predict": ("predict", "o"), f"learn_1_{K2}": ("TBPTT(1,16)", "s"),
              f"learn_16_{K2}": ("TBPTT(16,16)", "^")}
    colors = {"ours": "tab:blue", "torch": "tab:orange"}
    Hs = args.hidden
    for ax, dtype in zip(axes, DTYPES):
        for sect, (lab, mk) in styles.items():
            for who, ls in (("ours", "-"), ("torch", "--")):
                ys = [_med(speed.get(f"{dtype}/H{H}", {}), sect, who) for H in Hs]
                if any(v is None for v in ys):
                    continue
                ax.plot(Hs, ys, ls, marker=mk, color=colors[who], label=f"{who} {lab}")
        ys = [_med(speed.get(f"{dtype}/H{H}", {}), "predict_many", "ours") for H in Hs]
        if all(v is not None for v in ys):
            ax.plot(Hs, ys, ":", marker="x", color="tab:green", label="ours predict_many (per row)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(Hs, [str(h) for h in Hs])
        ax.set_xlabel("hidden size H")
        ax.set_title(dtype)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("µs per event (median, 1 thread)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle("streamlstm vs hand-written PyTorch, per event" + (" (--quick)" if args.quick else ""))
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- versions
def run_versions(args, OnlineLSTM):
    """Ours against the checkout ``args.against``, interleaved repeat by repeat (medians)."""
    ref = _versions.load_reference(args.against).OnlineLSTM
    xs_p, _ = make_stream(args.events_predict, seed=1)
    xs_l, ys_l = make_stream(args.events_learn + 64, seed=2)
    results = {}
    for dtype in DTYPES:
        for H in args.hidden:
            key = f"{dtype}/H{H}"
            print(key, flush=True)
            new, old = make_ours(OnlineLSTM, H, dtype), make_ours(ref, H, dtype)
            r = {"predict": bench_pair("predict", {"new": new.predict_one, "ref": old.predict_one}, xs_p, None,
                                       args.repeats, warm=min(200, len(xs_p)), clock=time.process_time)}
            for k1 in (1, 16):
                new, old = make_ours(OnlineLSTM, H, dtype, k1), make_ours(ref, H, dtype, k1)
                for m in (new, old):
                    _timed(m.learn_one, xs_l[:64], ys_l[:64])
                r[f"learn_{k1}_{K2}"] = bench_pair(f"learn TBPTT({k1},{K2})", {"new": new.learn_one, "ref": old.learn_one},
                                                   xs_l[64:], ys_l[64:], args.repeats, warm=0, clock=time.process_time)
            results[key] = r
    return results


def render_versions(args, info, speed, comp):
    ref = _versions.describe(args.against)
    L = ["<!-- core-versions:start -->", f"## Core against {ref}", "",
         (f"One process, both versions imported side by side, each measurement interleaved repeat by repeat "
         f"(order alternating), CPU time of the process (other jobs' turns on the core not counted), median of {args.repeats} repeats of {args.events_predict} predict / "
         f"{args.events_learn} learn events; n_inputs=1, n_outputs=1, Adam, bptt=16. Commit {info['commit']}, "
         f"{info.get('cpu', '')}; load average at start / end: {' '.join(info['loadavg'])} / "
         f"{' '.join(info.get('loadavg_end', []))} (2 shared cores: differences of a few % are noise)."), "",
         "| dtype | H | what | new µs | ref µs | new / ref |", "|---|---:|---|---:|---:|---:|"]
    for key, r in speed.items():
        dtype, H = key.split("/H")
        for what, label in (("predict", "predict_one"), (f"learn_1_{K2}", f"learn TBPTT(1,{K2})"),
                            (f"learn_16_{K2}", f"learn TBPTT(16,{K2})")):
            a, b = r[what]["new"]["median_us"], r[what]["ref"]["median_us"]
            L.append(f"| {dtype} | {H} | {label} | {a:.2f} | {b:.2f} | **{a / b:.3f}** |")
    if comp:
        L += ["", "Cold compile (fresh process, empty numba cache: import + first predict + first learn, "
                  "float64 then float32): " + ", ".join(f"{k} {v['cold']['total_s']:.1f} s (warm start "
                                                         f"{v['warm']['total_s']:.2f} s)" for k, v in comp.items())
              + ", one after the other."]
    L.append("<!-- core-versions:end -->")
    return "\n".join(L)


def main_versions(args, OnlineLSTM):
    info = {"commit": _results.git_head(REPO), "cpu": _results.cpu_model(), "loadavg": _results.load_average()}
    print(json.dumps(info), flush=True)
    comp = None
    if not args.skip_compile:
        comp = {"new": run_compile(), "ref": run_compile(Path(args.against))}
        print("compile: " + ", ".join(f"{k} cold {v['cold']['total_s']:.1f}s" for k, v in comp.items()), flush=True)
    speed = run_versions(args, OnlineLSTM)
    info["loadavg_end"] = _results.load_average()
    _results.write_section("core-versions", render_versions(args, info, speed, comp), args.out)
    jsn = args.out.parent / "core_versions.json"
    jsn.write_text(json.dumps({"against": _versions.describe(args.against), "machine": info, "speed": speed,
                               "compile": comp}, indent=1))
    print(f"wrote {args.out}, {jsn}")


# --------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="few events, for smoke runs")
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="results markdown (section replaced)")
    ap.add_argument("--png", type=Path, default=None, help="plot path (default: core_speed.png beside --out)")
    ap.add_argument("--json", type=Path, default=None, help="raw numbers (default: core_results.json beside --out)")
    ap.add_argument("--hidden", type=lambda s: [int(v) for v in s.split(",")], default=[16, 32, 64, 128])
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--events-predict", type=int, default=None)
    ap.add_argument("--events-learn", type=int, default=None)
    ap.add_argument("--skip-ours", action="store_true", help="torch side only")
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--skip-gemm", action="store_true")
    ap.add_argument("--against", type=Path, default=None,
                    help="another checkout (e.g. a worktree of v0.1.0): time ours against it instead of torch")
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.events_predict is None:
        args.events_predict = 300 if args.quick else 5000
    if args.events_learn is None:
        args.events_learn = 100 if args.quick else 1000
    args.out = args.out.resolve()
    png = (args.png or args.out.parent / "core_speed.png").resolve()
    jsn = (args.json or args.out.parent / "core_results.json").resolve()
    args.png_rel = png.parent == args.out.parent and png.name == "core_speed.png"

    OnlineLSTM = None if args.skip_ours else import_ours()
    if isinstance(OnlineLSTM, Exception):
        sys.exit(f"cannot import streamlstm ({OnlineLSTM!r}); use --skip-ours for the torch side only")
    if args.against is not None:
        return main_versions(args, OnlineLSTM)

    info = machine_info()
    print(json.dumps(info), flush=True)
    gemm = None if args.skip_gemm else run_gemm(args.quick)
    if gemm:
        g = gemm["unset"]
        print(f"GEMM f32 1 thread: {g['peak_gflops']:.1f} GFLOP/s, kernel {g['blas'][0]['architecture']}", flush=True)
    comp = None if (args.skip_compile or args.skip_ours) else run_compile()
    if comp:
        print(f"compile: cold {comp['cold']['total_s']:.2f}s  warm {comp['warm']['total_s']:.2f}s", flush=True)
    speed = run_speed(args, OnlineLSTM)
    try:
        info["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass

    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(args, speed, png)
    write_section(args.out, render(args, info, speed, comp, gemm))
    jsn.write_text(json.dumps({"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                               "machine": info, "speed": speed, "compile": comp, "gemm": gemm}, indent=1))
    print(f"wrote {args.out}, {png}, {jsn}")


if __name__ == "__main__":
    main()
