"""Anomaly scores of River's WaterFlow series by LSTMAnomalyDetector, plotted over time.

WaterFlow (river.datasets.WaterFlow) is the hourly water flow through a pipeline branch,
in litres per second, from 2022-03-20 11:00 to 2022-05-16 22:00 (1268 rows; a few hours are
missing, e.g. 2022-04-24 02:00 to 2022-04-25 10:00). Its docstring names four
anomalous segments: three "low value moments" (water losses or maintenance) and a small peak
in the inflow after the first two (a pumping operation). The dataset carries no label column;
from the series the segments are (local time, UTC+1 then UTC+2):

* drop 1: rows  93-110, 2022-03-24 08:00 to 2022-03-25 01:00 (down to 24.3 l/s)
* drop 2: rows 210-224, 2022-03-29 07:00 to 21:00 (down to 24.3 l/s)
* peak:   rows 328-330, 2022-04-03 05:00 to 07:00 (109.7 l/s at 06:00, about 101 l/s around)
* drop 3: rows 872-887, 2022-04-27 15:00 to 2022-04-28 06:00 (down to 24.2 l/s)

(0-based rows of the dataset; the segments include the ramps down and up.)

The detector forecasts each hour's flow from the hours before it (an LSTM learning online) and
scores the error with the core's calibrated scorer: a score s in [0, 1] means a tail
probability of about 10**(-10 s), on this stream as on any other, and an incident is reported
once (its score is 0 afterwards unless it gets worse). The hours scoring at least
DEFAULT_THRESHOLD = 0.5 (a tail probability of 1e-5) are alerts; every hour is learned.

    python examples/anomaly_waterflow.py                      # plot in <temp dir>/streamlstm-examples/
    python examples/anomaly_waterflow.py --out plots/a.png    # under 10 seconds; says where the plot went

What it prints (seed 42): the three drops flagged (scores 1.0), the small peak not (0.13: a
tail probability of about 0.05, not rare enough), 3 hours flagged, none outside the segments
(the scorer learns a stream's first 10 non-zero residuals before it scores).
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
from river import datasets

from streamlstm.adapters.river import LSTMAnomalyDetector
from streamlstm.anomaly import DEFAULT_THRESHOLD

SEGMENTS = {"drop 1": (93, 110), "drop 2": (210, 224), "peak": (328, 330), "drop 3": (872, 887)}


def score_waterflow(seed: int = 42, threshold: float = DEFAULT_THRESHOLD):
    """(timestamps, flow, scores, flagged) over the whole series, scored before learning."""
    # every hour is learned: the calibrated score reports an incident once and must learn each
    # value to stay calibrated (see LSTMAnomalyDetector's docstring on River's filters)
    detector = LSTMAnomalyDetector(seed=seed)
    times, flow, scores, flagged = [], [], [], []
    for x, y in datasets.WaterFlow():
        event = {"flow": y}
        s = detector.score_one(event)
        flagged.append(s >= threshold)
        detector.learn_one(event)
        times.append(x["Time"])
        flow.append(y)
        scores.append(s)
    return times, np.array(flow), np.array(scores), np.array(flagged)


def segment_table(scores, flagged) -> list[tuple[str, float, bool]]:
    return [(name, float(scores[a:b + 1].max()), bool(flagged[a:b + 1].any())) for name, (a, b) in SEGMENTS.items()]


def plot(times, flow, scores, flagged, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    ax1.plot(times, flow, lw=0.8, color="tab:blue")
    ax1.set_ylabel("flow [l/s]")
    ax1.set_title("River WaterFlow and LSTMAnomalyDetector scores (scored before learning)")
    ax2.plot(times, scores, lw=0.8, color="tab:red")
    ax2.axhline(DEFAULT_THRESHOLD, lw=0.6, ls="--", color="gray")
    ax2.set_ylabel("anomaly score")
    flagged_t = [t for t, f in zip(times, flagged) if f]
    ax2.scatter(flagged_t, scores[flagged], s=8, color="black", label=f"alerts (score >= {DEFAULT_THRESHOLD})")
    for name, (a, b) in SEGMENTS.items():
        for ax in (ax1, ax2):
            ax.axvspan(times[a], times[b], color="orange", alpha=0.3, lw=0)
        ax1.annotate(name, (times[a], 30 if name != "peak" else 108), fontsize=8)
    ax2.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = os.path.join(tempfile.gettempdir(), "streamlstm-examples", "anomaly_waterflow.png")
    ap.add_argument("--out", default=default, help="PNG path; its folder is created (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    times, flow, scores, flagged = score_waterflow(args.seed)
    labels = np.zeros(len(scores), dtype=bool)
    for a, b in SEGMENTS.values():
        labels[a:b + 1] = True
    print(f"{'segment':8s} {'max score':>10s} {'flagged':>8s}")
    table = segment_table(scores, flagged)
    for name, top, hit in table:
        print(f"{name:8s} {top:10.2f} {hit!s:>8s}")
    false_alerts = [int(t) for t in np.flatnonzero(flagged & ~labels)]
    print(f"hours flagged: {int(flagged.sum())}, outside the segments: {false_alerts}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    plot(times, flow, scores, flagged, args.out)
    print(f"plot written to {os.path.abspath(args.out)}")
    return table, false_alerts


if __name__ == "__main__":
    main()
