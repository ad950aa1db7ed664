"""Throughput, memory and start-up of the `streamlstm` command line vs the in-process API.

    python bench/bench_cli.py                 # 100,000 rows (quick)
    python bench/bench_cli.py --rows 1000000  # the full run

One CSV file ``x,y`` (1 feature, hidden 32, float64, the CLI's default settings). For
inference only (``--load model --no-learn``) and for learning (fresh model), the CLI runs
as a subprocess reading the file and writing its CSV output to a file, with and without
its reader thread; the in-process API then runs on the same rows, already parsed into
numpy arrays (parsing not timed): the block call (``advance_many`` / ``learn_many``) and
the per-event loop (``advance`` / ``learn_one``). Each is repeated (``--repeats``,
interleaved) and the medians reported. The CLI's predictions are checked against the
in-process ones (equal), and its output with one thread against its output with two.

Also measured: peak RSS of the CLI at rows/10 and rows (flat memory), ``--help`` wall
time, and the time to the first output row of a fresh process with a warm numba cache. Writes a section of bench/RESULTS.md between
``<!-- cli:start -->`` and ``<!-- cli:end -->``.
"""

from __future__ import annotations

import argparse
import contextlib
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

import _results
import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
START, END = "<!-- cli:start -->", "<!-- cli:end -->"
CLI = [sys.executable, "-m", "streamlstm.adapters.cli"]
SCRIPT = Path(sys.executable).parent / "streamlstm"
GNU_TIME = "/usr/bin/time" if os.path.exists("/usr/bin/time") else None  # peak RSS of a child, see run_cli


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
    # A child forked from this (large) process starts with this process's resident set,
    # and Linux keeps ru_maxrss across exec: GNU time, a small process, measures instead.
    with (open(out_path, "wb") if out_path else contextlib.nullcontext(subprocess.DEVNULL)) as out, \
            tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        wrap = [GNU_TIME, "-o", rss_file.name, "-f", "%M"] if GNU_TIME else []
        t0 = time.perf_counter()
        p = subprocess.Popen([*wrap, *CLI, *args], stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        assert p.stderr is not None  # stderr=PIPE
        err = p.stderr.read()
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        rss_kib = int(rss_file.read().split()[-1]) if GNU_TIME else usage.ru_maxrss
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"CLI failed ({p.returncode}): {' '.join(args)}\n{err.decode()}")
    m = re.search(r"([\d,]+) rows in ([\d.]+) s", err.decode())
    rows, secs = (int(m.group(1).replace(",", "")), float(m.group(2))) if m else (0, float("nan"))
    return {"wall": wall, "rss_mib": rss_kib / 1024, "rows": rows, "in_run_s": secs}


INPROCESS = """
import json, sys
import numpy as np
from streamlstm import OnlineLSTM
d, job = sys.argv[1], sys.argv[2]
X = np.load(d + "/X.npy")
if job == "inference":
    m = OnlineLSTM.from_bytes(open(d + "/model.bin", "rb").read())
    m.advance_many(X)
else:
    m = OnlineLSTM(n_inputs=1, **json.load(open(d + "/params.json")))
    m.learn_many(X, np.load(d + "/Y.npy"))
"""


