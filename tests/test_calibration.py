"""Online calibrator: compiled kernels against a NumPy reference, coverage, keys, persistence."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest

from streamlstm.calibration import INTEGRATOR_LIMIT, OnlineCalibrator

LEVELS = (0.8, 0.9, 0.95)
ROOT = Path(__file__).resolve().parent.parent
DATA = next((p for p in (ROOT.parent / "shared" / "data", Path("/work/shared/data")) if p.is_dir()), None)
needs_data = pytest.mark.skipif(DATA is None, reason="shared data folder (../shared/data) absent: real-series coverage not checked")


# ---------------------------------------------------------------- NumPy reference
class Reference:
    """The calibrator written again from its equations (docs/calibration.md), one stream."""

    def __init__(self, cal: OnlineCalibrator) -> None:
        self.lr, self.decay, self.tail_lr = cal.lr, cal.decay, cal.tail_lr
        self.alpha = np.array([1.0 - v for v in cal.levels])
        self.grid = np.array(cal.tail_grid)
        J = len(self.alpha)
        unit = NormalDist(0.0, math.sqrt(math.pi / 2.0))   # a Gaussian residual's quantiles in mean-absolute units
        self.start = np.array([unit.inv_cdf(a / 2) for a in self.alpha] + [unit.inv_cdf(1 - a / 2) for a in self.alpha]
                              + [unit.inv_cdf(1 - g / 2) for g in self.grid])
        self.clip = cal.clip
        # the clip follows the |z| tail tracker at clip_tail when that is further out
        self.clip_tail = next((i for i, g in enumerate(self.grid) if g <= cal.clip_tail), len(self.grid) - 1) \
            if cal.clip_tail > 0 else None
        self.gain, self.saturation, self.limit = cal.integrator_gain, cal.integrator_saturation, INTEGRATOR_LIMIT
        self.band = cal.integrator_band
        self.n, self.scale = 0, 0.0
        # candidate running scales, one per rate, and their Laplace negative log-likelihoods
        self.rates = np.array(cal.scale_rates)
        self.scales = np.zeros(len(self.rates))
        self.evidence = np.zeros(len(self.rates))
        self.lo = np.zeros(J)
        self.hi = np.zeros(J)
        self.tail = np.zeros(len(self.grid))
        self.i_lo = np.zeros(J)   # accumulated coverage errors of the issued bounds
        self.i_hi = np.zeros(J)

    def integral(self, i: np.ndarray) -> np.ndarray:
        # only the coverage error beyond band binomial standard deviations counts
        q = self.alpha / 2
        chance = self.band * np.sqrt(self.n * q * (1 - q))
        i = np.sign(i) * np.maximum(np.abs(i) - chance, 0.0)
        x = i * math.log(self.n + 2) / (self.saturation * (self.n + 2))
        return self.gain * np.tan(np.clip(x, -self.limit, self.limit))

    def offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """The issued bounds: each level's own, nested (a level's interval holds the lower levels')."""
        def outwards(track: np.ndarray, term: np.ndarray) -> np.ndarray:
            # the distance from the forecast; a narrowing term takes at most half of it
            return np.where(term < 0, np.maximum(track + term, np.minimum(track, 0.5 * track)), track + term)

        lo, hi = -outwards(-self.lo, self.integral(self.i_lo)), outwards(self.hi, self.integral(self.i_hi))
        if lo.size == 0:
            return lo, hi
        lower = self.alpha[None, :] >= self.alpha[:, None]   # [j, k]: level k is at most level j
        return (np.where(lower, lo[None, :], np.inf).min(axis=1), np.where(lower, hi[None, :], -np.inf).max(axis=1))

    def p_value(self, r: float) -> float:
        if self.n == 0:
            return 1.0
        a = abs(r) / self.scale if self.scale > 0 else (0.0 if r == 0 else 1e300)
        t = np.maximum.accumulate(np.maximum(self.tail, 0.0))
        if a <= t[0]:
            return 1.0 if t[0] <= 0 else 1.0 - (1.0 - self.grid[0]) * a / t[0]
        for k in range(1, len(t)):
            if a <= t[k]:
                w = (a - t[k - 1]) / (t[k] - t[k - 1])
                return math.exp((1 - w) * math.log(self.grid[k - 1]) + w * math.log(self.grid[k]))
        first = max(len(t) - 3, 0)
        g_first, g_last = self.grid[first], self.grid[-1]
        spread = (t[-1] - t[first]) / math.log(g_first / g_last)
        if spread <= 0:
            spread = 1.0
        return max(g_last * math.exp(-(a - t[-1]) / spread), 1e-300)

    def interval(self, y_hat: float) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.offsets()
        return y_hat + lo * self.scale, y_hat + hi * self.scale

    def update(self, r: float, issued_misses: np.ndarray | None = None, delay: float = 1.0) -> None:
        """``issued_misses`` (lower then upper bounds' misses of each level): those of bounds
        issued ``delay`` steps before, instead of the current bounds' (steps divided by it)."""
        J = len(self.alpha)
        if self.n == 0:
            self.lo, self.hi, self.tail = self.start[:J].copy(), self.start[J:2 * J].copy(), self.start[2 * J:].copy()
        if self.scale > 0 or r == 0:
            z = r / self.scale if self.scale > 0 else 0.0
            eta = max(self.lr, 1 / math.sqrt(self.n + 1))
            lo, hi = self.offsets()
            miss_lo, miss_hi = (z < lo) - self.alpha / 2, (z > hi) - self.alpha / 2
            eta_levels = eta
            if issued_misses is not None:
                eta_levels = eta / delay
                miss_lo, miss_hi = issued_misses[:J] - self.alpha / 2, issued_misses[J:] - self.alpha / 2
            self.lo = self.lo - eta_levels * miss_lo
            self.hi = self.hi + eta_levels * miss_hi
            self.i_lo, self.i_hi = self.i_lo + miss_lo, self.i_hi + miss_hi
            step = (abs(z) > self.tail) - self.grid
            if self.tail_lr > 0:   # quantile tracking of log |z| (trackers floored at 1e-6 scales)
                self.tail = np.array([max(t, 1e-6) * math.exp(self.tail_lr * d) for t, d in zip(self.tail, step)])
            else:
                self.tail = self.tail + eta * step
        clip = self.clip
        if clip > 0 and self.clip_tail is not None and self.n > 0:
            clip = max(clip, self.tail[self.clip_tail])
        self.n += 1
        if not len(self.rates):
            a = abs(r) if self.scale <= 0 or clip == 0 else min(abs(r), clip * self.scale)
            self.scale += max(self.decay, 1 / self.n) * (a - self.scale)
            return
        # each candidate: the clipped residual's Laplace NLL under the scale it had, then learn it
        a = np.full(len(self.rates), abs(r)) if clip == 0 else np.where(self.scales > 0, np.minimum(abs(r), clip * self.scales), abs(r))
        known = self.scales > 0
        self.evidence[known] += np.log(self.scales[known]) + a[known] / self.scales[known]
        self.scales = self.scales + np.maximum(self.rates, 1 / self.n) * (a - self.scales)
        known = self.scales > 0
        if known.any():   # the posterior over the rates, in log scale
            w = np.exp(-(self.evidence[known] - self.evidence[known].min()))
            self.scale = float(np.exp(np.sum(w * np.log(self.scales[known])) / np.sum(w)))
        else:
            self.scale = 0.0


