"""A scorer for the Numenta Anomaly Benchmark, written from NAB's rules (shared/data/README.md).

* A detector gives every row a score in [0, 1], in order, from the past only; a row is a
  detection when its score is at or above the threshold, one threshold for the whole corpus,
  chosen to maximise the corpus total (here exactly: every distinct score is tried).
* The first 15% of each file (``floor(0.15 * rows)``) is a probation period: its rows are
  neither detections nor false positives (a window lying wholly inside it is a miss).
* In a window only the first detection counts: ``tpWeight * sigma(p)`` with
  ``sigma(p) = 2 / (1 + exp(5 p)) - 1`` and ``p = -(last row - row) / (window rows - 1)``
  (``p = -1`` at the window's first row: +0.987; 0 at its last: 0). A window without a
  detection costs ``fnWeight``.
* A detection outside every window costs ``fpWeight`` times ``sigma(p)`` with
  ``p = (row - last row of the preceding window) / (its rows - 1)`` (``sigma`` saturates to
  -1 beyond ``p = 3``), or the full ``fpWeight`` before the first window.
* Normalised score: ``100 * (raw - null) / (perfect - null)``, where ``null`` is the raw score
  of a detector that never fires and ``perfect`` that of one firing once at the first
  scorable row of each window.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROFILES: dict[str, dict[str, float]] = {
    "standard": {"tp": 1.0, "fp": 0.11, "fn": 1.0},
    "reward_low_FP_rate": {"tp": 1.0, "fp": 0.22, "fn": 1.0},
    "reward_low_FN_rate": {"tp": 1.0, "fp": 0.11, "fn": 2.0},
}
PROBATION = 0.15


def scaled_sigmoid(position: float | np.ndarray) -> np.ndarray:
    """NAB's reward curve of a relative position: +0.987 at -1, 0 at 0, -0.987 at 1, -1 beyond 3."""
    p = np.asarray(position, dtype=np.float64)
    out = 2.0 / (1.0 + np.exp(5.0 * np.clip(p, -3.0, 3.0))) - 1.0
    return np.where(p > 3.0, -1.0, np.where(p < -3.0, 1.0, out))


@dataclass
class Stream:
    """One labelled file: its row count and anomaly windows as inclusive row ranges."""

    name: str
    rows: int
    windows: list[tuple[int, int]]

    @property
    def probation(self) -> int:
        return math.floor(PROBATION * self.rows)


def windows_to_rows(timestamps: np.ndarray, windows: Sequence[Sequence[str]]) -> list[tuple[int, int]]:
    """Inclusive row ranges of timestamp windows ``[start, end]`` (rows whose time lies inside)."""
    t = np.asarray(timestamps, dtype="datetime64[ns]")
    out = []
    for start, end in windows:
        lo = int(np.searchsorted(t, np.datetime64(start), side="left"))
        hi = int(np.searchsorted(t, np.datetime64(end), side="right")) - 1
        if hi >= lo:
            out.append((lo, hi))
    return out


def load_corpus(root: str | Path) -> dict[str, tuple[np.ndarray, Stream]]:
    """``{relative path: (values, Stream)}`` for every file of ``root/windows.json``."""
    root = Path(root)
    windows = json.loads((root / "windows.json").read_text())
    corpus = {}
    for name in sorted(windows):
        stamps, values = [], []
        with open(root / name) as fh:
            next(fh)
            for line in fh:
                stamp, value = line.rstrip("\n").split(",")
                stamps.append(stamp)
                values.append(float(value))
        t = np.array(stamps, dtype="datetime64[ns]")
        corpus[name] = (np.array(values), Stream(name, len(values), windows_to_rows(t, windows[name])))
    return corpus


