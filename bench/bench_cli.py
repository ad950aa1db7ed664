"""Throughput, memory and start-up of the `streamlstm` command line vs the in-process API.

    python bench/bench_cli.py                 # 100,000 rows (quick)
    python bench/bench_cli.py --rows 1000000  # the full run

One CSV file ``x,y`` (1 feature, hidden 32, float64, the CLI's default settings). For
inference only (``--load model --no-learn``) and for learning (fresh model), the CLI runs
as a subprocess reading the file and writing its CSV output to a file; the in-process
API then runs on the same rows, already parsed into numpy arrays (parsing not timed): the
block call (``advance_many`` / ``learn_many``) and the per-event loop (``advance`` /
``learn_one``). The CLI's predictions are checked against the in-process ones (equal).

Also measured: peak RSS of the CLI at rows/10 and rows (flat memory), ``--help`` wall time
time to the first output row
of a fresh process with a warm numba cache. Writes a section of bench/RESULTS.md between
``<!-- cli:start -->`` and ``<!-- cli:end -->``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import _results  # noqa: E402  (bench/, the script's own folder)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
START, END = "<!-- cli:start -->", "<!-- cli:end -->"
CLI = [sys.executable, "-m", "streamlstm.adapters.cli"]
SCRIPT = Path(sys.executable).parent / "streamlstm"


def make_data(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    x = np.sin(0.05 * t) + 0.1 * rng.normal(size=rows)
    y = 2.0 * np.roll(x, 3) + 0.05 * rng.normal(size=rows)
    with open(path, "w") as fh:
        fh.write("x,y\n")
        step = 200_000
        for a in range(0, rows, step):
            fh.write("".join(f"{u!r},{v!r}\n" for u, v in zip(x[a:a + step].tolist(), y[a:a + step].tolist())))


def load_xy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    arr = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
    return np.ascontiguousarray(arr[:, :1]), np.ascontiguousarray(arr[:, 1])


def run_cli(args: list[str], out_path: Path | None) -> dict:
    """Run the CLI; wall seconds, peak RSS (MiB) of that process, its summary's in-run rate."""
    out = open(out_path, "wb") if out_path else subprocess.DEVNULL
    t0 = time.perf_counter()
    p = subprocess.Popen([*CLI, *args], stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if out_path:
        out.close()
    if p.returncode != 0:
        raise SystemExit(f"CLI failed ({p.returncode}): {' '.join(args)}\n{err.decode()}")
    m = re.search(r"([\d,]+) rows in ([\d.]+) s", err.decode())
    rows, secs = (int(m.group(1).replace(",", "")), float(m.group(2))) if m else (0, float("nan"))
    return {"wall": wall, "rss_mib": usage.ru_maxrss / 1024, "rows": rows, "in_run_s": secs}


def pred_column(path: Path) -> np.ndarray:
    with open(path) as fh:
        fh.readline()
        return np.array([float(line.split(",")[1]) for line in fh])


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def bench_help(runs: int = 7) -> dict:
    def wall(cmd: list[str]) -> float:
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        return time.perf_counter() - t0

    script = [str(SCRIPT)] if SCRIPT.exists() else CLI
    res = {}
    for name, cmd in (("--help", [*script, "--help"]), ("run --help", [*script, "run", "--help"])):
        times = [wall(cmd) for _ in range(runs)]
        res[name] = {"median": statistics.median(times), "min": min(times)}
    return res


def first_row_latency(args: list[str], runs: int = 5) -> dict:
    """Fresh process fed one header and one row through a pipe: seconds until its answer."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.Popen([*CLI, "run", *args, "--quiet"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        p.stdin.write(b"x,y\n0.5,1.0\n")
        p.stdin.flush()
        buf = b""
        while buf.count(b"\n") < 2:
            select.select([p.stdout], [], [], 60)
            chunk = os.read(p.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
        times.append(time.perf_counter() - t0)
        p.stdin.close()
        p.wait()
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numba

    return (f"{cpu} ({os.cpu_count()} CPUs), Python {platform.python_version()}, numpy {np.__version__}, "
            f"numba {numba.__version__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--no-write", action="store_true", help="print, do not touch bench/RESULTS.md")
    ap.add_argument("--json", type=Path, help="also dump the raw figures here")
    a = ap.parse_args()
    from streamlstm import OnlineLSTM, persistence

    load0 = os.getloadavg()
    small_rows = max(a.rows // 10, 1000)
    res: dict = {"rows": a.rows, "small_rows": small_rows, "hidden": a.hidden}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        data, small, train = d / "data.csv", d / "small.csv", d / "train.csv"
        make_data(data, a.rows)
        with open(data) as src, open(small, "w") as s1, open(train, "w") as s2:
            for i, line in enumerate(src):
                if i <= small_rows:
                    s1.write(line)
                if i <= 5000:
                    s2.write(line)
                if i > max(small_rows, 5000):
                    break
        model = d / "model.slstm"
        h = ["--hidden", str(a.hidden)]
        run_cli(["run", str(train), "--target", "y", *h, "--save", str(model), "--quiet"], None)  # warms the cache
        X, Y = load_xy(data)
        n = len(X)
        _, meta, arrays = persistence.read_file(model)
        blob = arrays["model"].tobytes()

        # ---- inference only
        print(f"inference, {n:,} rows ...", flush=True)
        cli_inf = run_cli(["run", str(data), "--target", "y", "--load", str(model), "--no-learn"], d / "inf.csv")
        cli_inf_small = run_cli(["run", str(small), "--target", "y", "--load", str(model), "--no-learn"], None)
        warm = OnlineLSTM.from_bytes(blob)  # load every kernel before timing
        warm.advance_many(X[:10]), warm.advance(X[0]), warm.learn_many(X[:10], Y[:10]), warm.learn_one(X[0], 1.0)
        m = OnlineLSTM.from_bytes(blob)
        t_block, P_block = timed(m.advance_many, X)
        m = OnlineLSTM.from_bytes(blob)
        adv = m.advance
        t0 = time.perf_counter()
        for i in range(n):
            adv(X[i])
        t_loop = time.perf_counter() - t0
        same_inf = bool(np.array_equal(pred_column(d / "inf.csv"), P_block[:, 0]))
        res["inference"] = {"cli": cli_inf, "cli_small": cli_inf_small, "block_s": t_block, "loop_s": t_loop,
                            "same_predictions": same_inf}

        # ---- learning (fresh model, the CLI's defaults)
        print(f"learning, {n:,} rows ...", flush=True)
        cli_learn = run_cli(["run", str(data), "--target", "y", *h], d / "learn.csv")
        cli_learn_small = run_cli(["run", str(small), "--target", "y", *h], None)
        params = dict(meta["params"])
        m = OnlineLSTM(n_inputs=1, **params)
        t_block_l, P_learn = timed(m.learn_many, X, Y)
        m = OnlineLSTM(n_inputs=1, **params)
        lo = m.learn_one
        Yl = Y.tolist()
        t0 = time.perf_counter()
        for i in range(n):
            lo(X[i], Yl[i])
        t_loop_l = time.perf_counter() - t0
        same_learn = bool(np.array_equal(pred_column(d / "learn.csv"), P_learn[:, 0]))
        res["learning"] = {"cli": cli_learn, "cli_small": cli_learn_small, "block_s": t_block_l, "loop_s": t_loop_l,
                           "same_predictions": same_learn}

        # ---- start-up
        print("start-up ...", flush=True)
        res["help"] = bench_help()
        res["first_row_learn"] = first_row_latency(["--target", "y", *h])
        res["first_row_load"] = first_row_latency(["--target", "y", "--load", str(model), "--no-learn"])
    res["machine"] = machine()
    res["load_before"] = load0
    res["load_after"] = os.getloadavg()
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    section = render(res)
    print(section)
    if not a.no_write:
        write_section(section)
        print(f"wrote the cli section of {RESULTS}")


def render(r: dict) -> str:
    n, ns = r["rows"], r["small_rows"]
    L = [START, "## Command line (`bench/bench_cli.py`)", ""]
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    L.append(f"{when} · {r['machine']} · load average {r['load_before'][0]:.2f} before, "
             f"{r['load_after'][0]:.2f} after (shared machine: compare within a run).")
    L.append("")
    L.append(f"{n:,}-row CSV file `x,y` (1 feature), hidden {r['hidden']}, float64, the CLI's default settings "
             "(Adam, TBPTT(1,16)). CLI: `streamlstm run data.csv --target y ...` as a subprocess writing its CSV "
             "output (`y,pred_y,error`, shortest exact floats) to a file; wall time includes start-up "
             "(imports, loading the cached kernels). In-run: the rate in the CLI's own summary (reading, parsing, "
             "core, writing; no start-up). In-process: the same rows already in numpy arrays (parsing not timed), "
             "block call and per-event loop (`advance(X[i])` / `learn_one(X[i], y)`).")
    L.append("")
    L.append("| rows/s | CLI (wall) | CLI (in-run) | in-process block | in-process per event | CLI wall / block "
             "| CLI wall / per event | CLI = in-process predictions |")
    L.append("|---|---:|---:|---:|---:|---:|---:|:---:|")
    for name, key, api in (("inference only (`--load m --no-learn`)", "inference", "advance_many / advance"),
                           ("learning", "learning", "learn_many / learn_one")):
        x = r[key]
        wall = n / x["cli"]["wall"]
        inrun = x["cli"]["rows"] / x["cli"]["in_run_s"]
        block, loop = n / x["block_s"], n / x["loop_s"]
        L.append(f"| {name} | {wall:,.0f} | {inrun:,.0f} | {block:,.0f} | {loop:,.0f} | {wall / block:.0%} "
                 f"| {wall / loop:.0%} | {'yes' if x['same_predictions'] else '**no**'} |")
    L.append("")
    L.append(f"Peak RSS of the CLI process (MiB), {ns:,} vs {n:,} rows: inference "
             f"{r['inference']['cli_small']['rss_mib']:.0f} vs {r['inference']['cli']['rss_mib']:.0f}, learning "
             f"{r['learning']['cli_small']['rss_mib']:.0f} vs {r['learning']['cli']['rss_mib']:.0f} "
             "(rows are read, processed and written in blocks of at most 4,096).")
    L.append("")
    hp = r["help"]
    L.append("Start-up (wall seconds, median [min] of 7 / 5 fresh processes):")
    L.append("")
    for k, v in hp.items():
        L.append(f"- `streamlstm {k}`: {v['median']:.3f} [{v['min']:.3f}]")
    fl, fo = r["first_row_learn"], r["first_row_load"]
    L.append(f"- first output row of a fresh `streamlstm run` fed one line through a pipe, warm numba cache: "
             f"learning {fl['median']:.3f} [{fl['min']:.3f}], `--load m --no-learn` {fo['median']:.3f} "
             f"[{fo['min']:.3f}]")
    L.append("")
    L.append("`--help` imports click and the standard library only: the `streamlstm` package imports its "
             "numba core lazily (PEP 562), on first use.")
    L.append(END)
    return "\n".join(L)


def write_section(section: str) -> None:
    _results.write_section("cli", section, RESULTS)


if __name__ == "__main__":
    main()
