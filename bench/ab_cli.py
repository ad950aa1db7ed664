"""The `streamlstm run` command of this tree against another revision, in one run.

    python bench/ab_cli.py --base main                          # 100,000 rows, 5 repeats
    python bench/ab_cli.py --base v0.1.0 --rows 300000 --repeats 9 --jobs inference

A shared machine's speed drifts by more than the few per cent a change costs, so the two
sides are timed turn about (ABBA order) on the same files, and the medians compared. The
base revision is unpacked with ``git archive`` into a temporary folder and imported from
there (its own numba cache); both sides run as fresh processes from this interpreter.
Reported per job: the in-run rate from the summary line (rows/s, start-up excluded), the
CPU seconds of the whole process (less sensitive to other processes than wall time), and
whether the two outputs are byte for byte the same.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_cli import make_data

ROOT = Path(__file__).resolve().parent.parent


def unpack(rev: str, folder: Path) -> Path:
    """The tree of ``rev`` in ``folder``, importable as ``streamlstm`` (with its adapters)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    link = folder / "streamlstm" / "adapters"
    if not link.exists():
        link.symlink_to("../adapters")  # the installed layout
    return folder


def run(tree: Path | None, cache: Path, args: list[str], out: Path) -> tuple[float, float]:
    """(in-run rows/s, CPU seconds) of one `streamlstm` process; ``tree`` None: this one."""
    head = f"import sys; sys.path.insert(0, {str(tree)!r}); " if tree else "import sys; "
    code = head + "sys.argv = ['streamlstm'] + sys.argv[1:]; from streamlstm.adapters.cli import main; main()"
    with open(out, "wb") as fh:
        p = subprocess.Popen([sys.executable, "-c", code, *args], stdout=fh, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, env={**os.environ, "NUMBA_CACHE_DIR": str(cache)})
        assert p.stderr is not None  # stderr=PIPE
        err = p.stderr.read().decode()  # not communicate(): it would reap the child before wait4
        _, status, usage = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{'base' if tree else 'this tree'} failed: {err}")
    rate = re.search(r"\(([\d,]+) rows/s\)", err)
    assert rate, err
    return float(rate.group(1).replace(",", "")), usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="git revision to compare with (a branch, tag or commit)")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--jobs", default="", help="only the jobs whose name holds this text")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "base").mkdir()
        base = unpack(a.base, d / "base")
        sides = {"base": (base, d / "base-cache"), "this": (None, Path(os.environ.get("NUMBA_CACHE_DIR",
                                                                                      d / "this-cache")))}
        make_data(d / "xy.csv", a.rows)
        with open(d / "xy.csv") as src, open(d / "kxy.csv", "w") as dst:  # the same rows over 4 keys
            dst.write("k," + src.readline())
            dst.writelines(f"s{i % 4},{line}" for i, line in enumerate(src))
        common = ["--target", "y", "--features", "x"]
        for name, (tree, cache) in sides.items():  # a model to load; warm numba caches
            run(tree, cache, ["run", str(d / "xy.csv"), *common, "--save", str(d / f"m_{name}.slstm")], d / "out")
        jobs = {
            "inference (--load --no-learn)": lambda s: ["run", str(d / "xy.csv"), *common, "--load",
                                                        str(d / f"m_{s}.slstm"), "--no-learn"],
            "learning": lambda s: ["run", str(d / "xy.csv"), *common],
            "learning, checkpoint every 10,000": lambda s: ["run", str(d / "xy.csv"), *common, "--checkpoint",
                                                            str(d / f"ck_{s}.slstm"), "--checkpoint-every", "10000"],
            "keyed learning (Python reader)": lambda s: ["run", str(d / "kxy.csv"), *common, "--key", "k"],
        }
        print(f"{a.rows:,} rows, {a.repeats} repeats, base {a.base}; load average {os.getloadavg()}")
        for job, args in jobs.items():
            if a.jobs not in job:
                continue
            rates: dict[str, list[float]] = {"base": [], "this": []}
            cpus: dict[str, list[float]] = {"base": [], "this": []}
            for i in range(a.repeats):
                for name in ("base", "this") if i % 2 == 0 else ("this", "base"):
                    (d / f"ck_{name}.slstm").unlink(missing_ok=True)
                    rate, cpu = run(*sides[name], args(name), d / f"out_{name}")
                    rates[name].append(rate)
                    cpus[name].append(cpu)
            same = (d / "out_base").read_bytes() == (d / "out_this").read_bytes()
            rb, rt = statistics.median(rates["base"]), statistics.median(rates["this"])
            cb, ct = statistics.median(cpus["base"]), statistics.median(cpus["this"])
            print(f"{job:36s} rows/s base {rb:>9,.0f} this {rt:>9,.0f} ({rt / rb:.3f}x)   CPU s base {cb:.3f} "
                  f"this {ct:.3f} ({ct / cb:.3f}x)   same output: {same}", flush=True)
        print(f"load average {os.getloadavg()}")


if __name__ == "__main__":
    main()
