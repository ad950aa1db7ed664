"""Per-event cost of the River estimators' calibrated intervals and anomaly scores, in one run.

Each pair is timed interleaved (A, B, A, B, ...) so that the machine's load hits both alike;
the minimum over the repeats (the run least disturbed by load) and the median are printed with
their ratios, and the load average with them.

    python bench/bench_river_intervals.py            # about a minute
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

from river import datasets

from streamlstm.adapters.river import LSTMAnomalyDetector, LSTMForecaster, LSTMRegressor

REPEATS = 15


def per_event(fn: Callable[[], int]) -> float:
    """Microseconds per event of ``fn`` (which returns how many events it ran)."""
    t0 = time.perf_counter()
    n = fn()
    return (time.perf_counter() - t0) / n * 1e6


def pair(name: str, a: tuple[str, Callable[[], int]], b: tuple[str, Callable[[], int]]) -> None:
    ta, tb = [], []
    for _ in range(REPEATS):
        ta.append(per_event(a[1]))
        tb.append(per_event(b[1]))
    ma, mb = min(ta), min(tb)
    da, db = statistics.median(ta), statistics.median(tb)
    print(f"{name:34s} {a[0]:>22s} {ma:7.2f} ({da:7.2f}) µs   {b[0]:>22s} {mb:7.2f} ({db:7.2f}) µs"
          f"   ratio {mb / ma:5.2f} ({db / da:5.2f})")


def main() -> None:
    print(f"load average before: {os.getloadavg()}, cores: {os.cpu_count()}; min (median) over {REPEATS} repeats")
    trump = list(datasets.TrumpApproval())
    flow = [{"flow": y} for _, y in datasets.WaterFlow()]
    values = [y for _, y in datasets.WaterFlow()]

    reg = LSTMRegressor(seed=42)
    for x, y in trump[:500]:
        reg.learn_one(x, y)
    probe = [x for x, _ in trump[500:700]]

    def predict_plain() -> int:
        for x in probe:
            reg.predict_one(x)
        return len(probe)

    def predict_interval() -> int:
        for x in probe:
            reg.predict_one(x, with_interval=True)
        return len(probe)

    pair("regressor predict_one", ("plain", predict_plain), ("with_interval=True", predict_interval))

    def learn(level: float | None) -> Callable[[], int]:
        def run() -> int:
            m = LSTMRegressor(seed=42, interval_level=level)
            for x, y in trump[:400]:
                m.learn_one(x, y)
            return 400
        return run

    pair("regressor learn_one (fresh, 400)", ("interval_level=None", learn(None)), ("interval_level=0.9", learn(0.9)))

    def fc_learn(level: float | None) -> Callable[[], int]:
        def run() -> int:
            m = LSTMForecaster(seed=0, interval_level=level)
            for y in values[:400]:
                m.learn_one(y)
            return 400
        return run

    pair("forecaster learn_one (fresh, 400)", ("interval_level=None", fc_learn(None)), ("interval_level=0.9", fc_learn(0.9)))
    fc = LSTMForecaster(seed=0)
    for y in values[:400]:
        fc.learn_one(y)

    def forecast(with_interval: bool) -> Callable[[], int]:
        def run() -> int:
            for _ in range(200):
                fc.forecast(1, with_interval=with_interval)
            return 200
        return run

    pair("forecaster forecast(1)", ("plain", forecast(False)), ("with_interval=True", forecast(True)))

    detectors = {}
    for scoring in ("robust", "calibrated"):
        d = LSTMAnomalyDetector(scoring=scoring)
        for e in flow[:600]:
            d.score_one(e)
            d.learn_one(e)
        detectors[scoring] = d
    events = flow[600:800]

    def score(scoring: str) -> Callable[[], int]:
        d = detectors[scoring]

        def run() -> int:
            for e in events:
                d.score_one(e)
            return len(events)
        return run

    pair("anomaly score_one", ("scoring='robust' (0.1)", score("robust")), ("'calibrated' (default)", score("calibrated")))

    def stream(scoring: str) -> Callable[[], int]:
        def run() -> int:
            d = LSTMAnomalyDetector(scoring=scoring)
            for e in flow[:400]:
                d.score_one(e)
                d.learn_one(e)
            return 400
        return run

    pair("anomaly score_one + learn_one", ("scoring='robust' (0.1)", stream("robust")), ("'calibrated' (default)", stream("calibrated")))
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
