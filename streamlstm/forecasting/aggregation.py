"""Online aggregation of experts: convex weights per horizon, learned from the errors.

The rules: ML-Poly on the linearised absolute loss (the gradient of ``|p - y|`` at the
aggregated forecast ``p``, so that the weights go to the experts that would have moved the
forecast towards ``y``; with it the combination can beat the best single expert):

* ``"mlpoly"``: ML-Poly (Gaillard, Stoltz and van Erven, COLT 2014): weights
  proportional to ``eta_e * max(R_e, 0)``, ``R_e`` the expert's cumulated regret and
  ``eta_e = 1 / (1 / eta_0 + sum of its squared regrets)``: no learning rate to tune; its
  regret against the best expert is ``O(sqrt(T log E))`` (against the best convex
  combination for the linearised loss).
* ``"ewa"``: exponentially weighted average, ``w_e ∝ exp(-eta L_e)`` with ``L_e`` the expert's
  cumulated absolute loss in units of the running mean absolute loss and ``eta`` decreasing as
  ``1 / sqrt(n)`` with the horizon's number of updates ``n`` (see :func:`ewa_eta`). An
  asleep expert is charged the loss of the awake leader (the least ``L_e``), so that it wakes
  level with it: charged the aggregate's loss instead (the usual sleeping-experts rule), a
  seasonal model waking after a season of values trailed the experts that were awake from
  the start for dozens of steps (h=1..H, season given: Airline 14.24 -> 14.12, sunspots
  22.42 -> 22.39, WaterFlow 2.974 -> 2.971, elnino 0.873 -> 0.874).

* ``"mlpoly+ewa"`` (the engine's default): ML-Poly one step ahead, EWA for the further
  horizons. Measured on the whole suite of ``bench/bench_forecast.py``: ML-Poly is the better
  one step ahead (EWA: 1.02x its error on average), EWA the better beyond (WaterFlow
  h=1..24: 2.99 against 3.34; Airline h=1..12: 15.9 against 16.6). Far forecasts learn
  from fewer, later and noisier errors, where EWA's fast concentration on the expert
  that erred least pays and ML-Poly's search for the best mixture does not.

**Far horizons learn from each other** (rules ``"mlpoly+ewa"`` and ``"ewa"``, horizons 2 .. H).
Each far horizon's weights mix two EWA candidates: one on the horizon's own cumulated losses,
one on the losses averaged over all the far horizons (2 .. H; one step ahead, a different
problem, is left out). A horizon's own losses are few and late (the ``h``-step error of a
value is known ``h`` steps after the forecast) and noisy; the pooled ones are ``H - 1`` times
more evidence of which experts forecast far well, at the price of bias where the best expert
changes with the horizon. The mixture ``m`` is learned by ML-Poly at a second level, on the
linearised loss of the mixed forecast (each candidate's regret ``sign(p - y) (p - p_c)``),
with its regrets shared by the far horizons. Measured on the multi-step suite of
``bench/bench_forecast.py`` (six series, defaults and season given; geometric mean of the
h=1..H MAE against the horizon's own EWA alone): 0.989 with defaults, 0.993 with the season
given, no series worse than +0.3% (Nile -4.9%, El Niño -1.7% given, sunspots -1.4% given,
AirlinePassengers 14.42 -> 14.24 and 13.73 -> 13.65). Ablations: the pooled candidate alone
1.039 / 1.017 (WaterFlow +15%: its best expert changes with the horizon); the second level
per horizon instead of shared 1.002 / 0.999 (WaterFlow +6%: a horizon's own regrets are as
scant as its losses); one step ahead in the pool 0.988 / 0.997 (WaterFlow +2.3%). One step
ahead nothing changes.

Both forget with ``discount`` (regrets and losses are multiplied by it at every update), so
that an expert that becomes good late in a long stream can take over.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_jit = njit(cache=True, error_model="numpy", nogil=True)

RULES = ("mlpoly+ewa", "mlpoly", "ewa", "mean")
EWA_ETA = 4.0     # EWA's learning rate over a horizon's first EWA_SETTLE updates ...
EWA_SETTLE = 3    # ... then EWA_ETA * sqrt(EWA_SETTLE / n) after n updates (see ewa_eta)
FAR_SECOND_LEVEL = True   # far horizons learn from each other's losses (see the module's notes); an ablation


@_jit
def ewa_eta(updates: float) -> float:
    """EWA's learning rate after ``updates`` (discounted) updates of a horizon's weights:
    ``EWA_ETA`` at first, then decreasing as ``1 / sqrt(updates)`` (about ``6.9 / sqrt(n)``).

    The cumulated losses of the good experts grow apart linearly with time: with a fixed rate
    the weights end on whichever expert leads by a little (follow the leader, switching between
    close experts); the usual ``1 / sqrt(T)`` rate keeps mixing the close ones. Measured on the
    multi-step suite (Airline h=1..12, WaterFlow h=24, elnino 12, sunspots 11, Nile 10,
    unemployment 8; defaults and season given) against a fixed rate of 2: Airline 14.58 ->
    14.42, season given 14.12 -> 14.03; elnino 1.2% / 1.9% better, sunspots 1.1% / 0.7%, Nile
    1.0% / 0.5%, unemployment 1.0% / 1.1%, WaterFlow +0.05% / -0.9% (one step ahead nothing
    changes: ML-Poly). ``2 / sqrt(n)`` mixed too long (WaterFlow +7%, Nile +5-6%); ``10 /
    sqrt(n)``, or a rate of 8 over the first 3 updates, gained less (geometric means 0.992,
    0.994 against 0.991).

    >>> ewa_eta(1) == EWA_ETA, round(ewa_eta(300), 3)
    (True, 0.4)
    """
    return EWA_ETA * math.sqrt(EWA_SETTLE / max(EWA_SETTLE, updates))


class Aggregator:
    """Weights over ``n_experts`` for each of ``horizon`` horizons.

    >>> agg = Aggregator(n_experts=2, horizon=1)
    >>> for _ in range(50):
    ...     agg.update(0, np.array([1.0, 5.0]), 1.0)     # expert 0 is always right
    >>> bool(agg.weights[0, 0] > 0.99)
    True
    """

    def __init__(self, n_experts: int, horizon: int, rule: str = "mlpoly+ewa", discount: float = 1.0) -> None:
        if rule not in RULES:
            raise ValueError(f"aggregation must be one of {RULES}, got {rule!r}")
        if not 0.0 < discount <= 1.0:
            raise ValueError(f"discount must be in (0, 1], got {discount!r}")
        self.rule = rule
        self.discount = float(discount)
        self.weights = np.full((horizon, n_experts), 1.0 / n_experts)
        self.regret = np.zeros((horizon, n_experts))   # ML-Poly: R; EWA: cumulated losses
        self.squares = np.zeros((horizon, n_experts))  # ML-Poly: sum of squared regrets
        self.scale = np.zeros(horizon)                 # EWA: running mean absolute loss
        # far horizons (2 .. H) with EWA: the second level's regrets (row 0) and squared regrets
        # (row 1) of its two candidates, own losses (column 0) and pooled losses (column 1),
        # shared by the far horizons
        self.meta = np.zeros((2, 2))
        # the far horizons' candidates, pooled losses and second-level weights, per update
        self._scratch = np.empty((3, max(n_experts, 2)))
        # updates per horizon (EWA's learning rate): not saved, the engine derives them from its
        # streams' counts (see Forecaster._aggregator_updates)
        self.updates = np.zeros(horizon, dtype=np.int64)

    def combine(self, h: int, forecasts: np.ndarray) -> float:
        """The aggregated forecast at horizon index ``h`` (0-based); a NaN forecast marks an
        asleep expert (not started yet), left out of the combination.

        >>> Aggregator(2, 1).combine(0, np.array([1.0, np.nan]))
        1.0
        """
        return _combine(self.weights[h], forecasts)

    def update(self, h: int, forecasts: np.ndarray, y: float) -> None:
        """Learn from the experts' ``forecasts`` (made ``h + 1`` steps ago) of the value ``y``.

        Asleep experts (NaN) count as having forecast the aggregate: their regret does not
        move (sleeping experts), so an expert starting late is judged from its start.
        """
        if self.rule == "mean":
            return
        if self._far(h):
            _update_far(self.weights, self.regret, self.scale, self.meta, h, forecasts, float(y), self.discount,
                        self.updates, self._scratch)
            return
        mlpoly = self.rule == "mlpoly" or (self.rule == "mlpoly+ewa" and h == 0)
        _update(self.weights[h], self.regret[h], self.squares[h], self.scale, h, forecasts, float(y),
                self.discount, mlpoly, self.updates)

    def _far(self, h: int) -> bool:
        """Whether horizon index ``h`` is a far horizon with the second level (see the module)."""
        return h > 0 and self.rule in ("ewa", "mlpoly+ewa") and FAR_SECOND_LEVEL

    def eta(self, h: int) -> float:
        """EWA's learning rate at horizon index ``h`` (:func:`ewa_eta` of its updates,
        discounted like its losses).

        >>> agg = Aggregator(2, 1); agg.updates[0] = 12; agg.eta(0)
        2.0
        """
        return _eta(self.updates[h], self.discount)


    def adopt(self, other: Aggregator, n: int) -> None:
        """Take the regrets (and squared regrets, and loss scales) of the first ``n``
        experts from ``other`` (same horizon and rule), then recompute every horizon's weights
        from the regrets (with this aggregator's own learning rates: its counts of updates stay).

        >>> a, b = Aggregator(2, 1), Aggregator(2, 1)
        >>> for _ in range(20):
        ...     b.update(0, np.array([1.0, 5.0]), 1.0)
        >>> a.adopt(b, 2); bool(a.weights[0, 0] > 0.99)
        True
        """
        self.regret[:, :n] = other.regret[:, :n]
        self.squares[:, :n] = other.squares[:, :n]
        self.scale[:] = other.scale
        self.meta[:] = other.meta
        if self.rule == "mean":
            return
        for h in range(self.weights.shape[0]):
            if self._far(h):
                _far_weights(self.weights[h], self.regret, self.meta, h, self.eta(h), self._scratch)
                continue
            mlpoly = self.rule == "mlpoly" or (self.rule == "mlpoly+ewa" and h == 0)
            _weights_from_regrets(self.weights[h], self.regret[h], self.squares[h], mlpoly, self.eta(h))


# Compiled: the engine combines and updates once per horizon and event, with a dozen experts
# (numpy's per-call overhead was a fifth of an event's cost).
@_jit
def _combine(weights: np.ndarray, forecasts: np.ndarray) -> float:
    """Weights renormalised over the awake experts (finite forecasts; all equal when every
    awake one has weight 0) applied to their forecasts."""
    total = 0.0
    awake = 0
    for e in range(len(forecasts)):
        if math.isfinite(forecasts[e]):
            total += weights[e]
            awake += 1
    p = 0.0
    if total > 0.0:
        for e in range(len(forecasts)):
            if math.isfinite(forecasts[e]):
                p += weights[e] / total * forecasts[e]
    elif awake:
        for e in range(len(forecasts)):
            if math.isfinite(forecasts[e]):
                p += forecasts[e] / awake
    return p


@_jit
def _update(weights: np.ndarray, regret: np.ndarray, squares: np.ndarray, scale: np.ndarray, h: int,
            forecasts: np.ndarray, y: float, discount: float, mlpoly: bool, updates: np.ndarray) -> None:
    """One horizon's update (ML-Poly or EWA, see the module's notes), in place; counts it in
    ``updates[h]``."""
    updates[h] += 1
    n = len(forecasts)
    p = _combine(weights, forecasts)
    if not mlpoly:
        _ewa_losses(regret, scale, h, forecasts, y, p, discount)
        _weights_from_regrets(weights, regret, squares, False, _eta(updates[h], discount))
        return
    f = np.empty(n)
    for e in range(n):
        f[e] = forecasts[e] if math.isfinite(forecasts[e]) else p
    _mlpoly_regrets(regret, squares, f, p, y, discount)
    _weights_from_regrets(weights, regret, squares, True, 0.0)


@_jit
def _mlpoly_regrets(regret: np.ndarray, squares: np.ndarray, f: np.ndarray, p: float, y: float,
                    discount: float) -> None:
    """ML-Poly's bookkeeping (discounted first): each forecast ``f[e]``'s regret against the
    aggregate ``p`` on the linearised absolute loss, and its square."""
    n = len(f)
    if discount < 1.0:
        for e in range(n):
            regret[e] *= discount
            squares[e] *= discount
    g = 1.0 if p > y else (-1.0 if p < y else 0.0)
    for e in range(n):
        r = g * (p - f[e])                # > 0: forecast e would have done better
        regret[e] += r
        squares[e] += r * r


@_jit
def _ewa_losses(losses: np.ndarray, scale: np.ndarray, h: int, forecasts: np.ndarray, y: float, p: float,
                discount: float) -> None:
    """Add each expert's absolute loss on ``y``, in units of the horizon's running mean absolute
    loss ``scale[h]``, to its cumulated ``losses`` (discounted first); ``p``: the aggregate
    forecast, which an asleep expert counts as having made for the running scale."""
    n = len(forecasts)
    if discount < 1.0:
        for e in range(n):
            losses[e] *= discount
    mean = 0.0
    for e in range(n):
        mean += abs((forecasts[e] if math.isfinite(forecasts[e]) else p) - y)
    mean /= n
    s = scale[h] + 0.02 * (mean - scale[h]) if scale[h] > 0 else mean
    scale[h] = s
    if not s > 0:
        return
    # an asleep expert takes the loss of the awake leader (least cumulated loss): it wakes
    # level with the leader, not behind every expert that was awake meanwhile
    lead = -1
    for e in range(n):
        if math.isfinite(forecasts[e]) and (lead < 0 or losses[e] < losses[lead]):
            lead = e
    for e in range(n):
        if math.isfinite(forecasts[e]):
            losses[e] += abs(forecasts[e] - y) / s
        else:
            losses[e] += abs((forecasts[lead] if lead >= 0 else p) - y) / s


@_jit
def _far_candidates(scratch: np.ndarray, losses: np.ndarray, h: int, eta: float) -> None:
    """The second level's candidates at far horizon ``h`` into ``scratch[0, :n]`` and
    ``scratch[1, :n]``: EWA weights on the horizon's own cumulated losses and on the mean of the
    far horizons' (indices 1 .. H-1), which goes to ``scratch[2, :n]``."""
    H, n = losses.shape
    own, pooled, mean = scratch[0, :n], scratch[1, :n], scratch[2, :n]
    for e in range(n):
        mean[e] = 0.0
    for k in range(1, H):
        for e in range(n):
            mean[e] += losses[k, e]
    for e in range(n):
        mean[e] /= H - 1
        own[e] = 1.0 / n
        pooled[e] = 1.0 / n
    _weights_from_regrets(own, losses[h], losses[h], False, eta)
    _weights_from_regrets(pooled, mean, mean, False, eta)


