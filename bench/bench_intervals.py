"""Coverage and width of one-step prediction intervals: our online calibrator against MAPIE's
ACI (Gibbs & Candès 2021) and River's ``conf.RegressionJackknife``, around the same point forecasts.

    .venv/bin/python bench/bench_intervals.py        # writes the "intervals" section of RESULTS.md

Series: ``shared/data/series/*.csv`` (``../shared/data`` from the repository root, else
/work/shared/data) and River's AirlinePassengers, WaterFlow and TrumpApproval. What a user gets
who asks for the forecast of ``y_t`` and its interval when ``y_t`` is due: the forecasting
engine ``Forecaster(interval_levels=...)`` learning prequentially (per key on the panels:
Grunfeld by firm, chick by chick), ``forecast_interval(key)`` called just before the key's
value is learned. On a single series that is what the engine issued right after the previous
value (nothing moved since); on a panel it is the forecast and interval of that moment, after
the other keys' values of the round (the pooled autoregressions and trackers as they are then),
and the engine scores the value against that interval, the one handed out. The peers get the
same point forecasts and residuals, in order, and compute each interval just before its
value. Everything is scored after a 10% warm-up. The panels' coverage is also given for the
intervals issued right after the key's previous value (what ``streamlstm run --key ... --ahead 1
--interval ...`` writes on that row, a round of keys before the value).

Width "at the same achieved coverage": each peer's nominal level is searched (bisection) for
the smallest one whose achieved coverage reaches ours; its mean width there is compared with ours.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import load_average, write_section

from streamlstm import Forecaster, OnlineLSTM
from streamlstm.calibration import OnlineCalibrator

ROOT = Path(__file__).resolve().parent.parent
LEVELS = (0.8, 0.9, 0.95)
SERIES = [("elnino.csv", "sst", None), ("sunspots_yearly.csv", "sunactivity", None), ("nile.csv", "volume", None),
          ("macro.csv", "unemp", None), ("grunfeld.csv", "invest", "firm"), ("chickweights.csv", "weight", "chick")]


def data_root() -> Path | None:
    for candidate in (ROOT.parent / "shared" / "data", Path("/work/shared/data")):
        if candidate.is_dir():
            return candidate
    return None


def load_series() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (values, key codes)}``."""
    out = {}
    root = data_root()
    if root is not None:
        for name, target, key in SERIES:
            with open(root / "series" / name) as fh:
                rows = list(csv.DictReader(fh))
            keys = [r[key] for r in rows] if key else [""] * len(rows)
            codes = {k: i for i, k in enumerate(dict.fromkeys(keys))}
            out[name.removesuffix(".csv")] = (np.array([float(r[target]) for r in rows]),
                                              np.array([codes[k] for k in keys]))
    from river import datasets

    for name in ("AirlinePassengers", "WaterFlow", "TrumpApproval"):
        y = np.array([float(v) for _, v in getattr(datasets, name)()])
        out[name] = (y, np.zeros(len(y), dtype=int))
    return out


