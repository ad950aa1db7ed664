"""Online calibration of prequential residuals: prediction intervals and p-values, per key.

The calibrator never sees the model: it is fed the residuals ``y - y_hat`` of forecasts once
their targets arrive, and turns the next forecast into intervals at any requested levels,
for each horizon step, and the residual of a new value into a calibrated tail probability.
Why it is built this way and what it guarantees: ``docs/calibration.md``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from itertools import pairwise
from statistics import NormalDist
from typing import Any

import numpy as np

from ._kernels import calibration as K
from .persistence import dumps, loads, read_file, write_atomic

#: tail probabilities at which the quantiles of ``|residual|`` are tracked for p-values
DEFAULT_TAIL_GRID = (0.5, 0.2, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002, 0.001)
#: a residual counts at most this many running scales in the running scale
CLIP = 4.0
#: a residual counts at most ``max(CLIP, the tracked |z| quantile at this tail probability)``
#: scales in the running scale (``_kernels/calibration.clip_limit``: why)
CLIP_TAIL = 0.01
#: gain of the integral term (in units of the running scale) and its saturation constant
INTEGRATOR_GAIN = 3.0
INTEGRATOR_SATURATION = 0.2
#: the integral term's tangent argument is clamped to this (radians): finite bounds, at most
#: ``gain * tan(1) = 1.56 gain`` scales
INTEGRATOR_LIMIT = 1.0
#: dead band of the integral term, in binomial standard deviations of the coverage error a
#: bound of exact coverage accumulates by chance; 0 by default (``docs/calibration.md``: what
#: 1.5 gains in width and costs in coverage on panels)
INTEGRATOR_BAND = 0.0
#: with pooled trackers, a key's scale is shrunk towards the pool's as if the pool's were
#: this many of the key's own residuals; 0 by default (its ablation in ``docs/calibration.md``)
SCALE_PRIOR = 0.0
#: the running scale's candidate forgetting rates (memories of about 100, 33 and 10
#: residuals), weighed by the likelihood of the residuals under each (``docs/calibration.md``:
#: what it is worth on 44 series); ``()``: one rate, ``decay``
SCALE_RATES = (0.01, 0.03, 0.1)
#: step of the tail trackers (the p-values' quantiles of ``|z|``) in log units; 0: steps of
#: ``lr`` scales. The intervals' calibrator keeps 0: its scale's clip follows the 1% tracker
#: (``CLIP_TAIL``), and with log steps that clip rose after every burst (WaterFlow's
#: intervals 31-42% wider at about the same coverage). The anomaly scorer, which clips at ``clip``
#: alone, takes log steps (``anomaly.TAIL_LR``)
TAIL_LR = 0.0


def _clip_tail(grid: tuple[float, ...], clip_tail: float) -> int:
    """Index of the tail tracker the scale's clipping follows: the first at a tail probability
    of ``clip_tail`` or less (else the last); -1 (``clip_tail`` 0) for none."""
    if clip_tail <= 0.0:
        return -1
    return next((i for i, g in enumerate(grid) if g <= clip_tail), len(grid) - 1)


def _check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(v) for v in levels)
    for v in out:
        if not 0.0 < v < 1.0:
            raise ValueError(f"interval level {v!r} must lie strictly between 0 and 1 (e.g. 0.9)")
    return out


class OnlineCalibrator:
    """Conformal quantile tracking of residuals: intervals at ``levels`` and p-values, per key.

    Parameters
    ----------
    levels
        Coverage levels of the intervals, each in (0, 1); may be empty when only p-values
        are wanted.
    horizon
        Forecast steps calibrated separately (step ``s`` gets the residuals of ``s+1``-step
        forecasts).
    lr
        Step size of the quantile trackers in units of the running mean absolute residual.
        Larger adapts faster after a shift and tightens the finite-sample coverage bound;
        smaller gives steadier widths.
    decay
        Rate of the running mean absolute residual (the scale intervals are measured in)
        when ``scale_rates`` is empty.
    scale_rates
        Candidate rates of that running mean: a mean is kept at each rate, and the scale is
        their geometric mean weighted by the posterior of each rate (the likelihood of the
        residuals seen, each under a Laplace law of the scale its candidate had then). Bursts of
        volatility favour a fast rate, steady residuals a slow one. ``()``: ``decay`` alone.
    clip
        A residual counts at most ``clip`` scales in that running mean (0: no clipping), so a
        single spike does not widen the next ``1/decay`` intervals.
    clip_tail
        ... or at most the tracked ``|z|`` quantile at this tail probability, when that is
        further out (0: ``clip`` alone). Spikes a few times in a hundred then set the scale
        instead of being clipped away: with ``clip`` alone, a stream whose errors are mostly
        (near) zero saw its scale shrink to nothing and its intervals miss every spike
        (a load balancer's spikes: 0.86 covered at 0.95; 0.94 with it).
    integrator_gain, integrator_saturation
        The error integrator of conformal PID control: each bound is its tracker plus
        ``gain * tan(I log(n+2) / (saturation (n+2)))`` scales, ``I`` the accumulated coverage
        error ``sum(miss - alpha/2)`` of that bound over its ``n`` scores (the tangent's
        argument clamped to ``INTEGRATOR_LIMIT``). It corrects a lasting coverage error
        faster than the tracker alone; ``integrator_gain=0`` turns it off.
    integrator_band
        Dead band of the integral term: only the part of ``I`` beyond
        ``band * sqrt(n q (1 - q))`` (``q = alpha/2``, the bound's target miss rate) moves the
        bound, ``band`` binomial standard deviations of the error that a bound of exact
        coverage accumulates by chance. Without it (0) every chance run of misses widens the
        intervals, by up to 4.7 scales on short series.
    scale_prior
        With ``pooled``: a key's scale is its running scale shrunk towards the pool's running
        scale of all keys' residuals, the pool weighing as ``scale_prior`` residuals of the
        key's own (a key's first residuals say little of its scale). No effect unpooled.
    tail_grid
        Decreasing tail probabilities at which ``|residual|`` quantiles are tracked; p-values
        interpolate between them and extrapolate an exponential tail below the last.
    tail_lr
        Step of those tail trackers in log units: each tracks the quantile of ``log |z|``,
        so an exceedance lifts it by ``exp(tail_lr (1 - g))`` and a value within lowers it by
        ``exp(-tail_lr g)``. The steps grow with the tail: a stream whose ordinary errors
        include spikes 30 scales out learns that tail within a few dozen spikes (steps of
        ``lr`` scales took hundreds, and every spike meanwhile had a p-value near 0). ``0``
        (default): steps of ``lr`` scales; the anomaly scorer uses ``anomaly.TAIL_LR`` (0.05).
    n_keys
        Streams calibrated side by side (state rows); grows with :meth:`add_keys`.
    pooled
        Keys keep their own count and scale but share one set of quantile trackers (an
        extra last state row), learned from the studentised residuals of all keys: for
        fleets of short-lived keys, each too short to calibrate alone. Coverage is then
        guaranteed over the events of all keys together.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> cal = OnlineCalibrator(levels=[0.9])
    >>> covered = []
    >>> for t in range(3000):
    ...     y_hat = 0.0                        # any point forecast
    ...     lo, hi = cal.interval(y_hat)       # before the value arrives
    ...     y = rng.normal()
    ...     covered.append(lo[0] <= y <= hi[0])
    ...     p = cal.update(y - y_hat)          # p-value of this residual, then learn it
    >>> bool(abs(np.mean(covered[300:]) - 0.9) < 0.015)
    True
    """

    kind = "OnlineCalibrator"

    def __init__(self, levels: Sequence[float] = (0.8, 0.9, 0.95), horizon: int = 1, lr: float = 0.3,
                 decay: float = 0.02, clip: float = CLIP, tail_grid: Sequence[float] = DEFAULT_TAIL_GRID,
                 n_keys: int = 1, pooled: bool = False, integrator_gain: float = INTEGRATOR_GAIN,
                 integrator_saturation: float = INTEGRATOR_SATURATION, integrator_band: float = INTEGRATOR_BAND,
                 scale_prior: float = SCALE_PRIOR, clip_tail: float = CLIP_TAIL,
                 scale_rates: Sequence[float] = SCALE_RATES, tail_lr: float = TAIL_LR) -> None:
        self.levels = _check_levels(levels)
        if len(self.levels) > 31:   # the kernels keep one round's misses as bits of an int64
            raise ValueError(f"at most 31 interval levels, got {len(self.levels)}")
        for name, value, low in (("horizon", horizon, 1), ("n_keys", n_keys, 1)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        if not (np.isfinite(clip) and clip >= 0.0):
            raise ValueError(f"clip must be a number >= 0 (0: no clipping), got {clip!r}")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must lie in (0, 1], got {decay!r}")
        if not (np.isfinite(integrator_gain) and integrator_gain >= 0.0):
            raise ValueError(f"integrator_gain must be a number >= 0 (0: no integrator), got {integrator_gain!r}")
        if not (np.isfinite(integrator_saturation) and integrator_saturation > 0.0):
            raise ValueError(f"integrator_saturation must be a positive number, got {integrator_saturation!r}")
        for setting, amount in (("integrator_band", integrator_band), ("scale_prior", scale_prior)):
            if not (np.isfinite(amount) and amount >= 0.0):
                raise ValueError(f"{setting} must be a number >= 0, got {amount!r}")
        if not (np.isfinite(tail_lr) and tail_lr >= 0.0):
            raise ValueError(f"tail_lr must be a number >= 0 (0: steps of lr), got {tail_lr!r}")
        if not (np.isfinite(clip_tail) and 0.0 <= clip_tail < 1.0):
            raise ValueError(f"clip_tail must be a tail probability in [0, 1) (0: clip alone), got {clip_tail!r}")
        try:
            rates = tuple(float(v) for v in scale_rates)
        except (TypeError, ValueError):
            raise ValueError(f"scale_rates must be a sequence of rates in (0, 1], got {scale_rates!r}") from None
        for v in rates:
            if not 0.0 < v <= 1.0:
                raise ValueError(f"scale rate {v!r} must lie in (0, 1] (scale_rates={list(rates)})")
        if len(set(rates)) != len(rates) or len(rates) == 1:
            raise ValueError(f"scale_rates must hold distinct rates, none or at least two (one: use decay), got {list(rates)}")
        grid = tuple(float(g) for g in tail_grid)
        if len(grid) < 2 or any(not 0.0 < g < 1.0 for g in grid) or any(b >= a for a, b in pairwise(grid)):
            raise ValueError(f"tail_grid must hold at least 2 strictly decreasing probabilities in (0, 1), got {tail_grid!r}")
        self.horizon = int(horizon)
        self.lr = float(lr)
        self.decay = float(decay)
        self.clip = float(clip)
        self.pooled = bool(pooled)
        self.integrator_gain = float(integrator_gain)
        self.integrator_saturation = float(integrator_saturation)
        self.integrator_band = float(integrator_band)
        self.scale_prior = float(scale_prior)
        self.clip_tail = float(clip_tail)
        self.scale_rates = rates
        self.tail_lr = float(tail_lr)
        self.tail_grid = grid
        J, G, n_rates = len(self.levels), len(grid), len(rates)
        # a new row starts from a Gaussian residual's quantiles, in mean-absolute units
        unit = NormalDist(0.0, math.sqrt(math.pi / 2.0))
        start = [unit.inv_cdf((1.0 - v) / 2.0) for v in self.levels] + [unit.inv_cdf((1.0 + v) / 2.0) for v in self.levels]
        start += [unit.inv_cdf(1.0 - g / 2.0) for g in grid]
        self.params = np.array([self.lr, self.decay, J, G, self.clip, float(self.pooled), self.integrator_gain,
                                self.integrator_saturation, INTEGRATOR_LIMIT, self.integrator_band, self.scale_prior,
                                _clip_tail(grid, self.clip_tail), n_rates, self.tail_lr,
                                *(1.0 - v for v in self.levels), *grid,
                                *start, *rates], dtype=np.float64)
        self.width = K.row_width(J, G, n_rates)
        self.state = np.zeros((int(n_keys) + self.pooled, self.horizon, self.width))
        self._p = np.empty(self.horizon)
        self._lo = np.empty((self.horizon, J))
        self._hi = np.empty((self.horizon, J))

    # ------------------------------------------------------------------ keys
    @property
    def n_keys(self) -> int:
        """Rows of per-key state (the pool row of ``pooled`` not counted)."""
        return int(self.state.shape[0]) - self.pooled

    def add_keys(self, k: int = 1) -> None:
        """Append ``k`` fresh key rows (a new key's first residual has p-value 1)."""
        fresh = np.zeros((k, self.horizon, self.width))
        at = self.n_keys
        self.state = np.concatenate([self.state[:at], fresh, self.state[at:]])

    def key_state(self, key: int) -> np.ndarray:
        """A copy of one key's state (``horizon x width`` float64), for a per-key store."""
        return self.state[self._key(key)].copy()

    def set_key_state(self, key: int, values: np.ndarray) -> None:
        """Put back a state taken by :meth:`key_state` (same settings)."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (self.horizon, self.width):
            raise ValueError(f"a key state has shape {(self.horizon, self.width)}, got {values.shape}")
        self.state[self._key(key)] = values

    def _key(self, key: int) -> int:
        if not 0 <= key < self.n_keys:
            raise IndexError(f"key row {key} outside [0, {self.n_keys}): add_keys first")
        return int(key)

    def n_seen(self, key: int = 0, step: int = 0) -> int:
        """Residuals folded in so far for ``key`` at horizon ``step``."""
        return int(self.state[self._key(key), step, K.F_N])

    # ------------------------------------------------------------------ per event
    def _residuals(self, residual: Any) -> np.ndarray:
        r = np.asarray(residual, dtype=np.float64).reshape(-1)
        if r.shape[0] != self.horizon:
            raise ValueError(f"expected {self.horizon} residual(s) (one per horizon step), got {r.shape[0]}")
        if np.isinf(r).any():
            raise ValueError(f"residual at horizon step {int(np.flatnonzero(np.isinf(r))[0])} is infinite")
        return r

    def interval(self, y_hat: Any, key: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds around the point forecast(s) ``y_hat`` (pure).

        ``y_hat`` holds one forecast per horizon step (a float when ``horizon == 1``); the
        bounds have shape ``(len(levels),)`` for a float and ``(horizon, len(levels))``
        otherwise.

        >>> cal = OnlineCalibrator(levels=[0.5, 0.9])
        >>> for r in [-1.0, 1.0] * 200:
        ...     _ = cal.update(r)
        >>> lo, hi = cal.interval(10.0)
        >>> bool(lo[1] <= lo[0] <= 10.0 <= hi[0] <= hi[1])
        True
        """
        if type(y_hat) is float and self.horizon == 1 and 0 <= key < self.state.shape[0] - self.pooled:
            bounds = K.interval_one(self.state, self.params, key, y_hat)  # the per-event fast path
            return bounds[0], bounds[1]
        scalar = np.ndim(y_hat) == 0
        y = np.asarray(y_hat, dtype=np.float64).reshape(-1)
        if y.shape[0] != self.horizon:
            raise ValueError(f"expected {self.horizon} forecast(s) (one per horizon step), got {y.shape[0]}")
        K.intervals(self.state, self.params, self._key(key), y, self._lo, self._hi)
        if scalar:
            return self._lo[0].copy(), self._hi[0].copy()
        return self._lo.copy(), self._hi.copy()

    def bounds(self, y_hat: float, level: int = 0, key: int = 0) -> tuple[float, float]:
        """``(lower, upper)`` at ``levels[level]`` around one float forecast (horizon step 0):
        the per-event fast path for one level (one compiled call, two floats back).

        >>> cal = OnlineCalibrator(levels=[0.9])
        >>> for r in [-1.0, 1.0] * 200:
        ...     _ = cal.update(r)
        >>> lo, hi = cal.bounds(5.0)
        >>> bool(lo < 5.0 < hi)
        True
        """
        if not (0 <= level < len(self.levels) and 0 <= key < self.state.shape[0] - self.pooled):
            raise IndexError(f"level index {level} (of {len(self.levels)}) or key row {key} (of {self.n_keys}) out of range")
        return K.bounds_one(self.state, self.params, key, float(y_hat), level)

    def update(self, residual: Any, key: int = 0) -> float | np.ndarray:
        """Fold in the residual(s) ``y - y_hat`` now known; returns their p-values first.

        The p-value of a residual is its calibrated two-sided tail probability
        ``P(|R| >= |r|)`` under the residuals seen before it. For a forecaster pass one value
        per horizon step, NaN for steps whose target has not arrived (their p-value is NaN).

        >>> cal = OnlineCalibrator(levels=[])
        >>> for r in [-1.0, 1.0] * 300:
        ...     _ = cal.update(r)
        >>> bool(cal.update(50.0) < 1e-6)
        True
        """
        if type(residual) is float and self.horizon == 1 and math.isfinite(residual) \
                and 0 <= key < self.state.shape[0] - self.pooled:
            return K.observe_one(self.state, self.params, key, residual)  # the per-event fast path
        r = self._residuals(residual)
        K.observe(self.state, self.params, self._key(key), r, self._p)
        return float(self._p[0]) if np.ndim(residual) == 0 else self._p.copy()

    def p_value(self, residual: Any, key: int = 0) -> float | np.ndarray:
        """The p-value :meth:`update` would return, without folding the residual in (pure)."""
        r = self._residuals(residual)
        K.p_values(self.state, self.params, self._key(key), r, self._p)
        return float(self._p[0]) if np.ndim(residual) == 0 else self._p.copy()

    def update_many(self, keys: Any, residuals: Any) -> np.ndarray:
        """:meth:`update` for a block of events ``(keys[e], residuals[e])`` in order; one call.

        Returns the p-values, shape ``(events, horizon)``; identical to the loop of
        :meth:`update` calls.

        >>> cal = OnlineCalibrator(levels=[0.9], n_keys=2)
        >>> p = cal.update_many([0, 1, 0], [1.0, -2.0, 0.5])
        >>> p.shape
        (3, 1)
        """
        keys = np.ascontiguousarray(keys, dtype=np.int64).reshape(-1)
        R = np.ascontiguousarray(residuals, dtype=np.float64).reshape(keys.shape[0], -1)
        if R.shape[1] != self.horizon:
            raise ValueError(f"expected {self.horizon} residual(s) per event, got {R.shape[1]}")
        if keys.size and (keys.min() < 0 or keys.max() >= self.n_keys):
            bad = int(np.flatnonzero((keys < 0) | (keys >= self.n_keys))[0])
            raise IndexError(f"event {bad}: key row {int(keys[bad])} outside [0, {self.n_keys}): add_keys first")
        if np.isinf(R).any():
            e, s = (int(v) for v in np.argwhere(np.isinf(R))[0])
            raise ValueError(f"event {e}, horizon step {s}: residual is infinite; nothing was folded in")
        out = np.empty_like(R)
        K.observe_many(self.state, self.params, keys, R, out)
        return out

    # ------------------------------------------------------------------ persistence
    def _config(self) -> dict[str, Any]:
        return {"levels": list(self.levels), "horizon": self.horizon, "lr": self.lr, "decay": self.decay, "clip": self.clip,
                "pooled": self.pooled, "integrator_gain": self.integrator_gain,
                "integrator_saturation": self.integrator_saturation, "integrator_band": self.integrator_band,
                "scale_prior": self.scale_prior, "clip_tail": self.clip_tail, "tail_grid": list(self.tail_grid),
                "scale_rates": list(self.scale_rates), "tail_lr": self.tail_lr}

    @property
    def candidate_scales(self) -> slice:
        """The columns of a state row holding the candidate running scales (their evidence
        follows them, last in the row; empty without ``scale_rates``)."""
        R = len(self.scale_rates)
        return slice(self.width - 2 * R, self.width - R)

    def upgrade(self, state: np.ndarray) -> np.ndarray:
        """A state of these settings saved by an older version, widened to this layout; any
        other state as it is (its shape is checked by the caller):

        * saved before the candidate scale rates (rows ``2 * len(scale_rates)`` floats
          shorter): each candidate starts at the row's scale, with no evidence yet;
        * saved before the error integrator too (``2 * len(levels)`` more): zero integrals.
        """
        J, R = len(self.levels), len(self.scale_rates)
        if state.ndim != 3 or state.shape[2] not in {self.width - 2 * R, self.width - 2 * R - 2 * J} - {self.width}:
            return state
        if state.shape[2] == self.width - 2 * R - 2 * J:   # before the integrator (and the rates)
            state = np.concatenate([state, np.zeros((*state.shape[:2], 2 * J))], axis=2)
        scale = state[..., K.F_SCALE:K.F_SCALE + 1]
        return np.concatenate([state, np.repeat(scale, R, axis=2), np.zeros((*state.shape[:2], R))], axis=2)

    #: the settings :meth:`retune` may change (the state's layout does not depend on them)
    RETUNABLE = frozenset({"lr", "decay", "clip", "integrator_gain", "integrator_saturation", "integrator_band",
                           "scale_prior", "clip_tail", "tail_lr"})

    def retune(self, **settings: float) -> None:
        """Change settings that leave the state's layout alone (``RETUNABLE``), keeping the
        state: the settings and the kernels' parameter vector stay one (checked as in the
        constructor).

        >>> cal = OnlineCalibrator(levels=[0.9], integrator_band=1.5)
        >>> cal.retune(integrator_band=0.0)
        >>> cal.integrator_band, cal._config()["integrator_band"]
        (0.0, 0.0)
        """
        unknown = set(settings) - self.RETUNABLE
        if unknown:
            raise ValueError(f"retune changes only {sorted(self.RETUNABLE)}, got {sorted(unknown)}")
        fresh = OnlineCalibrator(**{**self._config(), **settings})
        for name in settings:
            setattr(self, name, getattr(fresh, name))
        self.params = fresh.params

    def __setstate__(self, d: dict[str, Any]) -> None:
        # an object pickled by an older version (a River estimator holding it): rebuild the
        # parameter vector of this version from its settings and widen its state
        d.setdefault("integrator_gain", INTEGRATOR_GAIN)
        d.setdefault("integrator_saturation", INTEGRATOR_SATURATION)
        d.setdefault("integrator_band", INTEGRATOR_BAND)
        d.setdefault("scale_prior", SCALE_PRIOR)
        d.setdefault("clip_tail", CLIP_TAIL)
        d.setdefault("scale_rates", ())   # pickled before the candidate rates: one rate, as it was
        d.setdefault("tail_lr", 0.0)      # pickled before the log-step tail trackers: steps of lr, as it was
        self.__dict__.update(d)
        fresh = OnlineCalibrator(**self._config())
        self.params, self.width = fresh.params, fresh.width
        self.state = self.upgrade(self.state)

    def export(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """``(meta, arrays)`` for :func:`streamlstm.persistence.dumps` (JSON-able, float64)."""
        return self._config(), {"calibrator_state": self.state.copy()}

    @classmethod
    def from_export(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> OnlineCalibrator:
        """Rebuild from :meth:`export`'s parts, bit-identical."""
        state = arrays["calibrator_state"]
        # saved before the candidate scale rates: one rate (decay), as it was saved with
        # ... and before the log-step tail trackers: steps of lr
        meta = {"scale_rates": [], "tail_lr": 0.0, **meta}
        cal = cls(n_keys=max(1, state.shape[0] - bool(meta.get("pooled", False))), **meta)
        state = cal.upgrade(state)
        if state.shape[1:] != cal.state.shape[1:]:
            raise ValueError(f"calibrator state has shape {state.shape}, settings want (rows, {cal.horizon}, {cal.width})")
        cal.state = np.array(state, dtype=np.float64)
        return cal

    def to_bytes(self) -> bytes:
        """The versioned container bytes (``streamlstm.persistence``).

        >>> cal = OnlineCalibrator(levels=[0.9])
        >>> _ = cal.update(0.3)
        >>> twin = OnlineCalibrator.from_bytes(cal.to_bytes())
        >>> bool((twin.state == cal.state).all())
        True
        """
        meta, arrays = self.export()
        return dumps(self.kind, meta, arrays)

    @classmethod
    def from_bytes(cls, blob: bytes) -> OnlineCalibrator:
        """Inverse of :meth:`to_bytes`."""
        _, meta, arrays = loads(blob, expect_kind=cls.kind)
        return cls.from_export(meta, arrays)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically (temporary file, fsync, rename)."""
        write_atomic(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> OnlineCalibrator:
        """Read a file written by :meth:`save`."""
        _, meta, arrays = read_file(path, expect_kind=cls.kind)
        return cls.from_export(meta, arrays)

    def __repr__(self) -> str:
        return f"OnlineCalibrator(levels={list(self.levels)}, horizon={self.horizon}, lr={self.lr}, n_keys={self.n_keys})"