def inprocess_wall(d: Path, job: str) -> float:
    """The in-process block call as a whole fresh process (Python, imports, loading the
    kernels, rows from a .npy file, the call): the counterpart of the CLI's wall time."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", INPROCESS, str(d), job], check=True)
    return time.perf_counter() - t0


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
        stdin, stdout = p.stdin, p.stdout
        assert stdin is not None and stdout is not None  # both PIPE
        stdin.write(b"x,y\n0.5,1.0\n")
        stdin.flush()
        buf = b""
        while buf.count(b"\n") < 2:
            select.select([stdout], [], [], 60)
            chunk = os.read(stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
        times.append(time.perf_counter() - t0)
        stdin.close()
        p.wait()
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def machine() -> str:
    import numba

    cpu = _results.cpu_model()

    return (f"{cpu} ({os.cpu_count()} CPUs), Python {platform.python_version()}, numpy {np.__version__}, "
            f"numba {numba.__version__}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-write", action="store_true", help="print, do not touch bench/RESULTS.md")
    ap.add_argument("--json", type=Path, help="also dump the raw figures here")
    a = ap.parse_args()
    from streamlstm import OnlineLSTM, persistence

    load0 = os.getloadavg()
    small_rows = max(a.rows // 10, 1000)
    res: dict = {"rows": a.rows, "small_rows": small_rows, "hidden": a.hidden, "repeats": a.repeats}
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
        np.save(d / "X.npy", X)
        np.save(d / "Y.npy", Y)
        (d / "model.bin").write_bytes(blob)
        (d / "params.json").write_text(json.dumps(dict(meta["params"])))

        # Each configuration runs `repeats` times, interleaved (CLI, CLI on one thread,
        # in-process block, in-process loop), and the medians are reported: the machine is shared.
        warm = OnlineLSTM.from_bytes(blob)  # load every kernel before timing
        warm.advance_many(X[:10]), warm.advance(X[0]), warm.learn_many(X[:10], Y[:10]), warm.learn_one(X[0], 1.0)
        params = dict(meta["params"])
        jobs = {
            "inference": (["run", str(data), "--target", "y", "--load", str(model), "--no-learn"],
                          ["run", str(small), "--target", "y", "--load", str(model), "--no-learn"],
                          lambda: OnlineLSTM.from_bytes(blob), "advance_many", "advance"),
            "learning": (["run", str(data), "--target", "y", *h], ["run", str(small), "--target", "y", *h],
                         lambda: OnlineLSTM(n_inputs=1, **params), "learn_many", "learn_one"),
        }
        Yl = Y.tolist()
        for name, (args, small_args, fresh, block_api, event_api) in jobs.items():
            print(f"{name}, {n:,} rows x {a.repeats} ...", flush=True)
            runs: dict[str, list] = {"cli": [], "cli_1thread": [], "block_s": [], "loop_s": [], "inproc_wall": []}
            same = True
            for rep in range(a.repeats):
                out_csv = d / f"{name}.csv"
                runs["cli"].append(run_cli(args, out_csv))
                runs["cli_1thread"].append(run_cli([*args, "--no-reader-thread"], d / f"{name}1.csv"))
                m = fresh()
                t_block, P = timed(getattr(m, block_api), X) if block_api == "advance_many" else timed(m.learn_many, X, Y)
                runs["block_s"].append(t_block)
                m = fresh()
                step = getattr(m, event_api)
                t0 = time.perf_counter()
                if event_api == "advance":
                    for i in range(n):
                        step(X[i])
                else:
                    for i in range(n):
                        step(X[i], Yl[i])
                runs["loop_s"].append(time.perf_counter() - t0)
                runs["inproc_wall"].append(inprocess_wall(d, name))
                if rep == 0:
                    same = bool(np.array_equal(pred_column(out_csv), P[:, 0])) and (
                        (d / f"{name}.csv").read_bytes() == (d / f"{name}1.csv").read_bytes())
            res[name] = {"runs": runs, "cli_small": run_cli(small_args, None), "same_predictions": same}

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
             "output (`y,pred_y,error`, shortest exact floats) to a file. **In-run**: the rate in the CLI's own "
             "summary: reading, parsing, the model, writing, from the first row to the last. **Wall**: the whole "
             "process, with its start-up (Python, imports, loading the compiled kernels from numba's cache). "
             "In-process: the same rows already in numpy arrays (parsing not timed, kernels loaded beforehand), "
             "block call and per-event loop (`advance(X[i])` / `learn_one(X[i], y)`); *in-process block, wall*: "
             "the block call as a whole fresh Python process (imports, loading the kernels, the rows from a `.npy` "
             "file), the counterpart of the CLI's wall time. By default the CLI reads and "
             "parses a file's next blocks on a second thread; `--no-reader-thread` keeps it to one. "
             f"Medians of {r['repeats']} interleaved repeats.")
    L.append("")
    L.append("| rows/s | CLI in-run | CLI in-run, one thread | CLI wall | in-process block | in-process per event "
             "| in-process block, wall | **in-run / block** | in-run / per event | one thread / block "
             "| **wall / in-process wall** | wall / block | wall / per event | CLI = in-process predictions |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|")
    med = statistics.median
    for name, key in (("inference only (`--load m --no-learn`)", "inference"), ("learning", "learning")):
        x = r[key]["runs"]
        inrun = med(c["rows"] / c["in_run_s"] for c in x["cli"])
        one = med(c["rows"] / c["in_run_s"] for c in x["cli_1thread"])
        wall = med(n / c["wall"] for c in x["cli"])
        block, loop = med(n / t for t in x["block_s"]), med(n / t for t in x["loop_s"])
        iwall = med(n / t for t in x["inproc_wall"])
        L.append(f"| {name} | {inrun:,.0f} | {one:,.0f} | {wall:,.0f} | {block:,.0f} | {loop:,.0f} | {iwall:,.0f} "
                 f"| **{inrun / block:.0%}** | {inrun / loop:.0%} | {one / block:.0%} | **{wall / iwall:.0%}** "
                 f"| {wall / block:.0%} | {wall / loop:.0%} | {'yes' if r[key]['same_predictions'] else '**no**'} |")
    L.append("")
    startup = statistics.median(c["wall"] - c["in_run_s"] for c in r["inference"]["runs"]["cli"])
    L.append(f"Start-up and shut-down of the CLI process (wall minus in-run, inference): {startup:.2f} s. On "
             f"{n:,} rows that is what separates the wall rate from the in-run rate; it is paid once per process.")
    L.append("")
    peak = {k: max(c["rss_mib"] for c in r[k]["runs"]["cli"]) for k in ("inference", "learning")}
    L.append(f"Peak RSS of the CLI process (MiB, GNU time's %M), {ns:,} vs {n:,} rows: inference "
             f"{r['inference']['cli_small']['rss_mib']:.0f} vs {peak['inference']:.0f}, "
             f"learning {r['learning']['cli_small']['rss_mib']:.0f} vs {peak['learning']:.0f} "
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
