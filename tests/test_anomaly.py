"""Calibrated anomaly scores: range, comparability across copies of a stream, the obvious cases,
block == single, save/restore, and the compiled score against a NumPy reference of its p-value."""

from __future__ import annotations

import numpy as np
import pytest

from streamlstm.anomaly import DEFAULT_THRESHOLD, TAIL_LR, AnomalyDetector, AnomalyScorer


def stream(n: int = 4000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = 10 * np.sin(np.arange(n) / 30.0) + rng.normal(size=n)
    y[min(3000, n - 1)] += 25.0
    return y


def scores(y: np.ndarray, **kw: object) -> np.ndarray:
    det = AnomalyDetector(base="last", **kw)
    return np.array([det.score_one(v) for v in y])


def test_scores_in_unit_interval_and_spike_alerts() -> None:
    s = scores(stream())
    assert ((s >= 0) & (s <= 1)).all()
    assert s[3000] >= DEFAULT_THRESHOLD
    assert (s[400:3000] >= DEFAULT_THRESHOLD).sum() <= 1


def test_scale_and_shift_invariant_and_robust_to_quantisation() -> None:
    y = stream()
    base = scores(y)
    scaled = scores(1e6 * y + 3e7)
    np.testing.assert_allclose(scaled, base, atol=1e-6)
    quantised = scores(np.round(y * 2) / 2)   # half-unit steps
    alerts = lambda s: set(np.flatnonzero(s[400:] >= DEFAULT_THRESHOLD) + 400)
    assert 3000 in alerts(quantised) and len(alerts(quantised) ^ alerts(base)) <= 2


def test_flat_line_where_there_was_variation() -> None:
    y = stream()
    y[3500:3700] = y[3499]
    s = scores(y, use_flat=True)
    assert s[3500:3700].max() >= DEFAULT_THRESHOLD
    assert s[400:3000].max() < DEFAULT_THRESHOLD


def test_recurring_spikes_become_ordinary_and_a_larger_one_still_alerts() -> None:
    """The tail trackers take log steps (``TAIL_LR``): a spike 30 noise units out every 50
    events is learned as part of the stream within a few dozen of them (the last alert at the
    27th). With steps of ``lr`` scales (``tail_lr=0``) the trackers crawl towards it and the
    spikes kept alerting (up to the 72nd of 76)."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=4200)
    y[200:4000:50] += 30.0
    y[4100] += 300.0                           # ten times the usual spike: new
    new, old = AnomalyScorer(), AnomalyScorer(tail_lr=0.0)
    s = np.array([new.score(v, 0.0) for v in y])
    s_old = np.array([old.score(v, 0.0) for v in y])
    spikes = np.arange(200, 4000, 50)
    assert s[spikes[40:]].max() < DEFAULT_THRESHOLD <= s_old[spikes[40:]].max()
    assert s[4100] >= DEFAULT_THRESHOLD
    ordinary = np.setdiff1d(np.arange(300, 4200), np.append(spikes, 4100))
    assert s[ordinary].max() < DEFAULT_THRESHOLD


def test_a_scorer_saved_before_log_steps_continues_with_steps_of_lr() -> None:
    """A file written before ``tail_lr`` existed (no such setting in it) continues as that
    version scored: steps of ``lr`` scales."""
    from streamlstm import persistence

    y = stream(600)
    old = AnomalyScorer(tail_lr=0.0)
    for v in y[:300]:
        old.score(v, 0.0)
    meta, arrays = old.export()
    del meta["tail_lr"]
    twin = AnomalyScorer.from_export(meta, arrays)
    assert twin.calibrator.tail_lr == 0.0
    assert [old.score(v, 0.0) for v in y[300:]] == [twin.score(v, 0.0) for v in y[300:]]
    blob = persistence.dumps(AnomalyScorer.kind, *AnomalyScorer().export())
    assert AnomalyScorer.from_export(*persistence.loads(blob)[1:]).calibrator.tail_lr == TAIL_LR > 0.0


def test_block_equals_single_and_keys_are_independent() -> None:
    rng = np.random.default_rng(2)
    keys = rng.integers(0, 3, 900)
    y = rng.normal(size=900) * (1 + keys) + 100 * keys
    y_hat = y + rng.normal(size=900) * 0.1
    one, many = AnomalyScorer(n_keys=3), AnomalyScorer(n_keys=3)
    single = np.array([one.score(y[e], y_hat[e], int(keys[e])) for e in range(900)])
    assert np.array_equal(single, many.score_many(keys, y, y_hat))
    alone = AnomalyScorer()
    k1 = keys == 1
    assert np.array_equal(alone.score_many(np.zeros(k1.sum()), y[k1], y_hat[k1]), single[k1])
    with pytest.raises(ValueError, match="event 1"):
        many.score_many([0, 0], [1.0, np.nan], [1.0, 1.0])


@pytest.mark.parametrize("base", ["last", "lstm", "engine"])
def test_save_restore_bit_identical(base: str, tmp_path) -> None:
    y = stream(800)
    det = AnomalyDetector(base=base)
    for v in y[:500]:
        det.score_one(v)
    det.save(tmp_path / "det.slstm")
    twin = AnomalyDetector.load(tmp_path / "det.slstm")
    assert [det.score_one(v) for v in y[500:]] == [twin.score_one(v) for v in y[500:]]


def test_score_is_the_reference_p_value_mapping() -> None:
    # residual channel only, no hold-off: score = min(1, -log10(p) / decades) with p the
    # calibrator's p-value of the residual (checked against its NumPy reference elsewhere)
    from streamlstm.calibration import OnlineCalibrator

    rng = np.random.default_rng(4)
    r = rng.standard_t(4, 3000)
    scorer = AnomalyScorer(use_window=False, use_flat=False, holdoff=0)
    cal = OnlineCalibrator(levels=(), lr=scorer.calibrator.lr, decay=scorer.calibrator.decay,
                           clip_tail=scorer.calibrator.clip_tail, scale_rates=scorer.calibrator.scale_rates,
                           tail_lr=scorer.calibrator.tail_lr)
    for n, v in enumerate(r):
        p = cal.update(v)
        expected = min(1.0, -np.log10(max(p, 1e-300)) / 10.0) if n >= scorer.warmup else 0.0  # no zero residual
        assert scorer.score(v, 0.0) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="base must be 'lstm', 'last' or 'engine', got 'mean'"):
        AnomalyDetector(base="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="holdoff must be an integer >= 0"):
        AnomalyScorer(holdoff=-1)
    with pytest.raises(ValueError, match="tail_lr must be a number >= 0"):
        AnomalyScorer(tail_lr=-0.1)
    with pytest.raises(ValueError, match="not a finite number"):
        AnomalyDetector().score_one(float("nan"))


def test_score_and_bounds_equals_score_then_calibrator_interval() -> None:
    from streamlstm.calibration import OnlineCalibrator

    rng = np.random.default_rng(6)
    y = np.cumsum(rng.normal(size=600))
    fused = AnomalyScorer(levels=[0.8, 0.95])
    plain = AnomalyScorer(levels=[0.8, 0.95])
    cal = OnlineCalibrator(levels=[0.8, 0.95], lr=fused.calibrator.lr, decay=fused.calibrator.decay,
                           clip_tail=fused.calibrator.clip_tail, scale_rates=fused.calibrator.scale_rates,
                           tail_lr=fused.calibrator.tail_lr)
    for t in range(1, 600):
        s, lo, hi = fused.score_and_bounds(y[t], y[t - 1], y[t], level=1)
        assert s == plain.score(y[t], y[t - 1])
        cal.update(y[t] - y[t - 1])
        assert (lo, hi) == cal.bounds(y[t], level=1)


@pytest.mark.parametrize("settings", [{"holdoff": 5}, {"use_flat": True}, {"use_window": False, "holdoff": 0}])
def test_predict_scored_equals_predict_one_then_score_and_bounds(settings: dict) -> None:
    """The one compiled call (with the calibration kernels inlined into it) == ``predict_one``
    then ``score_and_bounds`` (itself pinned to ``score`` + the calibrator's ``bounds``
    above), with more than one level and key and each channel, on a model that learns
    between the events; the states end equal to the bit."""
    from streamlstm import OnlineLSTM

    rng = np.random.default_rng(11)
    y = np.round(np.cumsum(rng.normal(size=500)), 1)
    y[400] += 40.0                                   # a spike: the score must move
    y[300:330] = y[299]                              # a flat stretch, for the flat-line channel
    models = [OnlineLSTM(n_inputs=1, hidden=8, seed=3) for _ in range(2)]
    scorers = [AnomalyScorer(levels=[0.8, 0.95], n_keys=2, **settings) for _ in range(2)]
    y_hat = [[0.0, 0.0], [0.0, 0.0]]                 # per model, per key
    seen = []
    for t in range(1, y.shape[0]):
        key, level = t % 2, (t // 2) % 2
        x = np.array([y[t]])
        got = models[0].predict_scored(x, scorers[0], float(y[t]), y_hat[0][key], level=level, key=key)
        y_next = models[1].predict_one(x)
        want = (y_next, *scorers[1].score_and_bounds(float(y[t]), y_hat[1][key], y_next, level=level, key=key))
        assert got == want
        assert type(got) is tuple and all(type(v) is float for v in got)
        y_hat[0][key], y_hat[1][key] = got[0], want[0]
        seen.append(got[1])
        for m in models:
            m.learn_one([y[t - 1]], y[t])
    assert max(seen) > 0.0 and got[2] < got[0] < got[3]
    assert (scorers[0].state == scorers[1].state).all() and models[0].to_bytes() == models[1].to_bytes()


def test_predict_scored_refuses_as_the_two_calls_do_and_changes_nothing() -> None:
    from streamlstm import OnlineLSTM

    model, scorer = OnlineLSTM(n_inputs=2, hidden=4), AnomalyScorer(levels=[0.9])
    for v in (0.1, 0.4, 0.2):
        model.predict_scored([v, v], scorer, v, 0.2)
    before = scorer.state.copy()
    with pytest.raises(ValueError, match="input position 1 is nan"):
        model.predict_scored([0.1, float("nan")], scorer, 0.3, 0.2)
    with pytest.raises(ValueError, match="input has 1 values, expected 2"):
        model.predict_scored([0.1], scorer, 0.3, 0.2)
    with pytest.raises(ValueError, match="must both be finite"):
        model.predict_scored([0.1, 0.2], scorer, float("inf"), 0.2)
    with pytest.raises(ValueError, match="must both be finite"):
        model.predict_scored([0.1, 0.2], scorer, 0.3, float("nan"))
    with pytest.raises(IndexError, match="key row 1 outside"):
        model.predict_scored([0.1, 0.2], scorer, 0.3, 0.2, key=1)
    with pytest.raises(IndexError, match="level index 1 outside"):
        model.predict_scored([0.1, 0.2], scorer, 0.3, 0.2, level=1)
    with pytest.raises(IndexError, match="level index 0 outside"):
        model.predict_scored([0.1, 0.2], AnomalyScorer(), 0.3, 0.2)   # a scorer without levels
    with pytest.raises(ValueError, match="one regression output"):
        OnlineLSTM(n_inputs=2, n_outputs=2, hidden=4).predict_scored([0.1, 0.2], scorer, 0.3, 0.2)
    assert (scorer.state == before).all()
    # numbers that are not Python floats take the two calls themselves: the same results
    twin_model, twin = OnlineLSTM.from_bytes(model.to_bytes()), AnomalyScorer(levels=[0.9])
    twin.calibrator.state = scorer.state.copy()
    assert model.predict_scored([1.0, 2.0], scorer, np.float64(0.3), 1) == \
        twin_model.predict_scored(np.array([1.0, 2.0]), twin, 0.3, 1.0)


def test_full_score_matches_numpy_reference_float64() -> None:
    """Residual and recent-window channels, flat-line run and hold-off, written again from the
    equations on top of the calibrator's NumPy reference (tests/test_calibration.py)."""
    import math
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_calibration import Reference

    scorer = AnomalyScorer(use_flat=True, holdoff=20)
    cal = scorer.calibrator
    resid, window, flat = Reference(cal), Reference(cal), Reference(cal)
    flat.tail_lr = 0.0                         # a run's length takes steps of lr (events), never log steps
    surprise = long = run = peak = age = informed = 0.0
    prev_y = 0.0
    rng = np.random.default_rng(8)
    y = np.round(np.cumsum(rng.normal(size=1500)), 1)
    y[700:760] = y[699]                        # a flat stretch
    y[1000] += 30.0                            # a spike
    y_hat = np.concatenate([[y[0]], y[:-1]]) + rng.normal(size=1500) * 0.1
    for n in range(1500):
        r = y[n] - y_hat[n]
        p = resid.p_value(r)
        resid.update(r)
        surprise += (1 / scorer.window) * (-math.log(max(p, 1e-300)) - surprise)
        best, channels = p, 1.0
        if informed >= scorer.warmup:          # the warm-up's surprisals do not teach the window channel
            pw = window.p_value(surprise)
            window.update(surprise)
            best, channels = min(p, pw), 2.0
        if n > 0:
            change = abs(y[n] - prev_y)
            long += max(1 / scorer.memory, 1 / n) * (change - long)
            run = run + 1 if (change <= 1e-9 * long and long > 0) else 0.0
            flat.scale = 1.0
            pf = flat.p_value(run)
            flat.update(run)
            flat.scale = 1.0
            best, channels = min(best, pf), channels + 1.0
        prev_y = y[n]
        evidence = min(1.0, -math.log10(max(min(1.0, channels * best), 1e-300)) / scorer.decades)
        informed += r != 0.0
        if informed - (r != 0.0) < scorer.warmup:   # the warm-up: no evidence, hold-off untouched
            assert scorer.score(y[n], y_hat[n]) == 0.0, f"event {n}"
            continue
        age += 1
        if age > scorer.holdoff:
            peak = 0.0
        if evidence > peak:
            peak, age, expected = evidence, 0.0, evidence
        else:
            expected = 0.0
        assert scorer.score(y[n], y_hat[n]) == pytest.approx(expected, rel=1e-12, abs=1e-15), f"event {n}"


@pytest.mark.parametrize("base", ["lstm", "last", "engine"])
def test_no_false_alert_at_the_start_of_a_stream(base: str) -> None:
    """The scale of the first residuals is a guess: the first ``window`` values score 0, and
    the following ones of an ordinary stream stay below the threshold, at any scale, noise
    level or quantisation (before the warm-up, the 2nd or 3rd value scored 1 on most streams)."""
    rng = np.random.default_rng(4)
    for scale, step in ((1.0, 0.0), (1e-4, 0.0), (5e3, 0.0), (1.0, 0.5)):
        for seed in range(4):
            y = scale * (10.0 + np.sin(np.arange(300) / 7.0 + seed) + 0.3 * rng.normal(size=300))
            if step:
                y = np.round(y / step) * step
            det = AnomalyDetector(base=base)
            s = np.array([det.score_one(v) for v in y])
            assert (s[:det.scorer.warmup] == 0.0).all()
            assert s[:100].max() < DEFAULT_THRESHOLD, (scale, step, seed, np.flatnonzero(s >= DEFAULT_THRESHOLD)[:5])
    late = AnomalyScorer(warmup=0)   # without the warm-up: the second value, scaled by the first alone
    assert late.score(1.0, 1.001) == 0.0 and late.score(2.0, 1.0) == 1.0
    flat_start = AnomalyScorer()     # a stream that starts flat: its first change is not evidence
    assert [flat_start.score(1.0, 1.0) for _ in range(50)] + [flat_start.score(2.0, 1.0)] == [0.0] * 51


def test_warmup_is_kept_and_checked() -> None:
    scorer = AnomalyScorer(window=5)
    assert scorer.warmup == 5 and AnomalyScorer.from_export(*scorer.export()).warmup == 5
    assert AnomalyScorer(warmup=3).warmup == 3
    with pytest.raises(ValueError, match="warmup must be an integer >= 0"):
        AnomalyScorer(warmup=-1)