def point_forecasts(y: np.ndarray, keys: np.ndarray, asked: str = "due", levels: tuple[float, ...] = LEVELS
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The engine's prequential one-step forecasts, our bounds ``(levels, events)`` given with
    them, and a mask of the events that have both (a key's first two values have not).
    ``asked="due"``: ``forecast_interval(key)`` asked just before the key's value is learned;
    ``"after"``: right after its previous value, and never again (the CLI's rows)."""
    model = Forecaster(interval_levels=levels)
    f = np.full(y.shape, np.nan)
    lo, hi = np.full((len(levels), y.shape[0]), np.nan), np.full((len(levels), y.shape[0]), np.nan)
    issued: dict[int, tuple] = {}
    for t, k in enumerate(keys.tolist()):
        if k in issued:
            if asked == "due":
                point, lower, upper = model.forecast_interval(k)
                issued[k] = (float(point[0]), lower[:, 0], upper[:, 0])
            f[t], lo[:, t], hi[:, t] = issued[k]
        model.learn_one(float(y[t]), key=k)
        if asked == "after" or k not in issued:
            point, lower, upper = model.forecast_interval(k)
            issued[k] = (float(point[0]), lower[:, 0], upper[:, 0])
    return f, lo, hi, ~np.isnan(f) & ~np.isnan(lo).any(axis=0)


def mapie_aci(y, f, keys, level, gamma=0.005):
    """MAPIE's ACI (``TimeSeriesRegressor(method="aci", cv="prefit")``) around the given forecasts:
    a prefit estimator returning its one feature (the forecast), calibrated on the warm-up
    (the first 10% of events), then per event: ``predict`` (infinite bounds allowed),
    ``adapt_conformal_inference`` (gamma 0.005, as in Gibbs & Candès) and ``update`` (the
    scores roll over a window of the warm-up's length). One model over all events (on the
    panels too: its keys are too short to calibrate alone)."""
    import warnings

    from mapie.regression import TimeSeriesRegressor

    X = f.reshape(-1, 1)
    start = warm_up(y)
    model = TimeSeriesRegressor(given_forecasts().fit(X[:start], y[:start]), method="aci", cv="prefit")
    lo, hi = np.full(y.shape, -np.inf), np.full(y.shape, np.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X[:start], y[:start])
        for t in range(start, y.shape[0]):
            _, bounds = model.predict(X[t:t + 1], confidence_level=level, allow_infinite_bounds=True)
            lo[t], hi[t] = bounds[0, 0, 0], bounds[0, 1, 0]
            # its levels are the keys predict stored (passing the level again can miss them by a float ulp)
            model.adapt_conformal_inference(X[t:t + 1], y[t:t + 1], gamma=gamma)
            model.update(X[t:t + 1], y[t:t + 1])
    return lo, hi


def given_forecasts():
    """A fitted scikit-learn "model" whose prediction is its one feature: the forecast made elsewhere."""
    from sklearn.base import BaseEstimator, RegressorMixin

    class Given(RegressorMixin, BaseEstimator):
        def fit(self, X, y):
            self.fitted_ = True
            return self

        def predict(self, X):
            return np.asarray(X)[:, 0]

    return Given()


def warm_up(y: np.ndarray) -> int:
    return int(0.1 * (y.shape[0] + 1))


def jackknife(y, f, keys, level):
    """River's conf.RegressionJackknife around the same forecasts (one over all events, on the
    panels too: per key it covers 0.23 on chick weights at 0.8)."""
    from river import base, conf

    class Given(base.Regressor):
        def learn_one(self, x, y):
            pass

        def predict_one(self, x):
            return x["f"]

    models: dict[int, object] = {}
    lo, hi = np.empty(y.shape), np.empty(y.shape)
    for t in range(y.shape[0]):
        m = models.setdefault(0, conf.RegressionJackknife(Given(), confidence_level=level))
        x = {"f": float(f[t])}
        iv = m.predict_one(x, with_interval=True)
        lo[t], hi[t] = iv.lower, iv.upper
        m.learn_one(x, float(y[t]))
    return lo, hi


def score(y, lo, hi, start):
    covered = (lo[start:] <= y[start:]) & (y[start:] <= hi[start:])
    width = hi[start:] - lo[start:]
    return float(covered.mean()), float(np.mean(width)) if np.isfinite(width).all() else math.inf


def matched_width(method: Callable, y, f, keys, start, target: float, steps: int = 10) -> tuple[float, float, float]:
    """Smallest nominal level (bisection) at which ``method`` covers at least ``target``: ``(level,
    coverage, mean width)``. A method that covers less than ``target`` even at level 0.999 cannot
    reach it (the jackknife's bounds stop at the largest residual seen): its width there is
    returned with that lower coverage, and :func:`no_wider` counts ours as no wider, as against
    ACI's infinite bounds."""
    lo_level, hi_level = 0.5, 0.999
    best = None
    cov, width = score(y, *method(y, f, keys, hi_level), start)
    if cov < target:
        return hi_level, cov, width
    best = (hi_level, cov, width)
    for _ in range(steps):
        mid = 0.5 * (lo_level + hi_level)
        cov, width = score(y, *method(y, f, keys, mid), start)
        if cov >= target:
            hi_level, best = mid, (mid, cov, width)
        else:
            lo_level = mid
    return best


def no_wider(width: float, matched: tuple[float, float, float], target: float) -> bool:
    """Ours (``width`` at coverage ``target``) no wider than a peer matched to that coverage;
    a peer that cannot reach it at any level has no interval that covers as much."""
    return width <= matched[2] or matched[1] < target


def key_coverage(y, lo, hi, keys, start) -> np.ndarray:
    """Coverage of each key's scored events (after the warm-up ``start``)."""
    covered = (lo[start:] <= y[start:]) & (y[start:] <= hi[start:])
    k = keys[start:]
    return np.array([covered[k == key].mean() for key in np.unique(k)])


def ours_at_level(y_all: np.ndarray, keys_all: np.ndarray, has: np.ndarray) -> Callable:
    """Ours as a method of the level alone (``Forecaster(interval_levels=(level,))``, a run of the
    engine each), on the events ``has`` selects: for matching our level to a peer's coverage."""
    def method(y, f, keys, level):
        _, lo, hi, _ = point_forecasts(y_all, keys_all, levels=(level,))
        return lo[0, has], hi[0, has]
    return method


def per_event_cost(repeats: int = 7, events: int = 20000) -> list[tuple[str, float]]:
    """µs per event (median over repeats) of a plain ``predict_one`` at H=32 and of the same
    prediction with an interval and an anomaly score (separate calls, ``score_and_bounds``
    after ``predict_one``, and ``predict_scored``: both in one compiled call), interleaved
    repeat by repeat."""
    import time

    from streamlstm.anomaly import AnomalyScorer

    model = OnlineLSTM(n_inputs=1, hidden=32, seed=0)
    for t in range(300):
        model.learn_one([math.sin(t / 10)], math.sin((t + 1) / 10))
    cal = OnlineCalibrator(levels=[0.9])
    scorer = AnomalyScorer()
    fused = AnomalyScorer(levels=[0.9])
    scored = AnomalyScorer(levels=[0.9])
    for t in range(300):
        cal.update(math.sin(t))
        scorer.score(math.sin(t), 0.0)
        fused.score(math.sin(t), 0.0)
        scored.score(math.sin(t), 0.0)
    x = np.array([0.3])
    prev = [0.3]
    last = [0.3]

    def plain() -> None:
        model.predict_one(x)

    def separate() -> None:
        y_hat = model.predict_one(x)
        cal.bounds(y_hat)
        scorer.score(0.31, y_hat)

    def one_call() -> None:
        y_hat = model.predict_one(x)
        fused.score_and_bounds(0.31, prev[0], y_hat)
        prev[0] = y_hat

    def predict_scored() -> None:
        last[0] = model.predict_scored(x, scored, 0.31, last[0])[0]

    cases = [("predict_one (plain)", plain), ("predict_one + cal.bounds + scorer.score", separate),
             ("predict_one + scorer.score_and_bounds (two compiled calls)", one_call),
             ("model.predict_scored(x, scorer, y, y_hat) (one compiled call)", predict_scored)]
    times: dict[str, list[float]] = {name: [] for name, _ in cases}
    for name, fn in cases:
        for _ in range(2000):
            fn()
    for _ in range(repeats):
        for name, fn in cases:
            start = time.perf_counter_ns()
            for _ in range(events):
                fn()
            times[name].append((time.perf_counter_ns() - start) / events / 1000)
    return [(name, float(np.median(times[name]))) for name, _ in cases]


def forecaster_cost(repeats: int = 5, events: int = 2000) -> list[tuple[str, float]]:
    """µs per event (median over interleaved repeats) of the forecasting engine's event
    (``learn_one`` then the forecast of the next value), plain and with intervals at three
    levels (``forecast_interval``) and an anomaly score of each value against its forecast:
    what ``streamlstm run --ahead 1 --interval ... --anomaly`` asks of the core per row."""
    import time

    from streamlstm import Forecaster
    from streamlstm.anomaly import AnomalyScorer

    y = [10.0 + math.sin(t / 4.0) + 0.3 * math.cos(7.0 * t) for t in range(500 + events)]
    plain, calibrated = Forecaster(), Forecaster(interval_levels=LEVELS)
    scorer = AnomalyScorer()
    last = [0.0]
    for v in y[:500]:
        plain.learn_one(v)
        calibrated.learn_one(v)
        last[0] = float(calibrated.forecast()[0])

    def plain_event(v: float) -> None:
        plain.learn_one(v)
        plain.forecast()

    def calibrated_event(v: float) -> None:
        scorer.score(v, last[0])
        calibrated.learn_one(v)
        point, _, _ = calibrated.forecast_interval()
        last[0] = float(point[0])

    cases = [("Forecaster: learn_one + forecast (plain)", plain_event, plain),
             ("Forecaster(interval_levels=(0.8, 0.9, 0.95)): + forecast_interval + AnomalyScorer.score",
              calibrated_event, calibrated)]
    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    snapshots = {name: model.to_bytes() for name, _, model in cases}
    for _ in range(repeats):
        for name, fn, _ in cases:
            start = time.perf_counter_ns()
            for v in y[500:]:
                fn(v)
            times[name].append((time.perf_counter_ns() - start) / events / 1000)
        # the same events every repeat: back to the state after the warm-up
        plain.__dict__.update(Forecaster.from_bytes(snapshots[cases[0][0]]).__dict__)
        calibrated.__dict__.update(Forecaster.from_bytes(snapshots[cases[1][0]]).__dict__)
    return [(name, float(np.median(times[name]))) for name, _, _ in cases]


def main() -> None:
    cost = per_event_cost()
    for name, us in cost:
        print(f"{name}: {us:.2f} us", flush=True)
    engine_cost = forecaster_cost()
    for name, us in engine_cost:
        print(f"{name}: {us:.2f} us", flush=True)
    series = load_series()
    rows = []
    wins = {"ACI": 0, "jackknife": 0}
    finite = {"ACI": 0, "jackknife": 0}  # cases where the peer's matched intervals were finite
    unreached = {"ACI": 0, "jackknife": 0}  # cases where the peer covered less than ours at any level
    start_of = warm_up
    compared = 0
    series_wins = {"ACI": 0, "jackknife": 0}   # series where ours is no wider at most of its levels
    reverse_wins, reverse_series = 0, 0   # ours matched to the jackknife's coverage at nominal
    per_key = []   # panels: (name, level, ours' coverage per key, the matched jackknife's per key)
    panels = []
    for name, (y, keys) in series.items():
        if keys.max() > 0:   # a panel: also the intervals as the CLI writes them (a round before)
            _, la, ha, hasa = point_forecasts(y, keys, asked="after")
            ya, la, ha = y[hasa], la[:, hasa], ha[:, hasa]
            sa = start_of(ya)
            panels.append((name, ya.shape[0] - sa, [score(ya, la[j], ha[j], sa) for j in range(len(LEVELS))]))
        here = {"ACI": 0, "jackknife": 0}
        here_reverse = 0
        y_all, keys_all = y, keys
        f, our_lo, our_hi, has = point_forecasts(y, keys)
        y, keys, f, our_lo, our_hi = y[has], keys[has], f[has], our_lo[:, has], our_hi[:, has]
        start = start_of(y)
        n = y.shape[0] - start
        ours_alone = ours_at_level(y_all, keys_all, has)
        for j, level in enumerate(LEVELS):
            cov, width = score(y, our_lo[j], our_hi[j], start)
            band = 1.96 * math.sqrt(level * (1 - level) / n)
            tol = 0.015 if y.shape[0] + 1 >= 500 else band
            ok = abs(cov - level) <= tol
            aci_nom = score(y, *mapie_aci(y, f, keys, level), start)
            jk_nom = score(y, *jackknife(y, f, keys, level), start)
            aci_m = matched_width(mapie_aci, y, f, keys, start, cov)
            jk_m = matched_width(jackknife, y, f, keys, start, cov)
            # the other way round: our level searched for the coverage the jackknife reaches at nominal
            ours_m = matched_width(ours_alone, y, f, keys, start, jk_nom[0], steps=8)
            reverse = ours_m[1] >= jk_nom[0] and ours_m[2] <= jk_nom[1]
            reverse_wins += reverse
            here_reverse += reverse
            compared += 1
            for peer, matched in (("ACI", aci_m), ("jackknife", jk_m)):
                wins[peer] += no_wider(width, matched, cov)
                here[peer] += no_wider(width, matched, cov)
                finite[peer] += math.isfinite(matched[2])
                unreached[peer] += matched[1] < cov
            rows.append((name, y.shape[0] + 1, level, cov, tol, ok, width, aci_nom, jk_nom, aci_m, jk_m, ours_m))
            if keys.max() > 0:   # how each method's coverage spreads over the keys at the same pooled coverage
                jk_lo, jk_hi = jackknife(y, f, keys, jk_m[0])
                per_key.append((name, level, key_coverage(y, our_lo[j], our_hi[j], keys, start),
                                key_coverage(y, jk_lo, jk_hi, keys, start)))
            print(f"{name} {level}: ours {cov:.3f} w {width:.3g} | ACI {aci_nom[0]:.3f} w {aci_nom[1]:.3g} "
                  f"matched {aci_m[2]:.3g} | JK {jk_nom[0]:.3f} w {jk_nom[1]:.3g} matched {jk_m[2]:.3g} ({jk_m[1]:.3f}) "
                  f"| ours at JK's coverage {ours_m[2]:.3g} ({ours_m[1]:.3f})", flush=True)
        for peer in here:
            series_wins[peer] += 2 * here[peer] > len(LEVELS)
        reverse_series += 2 * here_reverse > len(LEVELS)
    lines = ["<!-- intervals:start -->", "## Prediction intervals: coverage and width (`bench/bench_intervals.py`)", "",
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, one run. One-step intervals around the same "
             "prequential point forecasts, the default forecasting engine's (`Forecaster()`, per key on the "
             "panels), as a user gets them who asks when the value is due: ours are the engine's own "
             "(`Forecaster(interval_levels=...).forecast_interval(key)` just before the key's value; on a panel, "
             "after the other keys' values of the round), the peers' are computed just before each value around "
             "the same forecasts. Scored after a 10% warm-up. Tolerance: ±1.5 points for series of 500 rows or "
             "more, else the 95% binomial band around nominal.", "",
             "| series | rows | level | ours: coverage | tolerance | within | ours: width | ACI at nominal: "
             "coverage, width | jackknife at nominal: coverage, width | MAPIE ACI width at our coverage | jackknife "
             "width at our coverage | ours (one level) at the jackknife's coverage |",
             "|---|---:|---:|---:|---:|:---:|---:|---:|---:|---:|---:|---:|"]

    def matched_cell(m, target):
        return f"{m[2]:.4g} ({m[1]:.3f})" + ("" if m[1] >= target else " cannot reach")

    for name, rows_, level, cov, tol, ok, width, a, j, am, jm, om in rows:
        lines.append(f"| {name} | {rows_} | {level} | {cov:.3f} | ±{tol:.3f} | {'yes' if ok else '**no**'} | "
                     f"{width:.4g} | {a[0]:.3f}, {a[1]:.4g} | {j[0]:.3f}, {j[1]:.4g} | {matched_cell(am, cov)} | "
                     f"{matched_cell(jm, cov)} | {matched_cell(om, j[0])} |")
    n_series = len(series)
    lines += ["", f"Ours no wider than MAPIE's ACI at the same achieved coverage in {wins['ACI']} of {compared} "
              f"(series, level) cases ({compared - finite['ACI']} of them because ACI's bounds were infinite) and on "
              f"{series_wins['ACI']} of {n_series} series (no wider at a majority of its three levels); no wider "
              f"than River's jackknife in {wins['jackknife']} of {compared} cases ({unreached['jackknife']} of them because "
              f"the jackknife covered less than ours even at level 0.999: its bounds stop at the largest residual "
              f"seen) and on {series_wins['jackknife']} of {n_series} series. In brackets: the coverage the peer "
              f"reached at the matched nominal level. The other way round, our level alone "
              f"(`Forecaster(interval_levels=(level,))`, bisection) searched for the coverage the jackknife reaches "
              f"at nominal: ours no wider in {reverse_wins} of {compared} cases and on {reverse_series} of "
              f"{n_series} series. Both ways the jackknife's level is chosen with hindsight of the whole series, "
              f"which an online method cannot do.", "",
              "The panels' intervals as issued right after each key's previous value and never asked again "
              "(what `streamlstm run --key K --ahead 1 --interval ...` writes on that row, a round of keys before "
              "the value; the engine then scores the value against those):", "",
              "| panel | scored | " + " | ".join(f"coverage at {v} (band ±)" for v in LEVELS) + " |",
              "|---|---:|" + "---:|" * len(LEVELS)]
    for name, n_scored, scores in panels:
        cells = []
        for level, (cov, _) in zip(LEVELS, scores):
            band = 1.96 * math.sqrt(level * (1 - level) / n_scored)
            cells.append(f"{cov:.3f} (±{band:.3f}){'' if abs(cov - level) <= band else ' **out**'}")
        lines.append(f"| {name} | {n_scored} | " + " | ".join(cells) + " |")
    lines += ["", "On the panels the jackknife is one interval for all keys (per key it cannot calibrate: "
              "too few values each). At the same pooled coverage, how the coverage spreads over the keys "
              "(each key's coverage of its scored values; ours: each key's own scale, pooled trackers):", "",
              "| panel | level | keys | ours: sd of the keys' coverage, lowest, highest | jackknife (matched level): "
              "sd, lowest, highest |", "|---|---:|---:|---:|---:|"]
    for name, level, ours_k, jk_k in per_key:
        lines.append(f"| {name} | {level} | {ours_k.shape[0]} | {ours_k.std():.3f}, {ours_k.min():.2f}, "
                     f"{ours_k.max():.2f} | {jk_k.std():.3f}, {jk_k.min():.2f}, {jk_k.max():.2f} |")
    lines += ["",
              "Peers: MAPIE's ACI (`TimeSeriesRegressor(method=\"aci\", cv=\"prefit\")` around an estimator "
              "returning the given forecast, calibrated on the warm-up, then predict / "
              "adapt_conformal_inference (gamma 0.005) / update per event; its scores roll over a window "
              "of the warm-up's length; `inf` = it gave infinite bounds). River: "
              "`conf.RegressionJackknife(confidence_level=level)` (all history) around a regressor "
              "returning the given forecast. Both run over all events of a panel (per key they cannot "
              "calibrate: River's covers 0.23 on chick weights); ours is pooled there (own scale per key, "
              "shared trackers and integrators, learning from the misses of the bounds as issued).", "",
              "### Per-event cost (H=32, float64, µs per event, median of 7 interleaved repeats of 20 000 events)",
              "", f"Load average at start: {' '.join(load_average()[:3]) or 'n/a'} on a shared 2-core machine: "
              "absolute figures are inflated, the ratios are what to read.", "",
              "| path | µs/event | / plain |", "|---|---:|---:|"]
    lines += [f"| {name} | {us:.2f} | {us / cost[0][1]:.2f} |" for name, us in cost]
    lines += ["", "The forecasting engine's event (one key; `forecaster_cost`: learn_one, then the next "
              "forecast; with intervals at three levels and an anomaly score, what `streamlstm run --ahead 1 "
              "--interval 0.8 --interval 0.9 --interval 0.95 --anomaly` asks of the core per row), median of 5 "
              "interleaved repeats of 2 000 events:", "", "| path | µs/event | / plain |", "|---|---:|---:|"]
    lines += [f"| {name} | {us:.2f} | {us / engine_cost[0][1]:.2f} |" for name, us in engine_cost]
    lines += ["<!-- intervals:end -->"]
    write_section("intervals", "\n".join(lines))


if __name__ == "__main__":
    main()
