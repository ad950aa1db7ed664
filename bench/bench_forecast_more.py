"""One-step forecasts on series outside the forecasting bench: the engine's defaults against
the last value and the online simple methods of ``bench/bench_forecast.py``.

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


@dataclass
class Scores:
    """One series' one-step MAE by method."""

    series: str
    rows: int
    ours: float
    last: float
    ar: float
    snarimax: float

    @property
    def best_simple(self) -> float:
        finite = [v for v in (self.ar, self.snarimax) if math.isfinite(v)]
        return min(finite) if finite else math.inf


def mae(make, ys: np.ndarray, start: int) -> float:
    return BF.score_series(make, [float(v) for v in ys], start)["mae"]


def main() -> None:
    series = {**M.statsmodels_series(), **{k: v[:NAB_VALUES] for k, v in M.nab_series().items()}}
    rows: list[Scores] = []
    began = time.perf_counter()
    for name, ys in series.items():
        start = max(10, len(ys) // 10)
        r = Scores(name, len(ys), mae(BF.Ours, ys, start), mae(BF.LastValue, ys, start), mae(BF.OnlineAR, ys, start),
                   mae(lambda: BF.snarimax(None), ys, start))
        rows.append(r)
        print(f"{name:45s} ours/last {r.ours / r.last:.3f} ours/AR {r.ours / r.ar:.3f} "
              f"ours/SNARIMAX {r.ours / r.snarimax:.3f}  ({time.perf_counter() - began:.0f} s)", flush=True)

    n = len(rows)
    better_last = sum(r.ours < r.last for r in rows)
    worse2 = [r.series for r in rows if r.ours > 1.02 * r.last]
    better_simple = sum(r.ours < r.best_simple for r in rows)
    within5 = sum(r.ours <= 1.05 * r.best_simple for r in rows)

    def geo(key: str) -> float:
        ratios = [math.log(r.ours / getattr(r, key)) for r in rows if math.isfinite(getattr(r, key))]
        return float(np.exp(np.mean(ratios)))

    lines = ["<!-- forecast-more:start -->",
             "## One-step forecasts on series outside the bench (`bench/bench_forecast_more.py`)", "",
             (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, one run. `Forecaster()` (defaults) against the last "
              "value, AR(k) refit every step with k chosen online and River's SNARIMAX(2,1,0), prequential one-step "
              "MAE from the 10th value or a tenth of the series; the 20 statsmodels series of "
              f"`bench/bench_intervals_more.py` and the 13 NAB dev streams' first {NAB_VALUES} values."), "",
             (f"- better than the last value on {better_last} of {n} series; more than 2% worse on "
             f"{len(worse2)} ({', '.join(worse2) if worse2 else 'none'});"),
             f"- better than the best of AR(k) and SNARIMAX on {better_simple} of {n}, within 5% of it on {within5} of {n};",
             (f"- geometric mean of our MAE over the last value's {geo('last'):.3f}, over AR(k)'s {geo('ar'):.3f}, "
             f"over SNARIMAX's {geo('snarimax'):.3f}."), "",
             "| series | rows | ours | last value | AR(k) online k | SNARIMAX | ours / last | ours / best simple |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.series} | {r.rows} | {r.ours:.4g} | {r.last:.4g} | {r.ar:.4g} | {r.snarimax:.4g} | "
                     f"{r.ours / r.last:.3f} | {r.ours / r.best_simple:.3f} |")
    lines.append("<!-- forecast-more:end -->")
    write_section("forecast-more", "\n".join(lines))


if __name__ == "__main__":
    main()
