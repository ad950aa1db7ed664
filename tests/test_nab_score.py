"""Our NAB scorer (bench/nab_score.py) on small hand-made cases; no data needed."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from nab_score import PROFILES, Stream, scaled_sigmoid, score_corpus


def sig(p: float) -> float:
    return 2.0 / (1.0 + math.exp(5.0 * p)) - 1.0


def test_scaled_sigmoid_anchor_points() -> None:
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert scaled_sigmoid(0.0) == pytest.approx(0.0)
    assert scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert scaled_sigmoid(3.5) == -1.0


# 100 rows: probation = 15 rows; one window, rows 40..49 (10 rows)
STREAM = {"f": Stream("f", 100, [(40, 49)])}


def raw(scores: np.ndarray, profile: str = "standard", threshold: float = 0.5) -> float:
    return score_corpus({"f": scores}, STREAM, profile, threshold=threshold)["raw"]


def test_first_detection_in_window_only_counts() -> None:
    s = np.zeros(100)
    s[[42, 45, 47]] = 1.0
    assert raw(s) == pytest.approx(sig(-(49 - 42) / 9))


def test_missed_window_costs_fn_weight_per_profile() -> None:
    assert raw(np.zeros(100)) == -1.0
    assert raw(np.zeros(100), "reward_low_FN_rate") == -2.0


def test_false_positives_before_and_after_the_window() -> None:
    s = np.zeros(100)
    s[20] = 1.0   # before every window: full cost
    s[52] = 1.0   # 3 rows after the window's end, relative 3/9
    expected = -1.0 - 0.11 + 0.11 * sig(3 / 9)
    assert raw(s) == pytest.approx(expected)
    assert raw(s, "reward_low_FP_rate") == pytest.approx(-1.0 - 0.22 + 0.22 * sig(3 / 9))


def test_probation_rows_count_for_nothing() -> None:
    s = np.zeros(100)
    s[:15] = 1.0
    assert raw(s) == -1.0
    s[15] = 1.0   # first scored row, before the window
    assert raw(s) == pytest.approx(-1.11)


def test_normalisation_null_zero_perfect_hundred_and_threshold_sweep() -> None:
    perfect = np.zeros(100)
    perfect[40] = 0.9
    out = score_corpus({"f": perfect}, STREAM)
    assert out["score"] == pytest.approx(100.0)
    assert out["threshold"] == pytest.approx(0.9)
    assert score_corpus({"f": np.zeros(100)}, STREAM)["score"] == pytest.approx(0.0)
    # a late detection and a high false alarm: the sweep must pick the threshold that keeps the
    # detection and drops the alarm (0.6), not fire everywhere or never
    s = np.full(100, 0.1)
    s[48] = 0.6
    s[30] = 0.5
    best = score_corpus({"f": s}, STREAM)
    assert best["threshold"] == pytest.approx(0.6)
    assert best["raw"] == pytest.approx(sig(-(1 / 9)))
    assert best["fp"] == 0 and best["tp"] == 1


def test_corpus_threshold_is_shared_between_files() -> None:
    streams = {"a": Stream("a", 100, [(40, 49)]), "b": Stream("b", 100, [(60, 69)])}
    a = np.zeros(100)
    a[41] = 0.8
    b = np.zeros(100)
    b[20] = 0.8    # a false alarm in b at the score that detects a's window
    out = score_corpus({"a": a, "b": b}, streams)
    assert out["threshold"] == pytest.approx(0.8)
    assert out["raw"] == pytest.approx(sig(-8 / 9) - 0.11 - 1.0)
    assert set(PROFILES) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
