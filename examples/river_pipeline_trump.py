"""A River pipeline around LSTMRegressor, scored by progressive validation on TrumpApproval.

TrumpApproval holds 1001 days of poll aggregates: six numeric features (the day's ordinal date
and five pollsters' numbers) and the target, FiveThirtyEight's approval estimate. The pipeline
drops the date (a counter, not a signal), standardises the polls with River's StandardScaler
and feeds an LSTMRegressor, which predicts the change of the approval since the last labelled
day from the changes of the polls, carrying its state from day to day.

    python examples/river_pipeline_trump.py            # a few seconds

Each model is scored with `evaluate.progressive_val_score` (predict_one, then learn_one, on
every day). For reference the script also scores the last-value baseline (yesterday's
approval) and River's StandardScaler | LinearRegression on the same stream. What it prints
(seed 42): MAE 0.145 for the pipeline, 0.151 for the last value, 1.315 for the linear model.
"""

from __future__ import annotations

import argparse
import time

from river import base, compose, datasets, evaluate, linear_model, metrics, preprocessing

from streamlstm.adapters.river import LSTMRegressor


class LastTarget(base.Regressor):
    """Predicts the previous day's target (no prediction on the first day)."""

    def __init__(self):
        self.last = None

    def learn_one(self, x, y):
        self.last = y

    def predict_one(self, x):
        return self.last


def lstm_pipeline(seed: int = 42) -> compose.Pipeline:
    return compose.Pipeline(
        compose.Discard("ordinal_date"),
        preprocessing.StandardScaler(),
        LSTMRegressor(seed=seed),
    )


def score(model) -> tuple[float, float]:
    t0 = time.perf_counter()
    mae = evaluate.progressive_val_score(datasets.TrumpApproval(), model, metrics.MAE())
    return mae.get(), time.perf_counter() - t0


def main(argv=None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    models = {
        "Discard(date) | StandardScaler | LSTMRegressor": lstm_pipeline(args.seed),
        "last value": LastTarget(),
        "StandardScaler | LinearRegression": preprocessing.StandardScaler() | linear_model.LinearRegression(),
    }
    results = {}
    print(f"{'model':48s} {'MAE':>7s} {'seconds':>8s}")
    for name, model in models.items():
        mae, secs = score(model)
        results[name] = mae
        print(f"{name:48s} {mae:7.3f} {secs:8.2f}")
    return results


if __name__ == "__main__":
    main()
