"""`streamlstm run --ahead 1` with defaults on the six real series, and its speed.

    .venv/bin/python bench/bench_cli_forecast.py              # prints, and writes bench/RESULTS.md
    .venv/bin/python bench/bench_cli_forecast.py --no-write

For each series of ``../shared/data/series`` (``/work/shared/data/series`` as fallback) the
CLI runs as a user would run it: ``streamlstm run FILE --target T [--key K] --ahead 1`` (the
forecasting engine, which forecasts from the target's history unless ``--features`` is given),
and again with ``--features`` naming the numeric columns that the CLI offers as features (the
regression default). The MAE is taken over that folder's README's scoring rows (elnino
t>=24, sunspots t>=20, nile t>=10, unemp t>=20, grunfeld from the 4th year of each firm,
chick weights from the 3rd weighing of each chick) from the ``forecast_T_t`` column, next to
the README's last value and the old CLI's figures.

The check that the CLI is the core: the core :class:`streamlstm.Forecaster` is fed the same
rows in Python (each row: ``learn_one(y, x, key)``, then ``forecast(key, xs=[x])``) and its
forecasts must equal the CLI's written numbers exactly (``==``); the script fails otherwise.

Speed: ``run --ahead 1`` on a 20,000-row file with the engine and with ``--model lstm`` (the
rows/s of the CLI's summary, which leaves out start-up), both run here in turn.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import _results

from streamlstm import Forecaster

CMD = [sys.executable, "-m", "streamlstm.adapters.cli"]

# name: file, target, key, scoring start (row of the series, or of the key), the README's
# last value and old CLI figures (`run --ahead 1`, `run --ahead 1 --difference`)
SERIES = {
    "elnino": ("elnino.csv", "sst", None, 24, 0.974, 1.116, 0.531),
    "sunspots": ("sunspots_yearly.csv", "sunactivity", None, 20, 18.75, 25.95, 14.97),
    "nile": ("nile.csv", "volume", None, 10, 127.9, 135.6, 129.0),
    "unemp": ("macro.csv", "unemp", None, 20, 0.231, 1.189, 0.232),
    "grunfeld": ("grunfeld.csv", "invest", "firm", 3, 26.33, 83.19, 27.46),
    "chick": ("chickweights.csv", "weight", "chick", 2, 16.91, 40.62, 9.90),
}
# the numeric columns the CLI offers as features (its regression default; time columns left out)
OFFERED = {"unemp": "realgdp,realcons,realinv,cpi,m1,tbilrate,infl,realint", "grunfeld": "value,capital",
           "chick": "time,diet"}


def data_dir() -> Path | None:
    for p in (ROOT.parent / "shared" / "data" / "series", Path("/work/shared/data/series")):
        if p.is_dir():
            return p
    return None


def cli(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([*CMD, *map(str, args)], capture_output=True, timeout=600)
    if r.returncode:
        raise SystemExit(f"streamlstm {' '.join(map(str, args))} failed:\n{r.stderr.decode()}")
    return r


def saved_job(path: Path) -> dict:
    """The job (features, key, time) the CLI chose, from the saved model (`streamlstm info --json`)."""
    return json.loads(cli("info", path, "--json").stdout)


def core_forecasts(path: Path, target: str, key: str | None, features: list[str]) -> list[float]:
    """The core engine fed the same rows: each row's forecast for the next row (of its key)."""
    model = Forecaster(horizon=1, n_features=len(features))
    out = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            k = row[key] if key else None
            x = [float(row[c]) for c in features] if features else None
            model.learn_one(float(row[target]), x, k)
            out.append(float(model.forecast(k, None if x is None else [x])[0]))
    return out


def scored_mae(stdout: bytes, target: str, key: str | None, start: int) -> tuple[float, int]:
    seen: dict = {}
    err = []
    for row in csv.DictReader(io.StringIO(stdout.decode())):
        k = row[key] if key else None
        n = seen.get(k, 0)
        seen[k] = n + 1
        if n >= start:
            err.append(abs(float(row[target]) - float(row[f"forecast_{target}_t"])))
    return float(np.mean(err)), len(err)


