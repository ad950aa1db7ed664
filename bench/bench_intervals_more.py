"""Coverage and width of the forecasting engine's one-step intervals on series outside the
forecasting bench, with and without the calibrator's candidate scale rates.

    .venv/bin/python bench/bench_intervals_more.py     # writes the "intervals-more" section of RESULTS.md

Needs ``statsmodels`` (its bundled datasets, no download; the ``bench-forecast`` extra) and
``river`` (the jackknife). Series:

* 20 real series bundled with statsmodels that the forecasting bench does not use: the US
  macro data's columns but unemployment (quarterly, 203 rows; the bench has unemployment),
  the Danish money-demand data (quarterly, 55 rows), the interest-inflation data (quarterly,
  107 rows), Mauna Loa CO2 (weekly, 2284 rows, gaps filled by interpolation, and its
  4-week means, 571 rows);
* the 13 NAB dev streams (``shared/data/nab-dev``), their first 6000 values.

Protocol as in ``bench/bench_intervals.py``: ``Forecaster(interval_levels=(0.8, 0.9, 0.95))``
learning prequentially, ``forecast_interval()`` just before each value, scored after a 10%
warm-up; tolerance ±1.5 points for 500 rows or more, else the 95% binomial band around nominal;
River's ``RegressionJackknife`` around the same forecasts, its level searched for our coverage.
The ablation gives the engine a calibrator with one scale rate (``scale_rates=()``, the
running mean at rate ``decay = 0.02`` of earlier versions) and changes nothing else.
"""

from __future__ import annotations

import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_intervals as B
from _results import write_section

from streamlstm import Forecaster
from streamlstm.calibration import OnlineCalibrator

LEVELS = B.LEVELS
NAB_VALUES = 6000


