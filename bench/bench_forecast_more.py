"""Forecasts on series outside the forecasting bench: the engine's defaults against the last
value and the online simple methods of ``bench/bench_forecast.py``, one step ahead and over
h = 1..12, with the ablation of the longer seasons (``max_season=48``, the default before).

    .venv/bin/python bench/bench_forecast_more.py      # writes the "forecast-more" section of RESULTS.md

Series: those of ``bench/bench_intervals_more.py`` (20 statsmodels series, the 13 NAB dev
streams' first 4000 values). Protocol of ``bench/bench_forecast.py``: prequential (forecast,
then learn the value), scored from the 10th value or a tenth of the series, whichever is later,
every method on the same rows. Peers: the last value; AR(k) refit every step with k chosen
online (``OnlineAR``, k <= 12); River's SNARIMAX(2,1,0). Issue 10's acceptance, applied here:
never more than 2% worse than the last value, better than the best online simple method,
within 5% of it. Nothing here chose a default; it measures them on data they were not chosen on.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_forecast as BF
import bench_intervals_more as M
from _results import write_section

NAB_VALUES = 4000
MULTI = 12              # the multi-step table's horizon


@dataclass
class Scores:
    """One series' one-step MAE by method."""

    series: str
    rows: int
    ours: float
    last: float
    ar: float
    snarimax: float
    short: float            # ours with max_season=48 (the default before), one step
    multi: float            # mean MAE over h = 1..MULTI: ours, ours with max_season=48, the last value
    multi_short: float
    multi_last: float

    @property
    def best_simple(self) -> float:
        finite = [v for v in (self.ar, self.snarimax) if math.isfinite(v)]
        return min(finite) if finite else math.inf


def mae(make, ys: np.ndarray, start: int) -> float:
    return BF.score_series(make, [float(v) for v in ys], start)["mae"]


def multi(make, ys: np.ndarray, start: int) -> float:
    return BF.score_series(make, [float(v) for v in ys], start, MULTI)["horizon_mae"]


def main() -> None:
    series = {**M.statsmodels_series(), **{k: v[:NAB_VALUES] for k, v in M.nab_series().items()}}
    rows: list[Scores] = []
    began = time.perf_counter()
    for name, ys in series.items():
        start = max(10, len(ys) // 10)
        r = Scores(name, len(ys), mae(BF.Ours, ys, start), mae(BF.LastValue, ys, start), mae(BF.OnlineAR, ys, start),
                   mae(lambda: BF.snarimax(None), ys, start), mae(lambda: BF.Ours(max_season=48), ys, start),
                   multi(lambda: BF.Ours(horizon=MULTI), ys, start),
                   multi(lambda: BF.Ours(horizon=MULTI, max_season=48), ys, start), multi(BF.LastValue, ys, start))
        rows.append(r)
        print(f"{name:45s} ours/last {r.ours / r.last:.3f} ours/AR {r.ours / r.ar:.3f} "
              f"ours/SNARIMAX {r.ours / r.snarimax:.3f} h=1..{MULTI} ours/last {r.multi / r.multi_last:.3f} "
              f"({time.perf_counter() - began:.0f} s)", flush=True)

    n = len(rows)
    better_last = sum(r.ours < r.last for r in rows)
    worse2 = [r.series for r in rows if r.ours > 1.02 * r.last]
    better_simple = sum(r.ours < r.best_simple for r in rows)
    within5 = sum(r.ours <= 1.05 * r.best_simple for r in rows)

    def geo(key: str, ours: str = "ours") -> float:
        ratios = [math.log(getattr(r, ours) / getattr(r, key)) for r in rows if math.isfinite(getattr(r, key))]
        return float(np.exp(np.mean(ratios)))

    multi_better = sum(r.multi < r.multi_last for r in rows)
    multi_worse2 = [r.series for r in rows if r.multi > 1.02 * r.multi_last]

    lines = ["<!-- forecast-more:start -->",
             "## Forecasts on series outside the bench (`bench/bench_forecast_more.py`)", "",
             (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, one run. `Forecaster()` (defaults) against the last "
              "value, AR(k) refit every step with k chosen online and River's SNARIMAX(2,1,0), prequential one-step "
              "MAE from the 10th value or a tenth of the series; the 20 statsmodels series of "
              f"`bench/bench_intervals_more.py` and the 13 NAB dev streams' first {NAB_VALUES} values."), "",
             (f"- better than the last value on {better_last} of {n} series; more than 2% worse on "
             f"{len(worse2)} ({', '.join(worse2) if worse2 else 'none'});"),
             f"- better than the best of AR(k) and SNARIMAX on {better_simple} of {n}, within 5% of it on {within5} of {n};",
             (f"- geometric mean of our MAE over the last value's {geo('last'):.3f}, over AR(k)'s {geo('ar'):.3f}, "
             f"over SNARIMAX's {geo('snarimax'):.3f};"),
             (f"- over h = 1..{MULTI} (mean MAE of the {MULTI} steps, every origin with its {MULTI} values known): "
              f"better than the last value on {multi_better} of {n}, more than 2% worse on {len(multi_worse2)} "
              f"({', '.join(multi_worse2) if multi_worse2 else 'none'}); geometric mean over the last value's "
              f"{geo('multi_last', 'multi'):.3f};"),
             (f"- ablation, seasons up to 48 steps only (`max_season=48`, the default before 288): one step "
              f"{geo('last', 'short'):.3f} of the last value's MAE (defaults {geo('last'):.3f}), h = 1..{MULTI} "
              f"{geo('multi_last', 'multi_short'):.3f} (defaults {geo('multi_last', 'multi'):.3f}): the defaults' "
              f"MAE is {geo('short'):.3f} and {geo('multi_short', 'multi'):.3f} of it."), "",
             (f"| series | rows | ours | last value | AR(k) online k | SNARIMAX | ours / last | ours / best simple | "
              f"ours, max_season=48 / last | h=1..{MULTI}: ours / last | h=1..{MULTI}: ours, max_season=48 / last |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.series} | {r.rows} | {r.ours:.4g} | {r.last:.4g} | {r.ar:.4g} | {r.snarimax:.4g} | "
                     f"{r.ours / r.last:.3f} | {r.ours / r.best_simple:.3f} | {r.short / r.last:.3f} | "
                     f"{r.multi / r.multi_last:.3f} | {r.multi_short / r.multi_last:.3f} |")
    lines.append("<!-- forecast-more:end -->")
    write_section("forecast-more", "\n".join(lines))


if __name__ == "__main__":
    main()