@_jit
def _far_weights(weights: np.ndarray, losses: np.ndarray, meta: np.ndarray, h: int, eta: float,
                 scratch: np.ndarray) -> None:
    """Far horizon ``h``'s weights: the candidates mixed by the second level's ML-Poly weights
    (even while neither candidate has a positive regret: then half each)."""
    _far_candidates(scratch, losses, h, eta)
    mix = scratch[2, :2]   # the pooled mean is used up
    mix[0] = mix[1] = 0.5
    _weights_from_regrets(mix, meta[0], meta[1], True, 0.0)
    for e in range(losses.shape[1]):
        weights[e] = mix[0] * scratch[0, e] + mix[1] * scratch[1, e]


@_jit
def _update_far(weights: np.ndarray, losses: np.ndarray, scale: np.ndarray, meta: np.ndarray, h: int,
                forecasts: np.ndarray, y: float, discount: float, updates: np.ndarray, scratch: np.ndarray) -> None:
    """A far horizon's update (see the module's notes): the second level learns how the two
    candidates of now would have done against the mixed forecast, then the horizon's losses,
    then its weights; counts the update in ``updates[h]``."""
    n = losses.shape[1]
    p = _combine(weights[h], forecasts)
    _far_candidates(scratch, losses, h, _eta(updates[h], discount))
    candidates = scratch[2, :2]   # their forecasts (the pooled mean is used up)
    candidates[0] = _combine(scratch[0, :n], forecasts)
    candidates[1] = _combine(scratch[1, :n], forecasts)
    _mlpoly_regrets(meta[0], meta[1], candidates, p, y, discount)
    updates[h] += 1
    _ewa_losses(losses[h], scale, h, forecasts, y, p, discount)
    _far_weights(weights[h], losses, meta, h, _eta(updates[h], discount), scratch)