def statsmodels_series() -> dict[str, np.ndarray]:
    """The statsmodels datasets' series (see the module's doc)."""
    import statsmodels.api as sm

    out: dict[str, np.ndarray] = {}
    macro = sm.datasets.macrodata.load_pandas().data
    for c in ("realgdp", "realcons", "realinv", "realgovt", "realdpi", "cpi", "m1", "tbilrate", "pop", "infl",
              "realint"):
        out[f"macro {c}"] = macro[c].to_numpy(float)
    danish = sm.datasets.danish_data.load_pandas().data
    for c in danish.columns:
        out[f"danish {c}"] = danish[c].to_numpy(float)
    ii = sm.datasets.interest_inflation.load_pandas().data
    for c in ("Dp", "R"):
        out[f"interest-inflation {c}"] = ii[c].to_numpy(float)
    co2 = sm.datasets.co2.load_pandas().data["co2"].interpolate().bfill().to_numpy(float)
    out["co2 weekly"] = co2
    out["co2 4-weekly"] = co2[: len(co2) // 4 * 4].reshape(-1, 4).mean(axis=1)
    return out


def nab_series() -> dict[str, np.ndarray]:
    root = B.data_root()
    if root is None:
        return {}
    import nab_score

    corpus = nab_score.load_corpus(root / "nab-dev")
    return {"NAB " + name.split("/")[-1][:-4]: np.asarray(values, float)[:NAB_VALUES]
            for name, (values, _) in sorted(corpus.items())}


def single_rate(model: Forecaster) -> Forecaster:
    """The ablation: the same engine, its calibrator with one scale rate (before any value)."""
    calibration = model._calibration
    assert calibration is not None, "the engine has no calibrator: give it interval_levels"
    cal = calibration.calibrator
    calibration.calibrator = OnlineCalibrator(
        levels=cal.levels, horizon=cal.horizon, pooled=cal.pooled, integrator_saturation=cal.integrator_saturation,
        integrator_band=cal.integrator_band, scale_rates=())
    return model


def run(y: np.ndarray, ablate: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-step forecasts and the intervals asked when each value is due: ``(f, lo, hi)``,
    NaN before the first residual."""
    model = Forecaster(interval_levels=LEVELS)
    if ablate:
        single_rate(model)
    n = y.shape[0]
    f = np.full(n, np.nan)
    lo = np.full((len(LEVELS), n), np.nan)
    hi = np.full((len(LEVELS), n), np.nan)
    for t in range(n):
        if t:
            point, low, high = model.forecast_interval()
            f[t], lo[:, t], hi[:, t] = point[0], low[:, 0], high[:, 0]
        model.learn_one(float(y[t]))
    return f, lo, hi


def evaluate(name: str, y: np.ndarray, ablate: bool, jackknife_cache: dict) -> list[dict]:
    f, lo, hi = run(y, ablate)
    has = np.isfinite(lo).all(axis=0)
    yy, ff = y[has], f[has]
    start = B.warm_up(yy)
    keys = np.zeros(yy.shape[0], dtype=np.int64)
    rows = []
    for j, level in enumerate(LEVELS):
        cov, width = B.score(yy, lo[j, has], hi[j, has], start)
        scored = yy.shape[0] - start
        tol = 0.015 if y.shape[0] >= 500 else 1.96 * math.sqrt(level * (1 - level) / scored)
        cache_key = (name, round(cov, 9))
        if cache_key not in jackknife_cache:
            jackknife_cache[cache_key] = B.matched_width(B.jackknife, yy, ff, keys, start, cov)
        matched = jackknife_cache[cache_key]
        rows.append({"series": name, "rows": y.shape[0], "level": level, "coverage": cov, "tol": tol,
                     "within": abs(cov - level) <= tol, "width": width, "jk": matched,
                     "no_wider": B.no_wider(width, matched, cov)})
    return rows


def summary(rows: list[dict]) -> dict:
    series = sorted({r["series"] for r in rows})
    # where the jackknife reaches our coverage (elsewhere it has no interval that covers as much)
    ratios = [r["width"] / r["jk"][2] for r in rows
              if r["jk"][1] >= r["coverage"] and r["jk"][2] > 0 and math.isfinite(r["width"])]
    return {"outside": sum(not r["within"] for r in rows), "cases": len(rows),
            "below": sum(r["coverage"] < r["level"] - r["tol"] for r in rows),
            "deviation": float(np.mean([(r["coverage"] - r["level"]) / r["tol"] for r in rows])),
            "no_wider": sum(r["no_wider"] for r in rows),
            "series_no_wider": sum(sum(r["no_wider"] for r in rows if r["series"] == s) >= 2 for s in series),
            "series": len(series), "geo": float(np.exp(np.mean(np.log(ratios)))), "median": float(np.median(ratios))}


def main() -> None:
    suites = {"statsmodels (20 series)": statsmodels_series(), "NAB dev (13 streams, first 6000 values)": nab_series()}
    results: dict[tuple[str, bool], list[dict]] = {}
    cache: dict = {}
    start = time.perf_counter()
    for suite, series in suites.items():
        for ablate in (False, True):
            rows = []
            for name, y in series.items():
                rows += evaluate(name, y, ablate, cache)
            results[suite, ablate] = rows
            s = summary(rows)
            print(f"{suite} {'one rate' if ablate else 'default'}: outside {s['outside']}/{s['cases']} "
                  f"(below {s['below']}), no wider {s['no_wider']} cases / {s['series_no_wider']} series, "
                  f"geo {s['geo']:.3f} median {s['median']:.3f}  ({time.perf_counter() - start:.0f} s)", flush=True)
    lines = ["<!-- intervals-more:start -->",
             "## Prediction intervals on series outside the bench (`bench/bench_intervals_more.py`)", "",
             (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, one run. The forecasting engine's one-step intervals "
             "(`Forecaster(interval_levels=(0.8, 0.9, 0.95))`, asked when each value is due, scored after a 10% "
             "warm-up; tolerance ±1.5 points at 500 rows or more, else the 95% binomial band) on 20 real series "
             "bundled with statsmodels that the forecasting bench does not use and on the 13 NAB dev streams (first "
             f"{NAB_VALUES} values). \"One rate\": the calibrator's running scale with one forgetting rate (0.02, "
             "`scale_rates=()`), as before the candidate rates. Width against River's jackknife around the same "
              "forecasts, matched to our coverage as in `bench/bench_intervals.py`."), "",
             ("| suite | calibrator | cases outside tolerance (below nominal) | mean deviation (× tolerance) "
              "| no wider than the jackknife: cases / series | width / jackknife's where it reaches our coverage: "
              "geometric mean, median |"),
             "|---|---|---:|---:|---:|---:|"]
    for (suite, ablate), rows in results.items():
        s = summary(rows)
        lines.append(f"| {suite} | {'one rate (0.02)' if ablate else '**candidate rates (default)**'} | "
                     f"{s['outside']} of {s['cases']} ({s['below']}) | {s['deviation']:+.2f} | "
                     f"{s['no_wider']} of {s['cases']} / {s['series_no_wider']} of {s['series']} | {s['geo']:.3f}, {s['median']:.3f} |")
    lines += ["", "Coverage per series at 0.8 / 0.9 / 0.95 (default, then one rate; * outside the tolerance):", "",
              "| series | rows | default | one rate |", "|---|---:|---|---|"]
    for suite in suites:
        default, single = results[suite, False], results[suite, True]
        for i in range(0, len(default), len(LEVELS)):
            cells = []
            for rows in (default, single):
                cells.append(" / ".join(f"{r['coverage']:.3f}{'' if r['within'] else '*'}"
                                        for r in rows[i:i + len(LEVELS)]))
            lines.append(f"| {default[i]['series']} | {default[i]['rows']} | {cells[0]} | {cells[1]} |")
    lines.append("<!-- intervals-more:end -->")
    write_section("intervals-more", "\n".join(lines))


if __name__ == "__main__":
    main()