def accuracy(d: Path, work: Path) -> list[dict]:
    out = []
    for name, (file, target, key, start, last, old, old_diff) in SERIES.items():
        path = d / file
        res: dict = {"series": name, "last": last, "old": old, "old_difference": old_diff}
        variants = [("defaults", [])] + ([("with features", ["--features", OFFERED[name]])] if name in OFFERED else [])
        for label, extra in variants:
            model = work / f"{name}-{label.replace(' ', '_')}.slstm"
            args = [path, "--target", target, "--ahead", "1", "--save", model, *extra]
            if key:
                args += ["--key", key]
            r = cli("run", *args)
            info = saved_job(model)
            feats = info.get("features", [])
            mae, n = scored_mae(r.stdout, target, key, start)
            got = [float(row[f"forecast_{target}_t+1"]) for row in csv.DictReader(io.StringIO(r.stdout.decode()))]
            want = core_forecasts(path, target, key, feats)
            same = got == want
            if not same:
                bad = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b) if len(got) == len(want) else -1
                raise SystemExit(f"{name} ({label}): the CLI's forecasts differ from the core's (row {bad})")
            season = re.search(r"season[^\n]*", r.stderr.decode().split("learning", 1)[-1])
            res[label] = {"mae": mae, "rows": n, "features": feats, "season": season.group(0) if season else "",
                          "equal_to_core": same}
        out.append(res)
        wf = res.get("with features")
        print(f"{name}: defaults {res['defaults']['mae']:.4g}"
              + (f", with features {wf['mae']:.4g}" if wf else "") + f"; last value {last}; CLI == core", flush=True)
    return out


def speed(work: Path, rows: int = 20_000) -> dict:
    rng = np.random.default_rng(0)
    t = np.arange(rows)
    y = 10 + 3 * np.sin(2 * np.pi * t / 24) + np.cumsum(rng.normal(0, 0.05, rows)) + rng.normal(0, 0.3, rows)
    path = work / "speed.csv"
    path.write_text("t,y\n" + "".join(f"{i},{v:.4f}\n" for i, v in zip(t.tolist(), y.tolist())))
    rates = {}
    for label, extra in (("engine (default)", []), ("bare LSTM (--model lstm)", ["--model", "lstm"])):
        r = cli("run", path, "--target", "y", "--time", "t", "--ahead", "1", *extra)
        m = re.search(r"\(([\d,]+) rows/s\)", r.stderr.decode())
        rates[label] = float(m.group(1).replace(",", "")) if m else math.nan
        print(f"{label}: {rates[label]:,.0f} rows/s", flush=True)
    return {"rows": rows, "rows_per_s": rates}


def render(acc: list[dict], sp: dict) -> str:
    import datetime as dt
    import platform

    commit = _results.sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).strip()
    lines = ["<!-- cli_forecast:start -->", "## `streamlstm run --ahead 1` (the forecasting engine) on the six real series",
             "",
             (f"Generated by `bench/bench_cli_forecast.py` on {dt.date.today()}, {platform.machine()} "
              f"{_results.cpu_model()} (shared, timings noisy), Python {platform.python_version()}, commit {commit}. "
              "One-step MAE over the scoring rows of `../shared/data/README.md`; the README's figures for the last "
              "value and the old CLI (a bare LSTM) beside. Every CLI forecast equals the core `Forecaster`'s fed "
              "the same rows in Python (`==`, checked by the script)."),
             "",
             ("| series | run --ahead 1 (defaults) | / last value | season found | with `--features` (the columns "
              "offered) | / last value | last value | old CLI | old CLI --difference |"),
             "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for r in acc:
        dflt, wf = r["defaults"], r.get("with features")
        season = dflt["season"].replace("season: ", "").replace("season per key: ", "per key: ").split(" (")[0]
        with_f = (f"{wf['mae']:.4g} ({', '.join(wf['features'])}) | {wf['mae'] / r['last']:.3f}" if wf else "- | -")
        lines.append(f"| {r['series']} | {dflt['mae']:.4g} | {dflt['mae'] / r['last']:.3f} | {season} | {with_f} | "
                     f"{r['last']} | {r['old']} | {r['old_difference']} |")
    rates = sp["rows_per_s"]
    eng, lstm = rates["engine (default)"], rates["bare LSTM (--model lstm)"]
    lines += ["", (f"Speed, `run --ahead 1` on a {sp['rows']:,}-row file (rows/s of the summary, start-up left "
                   "out; both in this run, one after the other):"), "",
              "| model | rows/s |", "|---|---:|",
              f"| engine (default) | {eng:,.0f} |", f"| bare LSTM (`--model lstm`) | {lstm:,.0f} |",
              f"| ratio engine / LSTM | {eng / lstm:.3f} |", "", "<!-- cli_forecast:end -->"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = ap.parse_args()
    d = data_dir()
    if d is None:
        raise SystemExit("../shared/data/series not found: nothing to measure")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    with tempfile.TemporaryDirectory(prefix="bench-cli-forecast-") as tmp:
        work = Path(tmp)
        acc = accuracy(d, work)
        sp = speed(work)
    text = render(acc, sp)
    print(text)
    if not args.no_write:
        _results.write_section("cli_forecast", text)


if __name__ == "__main__":
    main()