@pytest.mark.parametrize("band, rates, tail_lr", [(0.0, None, None), (1.5, None, None), (0.0, (), None),
                                                  (1.5, (0.05, 0.5), None), (0.0, None, 0.0), (0.0, (), 0.5)])
def test_kernels_match_numpy_reference_float64(band: float, rates: tuple | None, tail_lr: float | None) -> None:
    rng = np.random.default_rng(3)
    r = np.concatenate([[0.0, 0.0], rng.standard_t(3, 600) * 2.0, [40.0, -80.0], rng.normal(size=200),
                        rng.normal(size=200) * 20.0])   # a burst of volatility: the candidates disagree
    cal = OnlineCalibrator(levels=LEVELS, integrator_band=band, **({} if rates is None else {"scale_rates": rates}),
                           **({} if tail_lr is None else {"tail_lr": tail_lr}))
    ref = Reference(cal)
    for t, value in enumerate(r):
        lo, hi = cal.interval(1.5)
        rlo, rhi = ref.interval(1.5)
        np.testing.assert_allclose(lo, rlo, rtol=1e-12, atol=1e-12, err_msg=f"event {t}")
        np.testing.assert_allclose(hi, rhi, rtol=1e-12, atol=1e-12, err_msg=f"event {t}")
        probe = float(rng.normal() * 3)
        assert cal.p_value(probe) == pytest.approx(ref.p_value(probe), rel=1e-12, abs=1e-300), f"event {t}"
        p = cal.update(value)
        assert p == pytest.approx(ref.p_value(value), rel=1e-12, abs=1e-300), f"event {t}"
        ref.update(value)


