"""The command line's keyed mode (shared weights) against `KeyedLSTM` in-process, on the same rows.

    python bench/bench_cli_keyed.py                      # 1,000,000 rows, 10,000 keys
    python bench/bench_cli_keyed.py --rows 100000        # quick
    python bench/bench_cli_keyed.py --profile            # also: where the CLI's time goes

One CSV file ``key,x,y`` whose rows cycle through ``--keys`` interleaved keys (every row a
different key from the one before), hidden 32 and the CLI's other defaults. For inference
(``--no-learn``) and learning, the CLI runs as a subprocess reading the file and writing its
CSV output to a file; its rate is the one it reports for the run itself (rows over the time
from the first row read to the last row written: start-up and compiling excluded). In
process, ``KeyedLSTM.step_many`` / ``learn_many`` then run on the same rows, already parsed
(parsing not timed), in the same blocks (``--block-size``), with the same string keys, from
the same starting model (the CLI's, saved from a run over the header alone). The CLI's
predictions are checked equal to the in-process ones. Acceptance (issue 9, point 3): the
CLI reaches at least 60% of the in-process rate. Medians over ``--repeats``. Writes a
section of bench/RESULTS.md between ``<!-- cli_keyed:start -->`` and ``<!-- cli_keyed:end -->``.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import io
import os
import platform
import pstats
import re
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
CLI = [sys.executable, "-m", "streamlstm.adapters.cli"]


def make_data(path: Path, rows: int, keys: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    k = np.arange(rows) % keys
    t = np.arange(rows) // keys
    x = np.sin(0.05 * t + k) + 0.1 * rng.normal(size=rows)
    y = 2.0 * x + 0.05 * rng.normal(size=rows)
    with open(path, "w") as fh:
        fh.write("key,x,y\n")
        step = 200_000
        for a in range(0, rows, step):
            fh.write("".join(f"k{i},{u!r},{v!r}\n"
                             for i, u, v in zip(k[a:a + step].tolist(), x[a:a + step].tolist(), y[a:a + step].tolist())))


def load(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    with open(path) as fh:
        fh.readline()
        cols = [line.rstrip("\n").split(",") for line in fh]
    keys = [c[0] for c in cols]
    X = np.array([[float(c[1])] for c in cols])
    y = np.array([float(c[2]) for c in cols])
    return keys, X, y


def run_cli(args: list[str], out_path: Path) -> float:
    """The rate the CLI reports for its run (rows/s; NaN without a summary)."""
    with open(out_path, "wb") as out:
        p = subprocess.run([*CLI, *args], stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    err = p.stderr.decode()
    if p.returncode != 0:
        raise SystemExit(f"CLI failed ({p.returncode}): {' '.join(args)}\n{err}")
    m = re.search(r"([\d,]+) rows in ([\d.]+) s", err)
    if m is None or float(m.group(2)) == 0.0:  # no summary, or no rows (the header-only run)
        return float("nan")
    return int(m.group(1).replace(",", "")) / float(m.group(2))


def inprocess(model_bytes: bytes, keys: list[str], X: np.ndarray, y: np.ndarray, learn: bool,
              block: int) -> tuple[float, np.ndarray]:
    from streamlstm import KeyedLSTM, OnlineLSTM

    store = KeyedLSTM(OnlineLSTM.from_bytes(model_bytes), learn=learn)
    known = np.ones(len(y), dtype=bool)
    out = np.empty(len(y))
    t0 = time.perf_counter()
    for a in range(0, len(y), block):
        b = min(len(y), a + block)
        if learn:
            out[a:b] = store.learn_many(keys[a:b], X[a:b], y[a:b], known[a:b])[:, 0]
        else:
            out[a:b] = store.step_many(keys[a:b], X[a:b])[:, 0]
    return len(y) / (time.perf_counter() - t0), out


def preds(path: Path) -> np.ndarray:
    with open(path) as fh:
        fh.readline()
        return np.array([float(line.split(",")[2]) for line in fh])  # key, y, pred_y, error


def profile_cli(data: Path, args: list[str], top: int = 14) -> str:
    """cProfile of the CLI's job in this process (the model's calls are compiled code: their
    time is that of the Python function that calls them)."""
    from streamlstm.adapters import cli

    with cli.run.make_context("run", [str(data), *args, "--quiet"]) as ctx:
        opts = dict(ctx.params)
    sink = io.StringIO()
    cli._run(opts, set(), stream=io.StringIO())  # compile / load the kernels first
    prof = cProfile.Profile()
    prof.enable()
    cli._run(opts, set(), stream=sink)
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(top)
    return text.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--block-size", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", default="inference,learning", help="comma-separated: inference, learning")
    ap.add_argument("--profile", action="store_true", help="profile the CLI's job (a third of the rows)")
    ap.add_argument("--no-write", action="store_true", help="print the section, do not touch RESULTS.md")
    a = ap.parse_args()
    res: dict = {"rows": a.rows, "keys": a.keys, "block": a.block_size}
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        data = d / "k.csv"
        make_data(data, a.rows, a.keys)
        (d / "empty.csv").write_text("key,x,y\n")
        common = ["--target", "y", "--key", "key", "--features", "x", "--block-size", str(a.block_size)]
        run_cli(["run", str(d / "empty.csv"), *common, "--save", str(d / "start.slstm")], d / "o.csv")
        from streamlstm import persistence

        model_bytes = persistence.read_file(d / "start.slstm")[2]["model"].tobytes()
        keys, X, y = load(data)
        jobs = [j for j in (("inference", ["--no-learn"], False), ("learning", [], True)) if j[0] in a.jobs.split(",")]
        for job, extra, learn in jobs:
            cli_rates, lib_rates = [], []
            same = True
            for _ in range(a.repeats):  # interleaved: the machine's load falls on both alike
                cli_rates.append(run_cli(["run", str(data), *common, *extra], d / "out.csv"))
                rate, want = inprocess(model_bytes, keys, X, y, learn, a.block_size)
                lib_rates.append(rate)
                same &= bool((preds(d / "out.csv") == want).all())
            res[job] = {"cli": statistics.median(cli_rates), "keyed": statistics.median(lib_rates),
                        "cli_runs": cli_rates, "keyed_runs": lib_rates, "same_predictions": same}
            res[job]["ratio"] = res[job]["cli"] / res[job]["keyed"]
            print(job, {k: v for k, v in res[job].items() if not k.endswith("runs")}, flush=True)
        if a.profile:
            small = d / "small.csv"
            with open(data) as src, open(small, "w") as dst:
                for i, line in enumerate(src):
                    if i > a.rows // 3:
                        break
                    dst.write(line)
            res["profile"] = {job: profile_cli(small, [*common, *extra]) for job, extra, _ in jobs}
    section = render(res)
    print(section)
    if not a.no_write:
        _results.write_section("cli_keyed", section, RESULTS)


def render(r: dict) -> str:
    L = ["<!-- cli_keyed:start -->", "## Command line, keyed mode with shared weights vs `KeyedLSTM` (bench_cli_keyed.py)", ""]
    L.append(f"{datetime.date.today()}, {platform.python_version()}, {os.cpu_count()} cores shared with other jobs "
             f"(timings noisy: compare the ratios, taken in one run). {r['rows']:,} rows cycling through "
             f"{r['keys']:,} keys (each row another key), 1 feature, hidden 32, float64 (the CLI's defaults), blocks of "
             f"{r['block']:,} rows for both. CLI: its own in-run rate (start-up excluded), output to a file. "
             "`KeyedLSTM`: the same rows already parsed, the same string keys and starting model. Medians.")
    L += ["", "| job | CLI rows/s | `KeyedLSTM` rows/s | CLI / `KeyedLSTM` | same predictions |", "|---|---:|---:|---:|---|"]
    for job in ("inference", "learning"):
        if job not in r:
            continue
        x = r[job]
        L.append(f"| {job} | {x['cli']:,.0f} | {x['keyed']:,.0f} | {x['ratio']:.0%} | "
                 f"{'yes (==)' if x['same_predictions'] else '**no**'} |")
    if "profile" in r:
        for job, text in r["profile"].items():
            L += ["", f"Where the CLI's time goes ({job}, a third of the rows, cProfile by own time):", "", "```"]
            lines = text.strip().splitlines()
            start = next((i for i, s in enumerate(lines) if s.strip().startswith("ncalls")), 0)
            L += [s[:150] for s in lines[start:start + 16]]
            L.append("```")
    L.append("<!-- cli_keyed:end -->")
    return "\n".join(L)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
