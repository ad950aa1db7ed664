"""River-adapter benchmark driver: accuracy on River's bundled series + per-event adapter speed.

    /work/venv/bin/python bench/bench_river.py                # everything, writes bench/RESULTS.md
    /work/venv/bin/python bench/bench_river.py --only ours    # rows whose name contains "ours"...
    /work/venv/bin/python bench/bench_river.py --no-deepriver --repeats 3 --no-write

Rows are the entries of ``ENTRIES`` (see below). Every entry exposes ``name``,
``accuracy(dataset) -> dict | None`` and ``timing(repeats) -> dict | None``; in-process models are
``peers.Peer`` objects, deep-river runs in its own venv through ``bench/deepriver_runner.py``
(``DEEPRIVER_PYTHON`` overrides the interpreter, default /work/venv-deepriver/bin/python).
The protocol is documented at the top of ``bench/peers.py``.

Adding our estimators = one ``Peer(...)`` in ``OURS`` (template below). The result goes into
bench/RESULTS.md between ``<!-- river:start -->`` and ``<!-- river:end -->`` (other sections of the
file are kept) and the raw numbers into bench/results_river.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import traceback
from typing import ClassVar

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import _results
import peers
from peers import Peer

RESULTS_MD = os.path.join(HERE, "RESULTS.md")
RESULTS_JSON = os.path.join(HERE, "results_river.json")
START, END = "<!-- river:start -->", "<!-- river:end -->"
DEEPRIVER_PYTHON = os.environ.get("DEEPRIVER_PYTHON", "/work/venv-deepriver/bin/python")

# ------------------------------------------------------------------------------------------------
# Ours: one entry per configuration. forecaster(dataset_name) -> River-style forecaster
# (learn_one(y), forecast(h)); regressor() -> River regressor (dict in, float out); speed() -> the
# regressor timed per event on TrumpApproval dict rows (hidden 32 to match the deep-river row).
# peers.FORECAST_DATASETS[dataset_name] gives the horizon/season if a setting depends on it.
#
# from streamlstm.adapters.river import LSTMForecaster, LSTMRegressor
# OURS = [
#     Peer("streamlstm LSTM (ours)",
#          forecaster=lambda ds: LSTMForecaster(hidden=32),
#          regressor=lambda: LSTMRegressor(hidden=32),
#          speed=lambda: LSTMRegressor(hidden=32),
#          note="hidden 32, Adam 1e-3, bptt 16, built-in input/target standardisation"),
# ]
# ------------------------------------------------------------------------------------------------
try:
    from streamlstm.adapters.river import LSTMForecaster, LSTMRegressor
    from streamlstm.adapters.river._forecaster_0_1 import LSTMForecaster01
except ImportError as exc:  # river missing or streamlstm not installed: peers only
    print(f"streamlstm River adapters not importable ({exc}): our rows are left out", file=sys.stderr)
    OURS: list = []
else:
    _SEASON = peers.FORECAST_DATASETS  # dataset -> season (= horizon), as given to the peers
    OURS = [
        Peer("streamlstm LSTM (ours, defaults)",
             forecaster=lambda ds: LSTMForecaster(horizon=_SEASON[ds]),
             regressor=lambda: LSTMRegressor(),
             speed=lambda: LSTMRegressor(hidden=32),
             note="class defaults (regressor: residual on the last target, inputs = feature changes, "
                  "hidden 16, Adam 3e-3, bptt 16; forecaster: the core forecasting engine, i.e. simple "
                  "experts, online autoregressions and an LSTM on the last value's residual, ML-Poly "
                  "weights, season found online; built for horizon h), seed 0. Speed row: "
                  "LSTMRegressor(hidden=32) to match deep-river's"),
        Peer("streamlstm LSTM (ours, season given)",
             forecaster=lambda ds: LSTMForecaster(horizon=_SEASON[ds], season=_SEASON[ds]),
             note="forecaster defaults with season = m as for SNARIMAX/HoltWinters"),
        Peer("streamlstm experts only (ours, lstm=False ablation)",
             forecaster=lambda ds: LSTMForecaster(horizon=_SEASON[ds], lstm=False),
             note="forecaster defaults without the LSTM expert (the difference to the first row is the "
                  "LSTM's contribution)"),
        Peer("streamlstm LSTM, 0.1 design (season given)",
             forecaster=lambda ds: LSTMForecaster01(season=_SEASON[ds]),
             note="the forecaster this adapter had before the engine (residual on the last value or a "
                  "smoothed seasonal base, 24 lagged changes, robust scaling, hidden 16, Adam 3e-3); "
                  "kept in adapters/river/_forecaster_0_1.py for 0.1 pickles"),
    ]


class DeepRiverPeer:
    """A deep-river configuration; results come from one shared subprocess run (cached)."""

    _cache: ClassVar[dict] = {}

    def __init__(self, name, config=None, speed=False, note=""):
        self.name = name
        self.config = config  # key of deepriver_runner.CONFIGS, or None for a speed-only row
        self.speed = speed
        self.note = note

    @classmethod
    def run(cls, configs, datasets, repeats):
        key = (tuple(configs), tuple(datasets), repeats)
        if key not in cls._cache:
            cmd = [DEEPRIVER_PYTHON, os.path.join(HERE, "deepriver_runner.py"),
                   "--configs", ",".join(configs), "--datasets", ",".join(datasets),
                   "--speed", "--repeats", str(repeats)]
            print("running:", " ".join(cmd), file=sys.stderr)
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
            if p.returncode != 0:
                raise RuntimeError(f"deepriver_runner.py exited {p.returncode}")
            cls._cache[key] = json.loads(p.stdout.strip().splitlines()[-1])
        return cls._cache[key]


DEEPRIVER = [
    DeepRiverPeer("deep-river LSTM (class defaults)", config="defaults", speed=True,
                  note="LSTMForecaster(): window 10, hidden 16, Adam 1e-3; LSTMRegressor(n_features=6): "
                       "window 10, hidden 32, Adam 1e-3; scaled (see below). Speed row: bare "
                       "LSTMRegressor(n_features=6, hidden_size=32), 1 torch thread"),
    DeepRiverPeer("deep-river LSTM (docstring example)", config="docstring",
                  note="hidden 8, SGD lr 1e-2, window 10 (LSTMRegressor docstring; same for the forecaster); scaled"),
]

ENTRIES = [
    *OURS,
    *peers.RIVER_PEERS,
    Peer("River StandardScaler | LinearRegression, y scaled",
         forecaster=lambda ds: peers.LagRegressorForecaster(
             peers.preprocessing.TargetStandardScaler(peers.linreg_regressor()),
             n_lags=peers.FORECAST_DATASETS[ds]),
         regressor=lambda: peers.preprocessing.TargetStandardScaler(peers.linreg_regressor()),
         note="same, wrapped in River's TargetStandardScaler (our LSTM standardises targets too)"),
    *DEEPRIVER,
]

COLUMNS = [  # (dataset, metric key, header)
    ("AirlinePassengers", "one_step_mae", "Airline 1-step"),
    ("AirlinePassengers", "horizon_mae", "Airline h=12"),
    ("WaterFlow", "one_step_mae", "WaterFlow 1-step"),
    ("WaterFlow", "horizon_mae", "WaterFlow h=24"),
    ("TrumpApproval", "mae", "Trump 1-step"),
]
DIVERGED = 1e6  # an MAE above this (or non-finite) is reported as diverged, never "best"


def collect(entries, datasets, repeats, deepriver=True):
    acc, speed, errors = {}, {}, {}
    dr = [e for e in entries if isinstance(e, DeepRiverPeer)]
    dr_out = None
    if dr and deepriver:
        configs = [e.config for e in dr if e.config]
        try:
            dr_out = DeepRiverPeer.run(configs, datasets, repeats)
        except Exception as exc:  # no venv, crash...
            errors["deep-river"] = f"{type(exc).__name__}: {exc}"
    for e in entries:
        print(f"== {e.name}", file=sys.stderr)
        if isinstance(e, DeepRiverPeer):
            if dr_out is None:
                continue
            for ds, r in dr_out["accuracy"].get(e.config, {}).items():
                acc[(e.name, ds)] = r
            if e.speed:
                speed[e.name] = dr_out["speed"]
            continue
        for ds in datasets:
            try:
                r = e.accuracy(ds)
            except Exception as ex:
                r = {"error": f"{type(ex).__name__}: {ex}", "traceback": traceback.format_exc()}
            if r is not None:
                acc[(e.name, ds)] = r
        try:
            t = e.timing(repeats)
        except Exception as ex:
            t = {"error": f"{type(ex).__name__}: {ex}"}
        if t is not None:
            speed[e.name] = t
    return acc, speed, errors, (dr_out or {}).get("versions")


def _fmt(v, bold=False):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if not math.isfinite(v) or v > DIVERGED:
        return f"diverged ({v:.1e})"
    s = f"{v:.3f}" if v < 100 else f"{v:.1f}"
    return f"**{s}**" if bold else s


def _md(name: str) -> str:
    return name.replace("|", "\\|")


def render(entries, acc, speed, errors, dr_versions, repeats) -> str:
    import river

    names = [e.name for e in entries]
    cols = [c for c in COLUMNS if any((n, c[0]) in acc for n in names)]
    best = {}
    for ds, key, _ in cols:
        vals = [acc[(n, ds)].get(key) for n in names if (n, ds) in acc]
        vals = [v for v in vals if isinstance(v, float) and math.isfinite(v) and v <= DIVERGED]
        best[(ds, key)] = min(vals) if vals else None
    L = [START, "## River adapters: accuracy and per-event speed", ""]
    L.append(f"Generated by `bench/bench_river.py` on {dt.date.today().isoformat()}, "
             f"{platform.machine()} {os.cpu_count()} cores (shared), Python {platform.python_version()}, "
             f"river {river.__version__}"
             + (f"; deep-river {dr_versions['deep-river']} with river {dr_versions['river']}, "
                f"torch {dr_versions['torch']} (separate venv)" if dr_versions else "") + ".")
    L += ["", "### Accuracy (MAE, lower is better; best per column in bold)", ""]
    L.append("| model | " + " | ".join(h for *_, h in cols) + " |")
    L.append("|---|" + "---:|" * len(cols))
    for n in names:
        cells = []
        for ds, key, _ in cols:
            r = acc.get((n, ds))
            if r is None:
                cells.append("-")
            elif "error" in r:
                cells.append("error")
            else:
                v = r.get(key)
                cells.append(_fmt(v, bold=v is not None and v == best[(ds, key)]))
        if any(c != "-" for c in cells):
            L.append(f"| {_md(n)} | " + " | ".join(cells) + " |")
    L += ["", ("Protocol (same code for every row, `bench/peers.py`): univariate series (values only, no "
          "timestamps); the first h values (12 / 24) are learned unscored; then for each t, with "
          "y_0..y_{t-1} learned: 1-step = |y_t - forecast(1)[0]| averaged over all t; h = mean over "
          "(t, k) of |y_{t+k} - forecast(h)[k]|, k = 0..h-1, for every t with a full horizon "
          "(121 / 1221 origins); then learn_one(y_t). `river.evaluate.evaluate` itself scores the "
          "forecast made before learning y_t against y_{t+1}..y_{t+h} (one step late), which is not "
          "used here. Trump = `evaluate.progressive_val_score` MAE (predict_one then learn_one, 6 "
          "features as given)."), ""]
    for e in entries:
        if (e.note and any(k[0] == e.name for k in acc)) or (e.name in speed and e.note):
            L.append(f"- {e.name}: {e.note}")
    if any(isinstance(e, DeepRiverPeer) and any(k[0] == e.name for k in acc) for e in entries):
        L.append("- deep-river scaling: regressor = `StandardScaler() | TargetStandardScaler(LSTMRegressor(...))`, "
                 "forecaster = online z-scoring of the series (`peers.ScaledForecaster`; deep-river has no "
                 "scaling of its own). Every deep-river model is built right after `torch.manual_seed(42)`: "
                 "deep-river 0.3.4 seeds only after building the module, so its `seed` does not fix the initial weights.")
    diverged = [(n, ds) for (n, ds), r in acc.items() if "error" not in r and any(
        isinstance(r.get(k), float) and not (math.isfinite(r[k]) and r[k] <= DIVERGED) for _, k, _ in cols)]
    if any(ds == "WaterFlow" and n.startswith("River") for n, ds in diverged):
        L.append("- \"diverged\" (River rows): WaterFlow's first ~95 hours vary by about 1 l/s, then the "
                 "flow drops to 24 l/s; standardised lags of about -100 make River's SGD (lr 0.01) blow up "
                 "at t = 98 (SNARIMAX and the lag regression alike, with or without target scaling).")
    for k, v in errors.items():
        L.append(f"- {k}: not run ({v})")
    for (n, ds), r in acc.items():
        if "error" in r:
            L.append(f"- {n} on {ds}: {r['error']}")
    L += ["", ("### Per-event speed (TrumpApproval dict rows, µs, median over "
          f"{repeats} repeats of the per-event median; [min-max] over repeats)"), ""]
    L.append("| model | learn_one + predict_one | predict_one |")
    L.append("|---|---:|---:|")
    for n in names:
        t = speed.get(n)
        if not t:
            continue
        if "error" in t:
            L.append(f"| {_md(n)} | error | error |")
            continue
        a, b = t["learn_predict_us_range"], t["predict_us_range"]
        L.append(f"| {_md(n)} | {t['learn_predict_us']:.1f} [{a[0]:.0f}-{a[1]:.0f}] | "
                 f"{t['predict_us']:.1f} [{b[0]:.0f}-{b[1]:.0f}] |")
    L += ["", ("Each repeat: fresh model, 100 warm-up rows untimed, then the 901 remaining rows, "
          "each `predict_one(x)` + `learn_one(x, y)` timed alone (`perf_counter_ns`). The machine's "
          "2 cores are shared, so treat differences under ~2x with care."), "", END]
    return "\n".join(L) + "\n"


def keep_previous(kept, datasets, acc, speed, errors):
    """Put the rows of the entries ``kept`` (not run now) from the last run saved in
    ``results_river.json`` into ``acc`` / ``speed``, with a note saying when deep-river ran
    (``deepriver_date``: a run that kept its rows keeps that date too); returns that run's
    deep-river versions and that date."""
    with open(RESULTS_JSON) as f:
        old = json.load(f)
    when = old.get("deepriver_date", old["date"])
    for e in kept:
        for ds in datasets:
            r = old["accuracy"].get(f"{e.name} | {ds}")
            if r is not None:
                acc[(e.name, ds)] = r
        if e.name in old.get("speed", {}):
            speed[e.name] = old["speed"][e.name]
    errors["deep-river"] = (f"its venv is not on this machine: its rows are those of its run of {when} "
                            "(same protocol and series; deep-river does not change with our code)")
    return old.get("deepriver_versions"), when


def write_section(text: str, path: str = RESULTS_MD):
    _results.write_section("river", text, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated substrings; keep entries whose name contains one")
    ap.add_argument("--datasets", default=",".join(peers.DATASETS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-deepriver", action="store_true")
    ap.add_argument("--keep-deepriver", action="store_true",
                    help="without deep-river's venv: keep its rows from the last run saved in results_river.json")
    ap.add_argument("--no-write", action="store_true", help="print the section, don't touch RESULTS.md")
    args = ap.parse_args(argv)

    entries = ENTRIES
    if args.only:
        keys = [k.strip().lower() for k in args.only.split(",")]
        entries = [e for e in entries if any(k in e.name.lower() for k in keys)]
    kept = [e for e in entries if isinstance(e, DeepRiverPeer)] if args.keep_deepriver else []
    if args.no_deepriver or args.keep_deepriver:
        entries = [e for e in entries if not isinstance(e, DeepRiverPeer)]
    datasets = [d for d in args.datasets.split(",") if d]
    acc, speed, errors, drv = collect(entries, datasets, args.repeats)
    now = dt.datetime.now().isoformat(timespec="seconds")
    deepriver_date = now if any(isinstance(e, DeepRiverPeer) for e in entries) else None
    if kept:
        drv, deepriver_date = keep_previous(kept, datasets, acc, speed, errors)
        entries = [e for e in ENTRIES if e in entries or e in kept]
    text = render(entries, acc, speed, errors, drv, args.repeats)
    print(text)
    if not args.no_write:
        write_section(text)
        raw = {"date": now, "deepriver_date": deepriver_date,
               "accuracy": {f"{n} | {ds}": r for (n, ds), r in acc.items()},
               "speed": speed, "errors": errors, "deepriver_versions": drv}
        with open(RESULTS_JSON, "w") as f:
            json.dump(raw, f, indent=1, default=str)
        print(f"wrote {RESULTS_MD} and {RESULTS_JSON}", file=sys.stderr)


if __name__ == "__main__":
    main()