@_jit
def _eta(updates: int, discount: float) -> float:
    n = float(updates)
    if discount < 1.0:
        n = (1.0 - discount ** n) / (1.0 - discount)
    return ewa_eta(n)


@_jit
def _weights_from_regrets(weights: np.ndarray, regret: np.ndarray, squares: np.ndarray, mlpoly: bool,
                          eta: float) -> None:
    """ML-Poly: ``w_e ∝ max(R_e, 0) / S_e`` (``eta_e = 1 / S_e``: scale-free); EWA:
    ``w_e ∝ exp(-eta (L_e - min L))``. Left as they are when no expert has a positive weight."""
    n = len(regret)
    v = np.empty(n)
    if mlpoly:
        for e in range(n):
            v[e] = max(regret[e], 0.0) / max(squares[e], 1e-300)
    else:
        low = np.inf
        for e in range(n):
            low = min(low, regret[e])
        for e in range(n):
            v[e] = math.exp(-eta * (regret[e] - low))
    total = 0.0
    for e in range(n):
        total += v[e]
    if total > 0.0 and math.isfinite(total):
        for e in range(n):
            weights[e] = v[e] / total


@_jit
def earlier_forecasts(f: np.ndarray, shorter: np.ndarray, h: int) -> None:
    """Fill, in place, each asleep (NaN) expert of ``f`` (the experts' ``h``-step forecasts of
    the value being learned) with its nearest shorter forecast of that value: ``shorter[k]``
    holds the ``k + 1``-step ones, ``k < h - 1``; the latest made while it was awake counts.

    An expert that wakes late (a seasonal model once the season's first cycle is seen, a long
    autoregression, the LSTM) has no ``h``-step error for ``h`` values; the EWA leader rule
    charged it the leader's loss meanwhile, blind to what its shorter forecasts of the same
    values already showed. The engine does this with a season given or none (``season=None``)
    only: a season found online may be spurious and its seasonal experts are judged on the
    history replayed (``Forecaster._replay_weights``); there (and in that replay) it cost
    WaterFlow +4.6% and Nile +4.8% at h = 1..24 / 1..10. Measured with the season given
    (``bench/bench_forecast.py``'s multi-step suite, with the decreasing EWA rate): Airline
    h=1..12 14.03 -> 13.73, Nile 140.9 -> 137.5, unemployment 0.786 -> 0.779, WaterFlow
    2.943 -> 2.925; elnino 0.869 -> 0.874, sunspots 22.31 -> 22.40.

    >>> f = np.array([1.0, np.nan, np.nan])
    >>> earlier_forecasts(f, np.array([[0.0, 5.0, np.nan], [0.0, 7.0, np.nan]]), 3); f.tolist()
    [1.0, 7.0, nan]
    """
    for e in range(len(f)):
        if math.isnan(f[e]):
            for k in range(h - 2, -1, -1):
                if not math.isnan(shorter[k, e]):
                    f[e] = shorter[k, e]
                    break