def test_dead_band_only_moves_a_bound_beyond_chance() -> None:
    """Within ``band`` binomial standard deviations of its coverage error, the integral term
    is 0; beyond them it counts only the excess."""
    from streamlstm._kernels import calibration as K

    cal = OnlineCalibrator(levels=[0.9], integrator_band=2.0)
    n, q = 400.0, 0.05
    chance = 2.0 * math.sqrt(n * q * (1 - q))
    assert K.integral_term(0.99 * chance, n, cal.params, q) == 0.0
    assert K.integral_term(-0.99 * chance, n, cal.params, q) == 0.0
    free = OnlineCalibrator(levels=[0.9])
    assert K.integral_term(chance + 1.0, n, cal.params, q) == K.integral_term(1.0, n, free.params, q) > 0.0
    assert K.integral_term(-chance - 1.0, n, cal.params, q) == K.integral_term(-1.0, n, free.params, q) < 0.0


def test_scale_prior_shrinks_a_keys_scale_towards_the_pool() -> None:
    """Pooled, a key's bounds are the pool's trackers times its own running scale shrunk
    towards the pool's running scale of every key's residuals (the reference's scale rule on
    the key's residuals alone and on all of them), the pool weighing as ``scale_prior`` of
    the key's residuals."""
    from streamlstm._kernels import calibration as K

    rng = np.random.default_rng(7)
    prior = 10.0
    # clip alone (clip_tail 0): pooled, the clip follows the pool's tail tracker, which the
    # per-key reference scales below do not have
    cal = OnlineCalibrator(levels=LEVELS, n_keys=3, pooled=True, scale_prior=prior, clip_tail=0.0)
    plain = OnlineCalibrator(levels=LEVELS, n_keys=3, pooled=True, clip_tail=0.0)
    own = [Reference(cal) for _ in range(3)]
    pool = Reference(cal)
    for t in range(300):
        k = int(rng.integers(0, 3))
        r = float(rng.normal() * (1.0, 10.0, 100.0)[k])
        cal.update(r, k)
        plain.update(r, k)
        own[k].update(r)
        pool.update(r)
        if own[k].n < 2:
            continue
        expect = own[k].scale + prior / (own[k].n + prior) * (pool.scale - own[k].scale)
        lo, hi = cal.interval(0.0, k)
        trow = cal.state[-1, 0]
        for j in range(len(LEVELS)):
            assert hi[j] == pytest.approx(K.upper_offset(trow, cal.params, j) * expect, rel=1e-12), (t, j)
            assert lo[j] == pytest.approx(K.lower_offset(trow, cal.params, j) * expect, rel=1e-12), (t, j)
    # without the prior each key keeps its own scale: a key of scale 1 among keys of scale 10
    # and 100 gets far narrower bounds than with it
    assert np.ptp(plain.interval(0.0, 0)) < 0.5 * np.ptp(cal.interval(0.0, 0))


