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
  cumulated absolute loss in units of the running mean absolute loss and ``eta`` fixed.

* ``"mlpoly+ewa"`` (the engine's default): ML-Poly one step ahead, EWA for the further
  horizons. Measured on the whole suite of ``bench/bench_forecast.py``: ML-Poly is the better
  one step ahead (EWA: 1.02x its error on average), EWA the better beyond (WaterFlow
  h=1..24: 2.99 against 3.34; Airline h=1..12: 15.9 against 16.6). Far forecasts learn
  from fewer, later and noisier errors, where EWA's fast concentration on the expert
  that erred least pays and ML-Poly's search for the best mixture does not.

Both forget with ``discount`` (regrets and losses are multiplied by it at every update), so
that an expert that becomes good late in a long stream can take over.
"""

from __future__ import annotations

import math

import numpy as np

RULES = ("mlpoly+ewa", "mlpoly", "ewa", "mean")
EWA_ETA = 2.0
SQUARED = False


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

    def _mix(self, h: int, forecasts: np.ndarray) -> tuple[np.ndarray, float]:
        """Weights over the awake experts (finite forecasts) and the aggregated forecast."""
        awake = np.isfinite(forecasts)
        w = np.where(awake, self.weights[h], 0.0)
        total = float(w.sum())
        if not total > 0.0:  # every awake expert has weight 0: start them equal
            w = awake / max(int(awake.sum()), 1)
        else:
            w = w / total
        return w, float(w @ np.where(awake, forecasts, 0.0))

    def combine(self, h: int, forecasts: np.ndarray) -> float:
        """The aggregated forecast at horizon index ``h`` (0-based); a NaN forecast marks an
        asleep expert (not started yet), left out of the combination.

        >>> Aggregator(2, 1).combine(0, np.array([1.0, np.nan]))
        1.0
        """
        return self._mix(h, forecasts)[1]

    def update(self, h: int, forecasts: np.ndarray, y: float) -> None:
        """Learn from the experts' ``forecasts`` (made ``h + 1`` steps ago) of the value ``y``.

        Asleep experts (NaN) count as having forecast the aggregate: their regret does not
        move (sleeping experts), so an expert starting late is judged from its start.
        """
        if self.rule == "mean":
            return
        _, p = self._mix(h, forecasts)
        f = np.where(np.isfinite(forecasts), forecasts, p)
        if self.discount < 1.0:
            self.regret[h] *= self.discount
            self.squares[h] *= self.discount
        if self.rule == "mlpoly" or (self.rule == "mlpoly+ewa" and h == 0):
            g = (p - y) if SQUARED else (1.0 if p > y else -1.0 if p < y else 0.0)
            r = g * (p - f)                       # > 0: expert e would have done better
            self.regret[h] += r
            self.squares[h] += r * r
            eta = 1.0 / np.maximum(self.squares[h], 1e-300)  # scale-free: no eta_0 to choose
            v = eta * np.maximum(self.regret[h], 0.0)
        else:
            loss = np.abs(f - y)
            s = self.scale[h] = self.scale[h] + 0.02 * (float(loss.mean()) - self.scale[h]) if self.scale[h] > 0 \
                else float(loss.mean())
            self.regret[h] += loss / s if s > 0 else 0.0
            e = -EWA_ETA * (self.regret[h] - self.regret[h].min())
            v = np.exp(e)
        total = float(v.sum())
        if total > 0.0 and math.isfinite(total):
            self.weights[h] = v / total