class _FileSweep:
    """One file's score as a function of the threshold, for many thresholds at once."""

    def __init__(self, scores: np.ndarray, stream: Stream, profile: Mapping[str, float]) -> None:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (stream.rows,):
            raise ValueError(f"{stream.name}: {scores.shape[0]} scores for {stream.rows} rows")
        start = stream.probation
        self.fn = profile["fn"]
        self.windows = []  # per window: running max of its scorable scores, reward of each row
        in_window = np.zeros(stream.rows, dtype=bool)
        for lo, hi in sorted(stream.windows):
            in_window[lo:hi + 1] = True
            rows = np.arange(max(lo, start), hi + 1)
            length = hi - lo + 1
            position = -(hi - rows) / (length - 1) if length > 1 else np.full(rows.shape, -2.0)
            reward = profile["tp"] * scaled_sigmoid(position)
            self.windows.append((np.maximum.accumulate(scores[rows]) if rows.size else rows.astype(float), reward))
        # false positives: cost of a detection at each scorable row outside every window
        rows = np.flatnonzero(~in_window)
        rows = rows[rows >= start]
        cost = np.full(rows.shape, -profile["fp"])
        for lo, hi in sorted(stream.windows):
            after = rows > hi
            length = hi - lo + 1
            position = (rows[after] - hi) / (length - 1) if length > 1 else np.full(int(after.sum()), 2.0)
            cost[after] = profile["fp"] * scaled_sigmoid(position)  # later windows overwrite: the closest preceding
        order = np.argsort(scores[rows], kind="stable")
        self.fp_scores = scores[rows][order]
        self.fp_tail = np.concatenate([np.cumsum(cost[order][::-1])[::-1], [0.0]])

    def totals(self, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Raw score, true positives, false negatives and false-positive rows per threshold."""
        k = np.searchsorted(self.fp_scores, thresholds, side="left")
        fp_score = self.fp_tail[k]
        fp_rows = self.fp_scores.shape[0] - k
        tp = np.zeros(thresholds.shape)
        tp_score = np.zeros(thresholds.shape)
        for running_max, reward in self.windows:
            j = np.searchsorted(running_max, thresholds, side="left")
            hit = j < running_max.shape[0]
            tp_score += np.where(hit, reward[np.minimum(j, max(reward.shape[0] - 1, 0))] if reward.size else 0.0, -self.fn)
            tp += hit
        return tp_score + fp_score, tp, len(self.windows) - tp, fp_rows


def score_corpus(scores: Mapping[str, np.ndarray], corpus: Mapping[str, Stream],
                 profile: str | Mapping[str, float] = "standard", threshold: float | None = None) -> dict[str, float]:
    """Normalised NAB score of a detector's ``scores`` (``{file: per-row scores}``).

    With ``threshold=None`` the threshold maximising the corpus total is chosen (every
    distinct score, and "never fire", is tried). Returns ``score`` (normalised), ``raw``,
    ``null``, ``perfect``, ``threshold``, ``tp``, ``fn`` (windows) and ``fp`` (rows).
    """
    weights = PROFILES[profile] if isinstance(profile, str) else profile
    names = sorted(scores)
    missing = [n for n in names if n not in corpus]
    if missing:
        raise KeyError(f"no labels for {missing}")
    if threshold is None:
        thresholds = np.unique(np.concatenate([np.asarray(scores[n], dtype=np.float64) for n in names]))
        thresholds = np.append(thresholds, np.inf)
    else:
        thresholds = np.array([float(threshold)])
    raw = np.zeros(thresholds.shape)
    tp = np.zeros(thresholds.shape)
    fn = np.zeros(thresholds.shape)
    fp = np.zeros(thresholds.shape)
    null = perfect = 0.0
    for n in names:
        stream = corpus[n]
        r, a, b, c = _FileSweep(scores[n], stream, weights).totals(thresholds)
        raw += r
        tp += a
        fn += b
        fp += c
        null += _FileSweep(np.zeros(stream.rows), stream, weights).totals(np.array([1.0]))[0][0]
        ideal = np.zeros(stream.rows)
        for lo, hi in stream.windows:
            if hi >= stream.probation:
                ideal[max(lo, stream.probation)] = 1.0
        perfect += _FileSweep(ideal, stream, weights).totals(np.array([1.0]))[0][0]
    best = int(np.argmax(raw))
    return {"score": 100.0 * (raw[best] - null) / (perfect - null), "raw": float(raw[best]), "null": null,
            "perfect": perfect, "threshold": float(thresholds[best]), "tp": float(tp[best]), "fn": float(fn[best]),
            "fp": float(fp[best])}