def test_issued_misses_kernel_matches_numpy_reference_float64() -> None:
    """The trackers fed the misses of bounds issued earlier (a panel's key, bounded a round
    before its value) with steps divided by the delay, against the reference."""
    from streamlstm._kernels import calibration as K

    rng = np.random.default_rng(4)
    cal = OnlineCalibrator(levels=LEVELS)
    ref = Reference(cal)
    misses = np.empty((1, 2 * len(LEVELS) + 1))
    for t in range(400):
        r = float(rng.standard_t(4) * 3.0)
        given = t % 3 != 0                     # every third residual: no issued bounds recorded
        if given:
            misses[0, :-1] = rng.random(2 * len(LEVELS)) < 0.1
            misses[0, -1] = float(rng.integers(1, 60))
        else:
            misses[0, 0] = np.nan
        K.observe_issued(cal.state, cal.params, 0, np.array([r]), misses)
        ref.update(r, misses[0, :-1].copy() if given else None, misses[0, -1])
        lo, hi = cal.interval(0.0)
        rlo, rhi = ref.interval(0.0)
        np.testing.assert_allclose(lo, rlo, rtol=1e-12, atol=1e-12, err_msg=f"event {t}")
        np.testing.assert_allclose(hi, rhi, rtol=1e-12, atol=1e-12, err_msg=f"event {t}")


def test_intervals_are_nested_and_old_states_load() -> None:
    """A higher level's interval holds a lower level's (even on a two-point residual law, where
    each level's own bounds may cross); a state saved before the integrator and the candidate
    scale rates loads (zero integrals, one rate as it was saved with) and continues as that
    version did."""
    cal = OnlineCalibrator(levels=[0.5, 0.9, 0.8])
    for r in [-1.0, 1.0] * 200:
        cal.update(r)
    lo, hi = cal.interval(10.0)
    assert lo[1] <= lo[2] <= lo[0] <= 10.0 <= hi[0] <= hi[2] <= hi[1]
    single = OnlineCalibrator(levels=[0.5, 0.9, 0.8], scale_rates=())   # the layout those versions wrote
    for r in [-1.0, 1.0] * 200:
        single.update(r)
    meta, arrays = single.export()
    J = len(cal.levels)
    old = {"calibrator_state": arrays["calibrator_state"][..., :-2 * J]}
    old_meta = {k: v for k, v in meta.items() if not k.startswith("integrator") and k != "scale_rates"}
    twin = OnlineCalibrator.from_export(old_meta, old)
    assert twin.scale_rates == () and twin.state.shape == single.state.shape
    assert (twin.state[..., -2 * J:] == 0).all()
    assert np.array_equal(twin.state[..., :-2 * J], single.state[..., :-2 * J])
    # before the rates only (integrals saved): bit-identical continuation
    twin = OnlineCalibrator.from_export({k: v for k, v in meta.items() if k != "scale_rates"}, arrays)
    for r in [0.3, -2.0, 5.0]:
        assert twin.update(r) == single.update(r)
    assert np.array_equal(twin.state, single.state)


def test_upgrade_gives_an_old_state_the_candidate_scales() -> None:
    """A state of the default settings saved without the candidate scale rates (what
    ``Forecaster`` files of earlier versions hold) is widened: each candidate starts at the
    row's scale, with no evidence; the intervals it gives are those of the old state."""
    old = OnlineCalibrator(levels=LEVELS, scale_rates=())
    new = OnlineCalibrator(levels=LEVELS)
    rng = np.random.default_rng(5)
    for r in rng.normal(size=300):
        old.update(float(r))
    R = len(new.scale_rates)
    widened = new.upgrade(old.state)
    assert widened.shape == new.state.shape
    np.testing.assert_array_equal(widened[..., :old.width], old.state)
    np.testing.assert_array_equal(widened[..., old.width:old.width + R], np.repeat(old.state[..., 1:2], R, axis=2))
    assert (widened[..., old.width + R:] == 0).all()
    new.state = widened
    np.testing.assert_array_equal(new.interval(2.0), old.interval(2.0))
    assert new.upgrade(np.zeros((1, 1, 5))).shape == (1, 1, 5)   # anything else: left for the caller's check


def test_candidate_scales_follow_a_burst_and_settle_on_steady_residuals() -> None:
    """The posterior over the candidate rates: steady residuals favour the slowest, whose scale
    varies least; after volatility comes in bursts the fastest rate weighs most."""
    rng = np.random.default_rng(11)
    steady = OnlineCalibrator(levels=[0.9])
    for r in rng.normal(size=3000):
        steady.update(float(r))
    bursts = OnlineCalibrator(levels=[0.9])
    for block in range(30):
        for r in rng.normal(size=100) * (10.0 if block % 2 else 1.0):
            bursts.update(float(r))
    R = len(steady.scale_rates)
    c = steady.width - 2 * R
    slow_first = steady.state[0, 0, c + R:]
    fast_first = bursts.state[0, 0, c + R:]
    assert np.argmin(slow_first) == int(np.argmin(steady.scale_rates))   # least NLL: the slowest rate
    assert np.argmin(fast_first) == int(np.argmax(bursts.scale_rates))   # bursts: the fastest


def test_scale_rates_are_checked() -> None:
    for bad in [(0.0, 0.1), (0.1, 0.1), (0.1,), (0.1, 2.0), "fast", (0.1, float("nan"))]:
        with pytest.raises(ValueError, match="scale"):
            OnlineCalibrator(scale_rates=bad)


@pytest.mark.parametrize("pooled", [False, True])
def test_block_update_equals_single_updates_exactly(pooled: bool) -> None:
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 4, 500)
    R = rng.normal(size=(500, 2)) * (1 + keys[:, None])
    R[rng.random((500, 2)) < 0.1] = np.nan  # targets not arrived yet
    one = OnlineCalibrator(horizon=2, n_keys=4, pooled=pooled)
    many = OnlineCalibrator(horizon=2, n_keys=4, pooled=pooled)
    singles = np.array([one.update(R[e], int(keys[e])) for e in range(500)])
    block = many.update_many(keys, R)
    assert np.array_equal(singles, block, equal_nan=True)
    assert np.array_equal(one.state, many.state)
    assert np.isnan(block[np.isnan(R)]).all()


def test_save_restore_is_bit_identical(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pooled = OnlineCalibrator(levels=[0.5], n_keys=3, pooled=True)
    pooled.update_many(rng.integers(0, 3, 100), rng.normal(size=100))
    pooled.add_keys(2)
    twin_pooled = OnlineCalibrator.from_bytes(pooled.to_bytes())
    assert twin_pooled.n_keys == 5 and np.array_equal(twin_pooled.state, pooled.state)
    cal = OnlineCalibrator(levels=[0.5, 0.9], horizon=3, n_keys=2)
    cal.update_many(rng.integers(0, 2, 300), rng.normal(size=(300, 3)))
    cal.save(tmp_path / "cal.slstm")
    twin = OnlineCalibrator.load(tmp_path / "cal.slstm")
    again = OnlineCalibrator.from_bytes(cal.to_bytes())
    assert np.array_equal(twin.state, cal.state) and np.array_equal(again.state, cal.state)
    keys, R = rng.integers(0, 2, 200), rng.normal(size=(200, 3))
    assert np.array_equal(cal.update_many(keys, R), twin.update_many(keys, R))
    assert np.array_equal(cal.interval(np.ones(3), 1)[1], twin.interval(np.ones(3), 1)[1])
    row = cal.key_state(1)
    other = OnlineCalibrator(levels=[0.5, 0.9], horizon=3)
    other.set_key_state(0, row)
    assert np.array_equal(other.interval(np.zeros(3))[0], cal.interval(np.zeros(3), 1)[0])


def test_bad_input_is_named_and_changes_nothing() -> None:
    with pytest.raises(ValueError, match=r"level 1\.5"):
        OnlineCalibrator(levels=[0.9, 1.5])
    cal = OnlineCalibrator(horizon=2)
    before = cal.state.copy()
    with pytest.raises(ValueError, match="expected 2 residual"):
        cal.update(1.0)
    with pytest.raises(ValueError, match="event 1, horizon step 0: residual is infinite"):
        cal.update_many([0, 0], [[1.0, 2.0], [np.inf, 0.0]])
    with pytest.raises(IndexError, match="key row 3"):
        cal.update_many([0, 3], [[1.0, 2.0], [1.0, 0.0]])
    assert np.array_equal(cal.state, before)


def test_outlier_gets_a_tiny_p_value_and_p_values_are_calibrated() -> None:
    rng = np.random.default_rng(5)
    cal = OnlineCalibrator(levels=[])
    p = np.array([cal.update(v) for v in rng.normal(size=20000)])[2000:]
    for g in (0.5, 0.1, 0.01):
        assert abs(np.mean(p <= g) - g) < 0.25 * g + 0.002, g
    assert cal.update(25.0) < 1e-8


# ---------------------------------------------------------------- coverage
def coverage(y: np.ndarray, keys: list | None = None) -> tuple[np.ndarray, int]:
    """Coverage after a 10% warm-up of one-step intervals around the last value (per key; the
    keys of a panel are short, so they share their trackers: ``pooled``)."""
    codes = {k: i for i, k in enumerate(dict.fromkeys(keys))} if keys else {None: 0}
    cal = OnlineCalibrator(levels=LEVELS, n_keys=len(codes), pooled=keys is not None)
    last: dict[int, float] = {}
    hits = []
    for t in range(y.shape[0]):
        k = codes[keys[t]] if keys else 0
        if k in last:
            lo, hi = cal.interval(last[k], k)
            hits.append((lo <= y[t]) & (y[t] <= hi))
            cal.update(y[t] - last[k], k)
        last[k] = float(y[t])
    scored = np.array(hits)[int(0.1 * y.shape[0]):]
    return scored.mean(axis=0), scored.shape[0]


def assert_coverage(name: str, y: np.ndarray, keys: list | None = None) -> None:
    """Coverage within ±1.5 points (500 rows or more) or the 95% binomial band."""
    cov, n = coverage(y, keys)
    nominal = np.array(LEVELS)
    if y.shape[0] >= 500:
        tolerance = np.full(3, 0.015)
    else:  # the 95% binomial band around nominal
        tolerance = 1.96 * np.sqrt(nominal * (1 - nominal) / n)
    print(f"{name}: coverage {cov} ({n} scored), deviation / tolerance {(cov - nominal) / tolerance}")
    assert (np.abs(cov - nominal) <= tolerance).all(), f"{name}: coverage {cov} vs {LEVELS} ± {tolerance} ({n} scored)"


def test_coverage_of_spikes_on_a_stream_of_zeros() -> None:
    """Errors mostly zero with spikes one time in ten (a load balancer's errors): the scale
    follows the spikes' tail instead of shrinking to nothing, so the intervals cover them
    (with ``clip`` alone, ``clip_tail=0``, the scale collapses and 0.95 covers about 0.88)."""
    rng = np.random.default_rng(11)
    r = np.where(rng.random(6000) < 0.1, rng.exponential(1.0, 6000), 0.0)
    for clip_tail, ok in ((0.01, True), (0.0, False)):
        cal = OnlineCalibrator(levels=LEVELS, clip_tail=clip_tail)
        hits = []
        for v in r:
            lo, hi = cal.interval(0.0)
            hits.append((lo <= v) & (v <= hi))
            cal.update(float(v))
        cov = np.array(hits[600:]).mean(axis=0)
        assert (np.abs(cov - np.array(LEVELS)) <= 0.015).all() == ok, (clip_tail, cov)


def test_coverage_synthetic_level_shift_and_variance_change() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    noise = np.where(np.arange(n) < 1500, 1.0, 3.0) * rng.normal(size=n)
    y = np.sin(np.arange(n) / 10.0) + np.where(np.arange(n) >= 1000, 20.0, 0.0) + noise
    assert_coverage("synthetic", y)


def read_series(name: str, target: str, key: str | None = None) -> tuple[np.ndarray, list | None]:
    with open(DATA / "series" / name) as fh:
        rows = list(csv.DictReader(fh))
    return np.array([float(r[target]) for r in rows]), ([r[key] for r in rows] if key else None)


@needs_data
@pytest.mark.parametrize("name, target, key", [
    ("elnino.csv", "sst", None),
    ("sunspots_yearly.csv", "sunactivity", None),
    ("macro.csv", "unemp", None),
    ("grunfeld.csv", "invest", "firm"),
    ("nile.csv", "volume", None),
    ("chickweights.csv", "weight", "chick"),
])
def test_coverage_public_series(name: str, target: str, key: str | None) -> None:
    assert_coverage(name, *read_series(name, target, key))


@pytest.mark.parametrize("name", ["WaterFlow", "TrumpApproval", "AirlinePassengers"])
def test_coverage_river_datasets(name: str) -> None:
    datasets = pytest.importorskip("river.datasets")
    y = np.array([float(v) for _, v in getattr(datasets, name)()])
    assert_coverage(name, y)
