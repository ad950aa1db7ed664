"""deep-river peers, run inside the deep-river venv (see bench/setup_deepriver_venv.sh).

    /work/venv-deepriver/bin/python bench/deepriver_runner.py \
        [--configs defaults,docstring] [--datasets AirlinePassengers,WaterFlow,TrumpApproval] \
        [--speed] [--repeats 5]

Prints one JSON object on stdout:
    {"versions": {...}, "configs": {name: description},
     "accuracy": {config: {dataset: metrics | {"error": str}}},
     "speed": {...} | null}
The protocol code (metrics, timing) is imported from bench/peers.py, so it is the same as for
every other model in bench/bench_river.py.

Configurations (deep-river 0.3.4):
* ``defaults``: class defaults. ``LSTMForecaster()`` = window 10, hidden 16, 1 layer, Adam 1e-3,
  grad clip 1.0; ``LSTMRegressor(n_features=6)`` = window 10, hidden 32, 1 layer, Adam 1e-3.
* ``docstring``: the ``LSTMRegressor`` docstring example: hidden 8, 1 layer, SGD lr 1e-2,
  is_feature_incremental=True (``LSTMForecaster`` has no example; same hidden/optimizer/lr used).
Scaling (deep-river has none of its own): regressor =
``StandardScaler() | TargetStandardScaler(LSTMRegressor(...))``; forecaster = online z-scoring of
the series (``peers.ScaledForecaster``), which also scales its lag inputs.
Speed: bare ``LSTMRegressor(n_features=6, hidden_size=32)`` (defaults otherwise), dict rows.
torch runs with 1 intra-op thread (faster than 2 for these tiny per-event ops here).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
import warnings
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers

CONFIGS: dict[str, Any] = {
    "defaults": {"forecaster": {}, "regressor": {}},
    "docstring": {
        "forecaster": {"hidden_size": 8, "num_layers": 1, "optimizer_fn": "sgd", "lr": 1e-2},
        "regressor": {"hidden_size": 8, "num_layers": 1, "optimizer_fn": "sgd", "lr": 1e-2,
                      "is_feature_incremental": True},
    },
}
N_FEATURES = 6  # TrumpApproval


SEED = 42  # deep-river's default ``seed``


def _seed():
    # deep-river 0.3.4 bug: the zoo classes build their torch module *before*
    # DeepEstimator.__init__ calls torch.manual_seed(seed), so ``seed`` does not fix the initial
    # weights (they depend on the global RNG, i.e. on whatever ran before). Seed first.
    import torch

    torch.manual_seed(SEED)


def make_forecaster(config: str):
    from deep_river.forecasting import LSTMForecaster

    _seed()
    return peers.ScaledForecaster(LSTMForecaster(**CONFIGS[config]["forecaster"]))


def make_regressor(config: str):
    from deep_river.regression import LSTMRegressor
    from river import preprocessing

    _seed()
    return preprocessing.StandardScaler() | preprocessing.TargetStandardScaler(
        LSTMRegressor(n_features=N_FEATURES, **CONFIGS[config]["regressor"])
    )


def make_speed_regressor():
    from deep_river.regression import LSTMRegressor

    _seed()
    return LSTMRegressor(n_features=N_FEATURES, hidden_size=32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--datasets", default=",".join(peers.DATASETS))
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    warnings.filterwarnings("ignore")
    # Anything the libraries print must not corrupt the JSON on stdout.
    with contextlib.redirect_stdout(sys.stderr):
        import deep_river
        import river
        import torch

        torch.set_num_threads(1)
        out: dict[str, Any] = {
            "versions": {"deep-river": deep_river.__version__, "river": river.__version__,
                         "torch": torch.__version__, "python": sys.version.split()[0]},
            "configs": CONFIGS,
            "accuracy": {},
            "speed": None,
        }
        for config in [c for c in args.configs.split(",") if c]:
            res = out["accuracy"][config] = {}
            for ds in [d for d in args.datasets.split(",") if d]:
                try:
                    if ds in peers.FORECAST_DATASETS:
                        res[ds] = peers.forecast_metrics(make_forecaster(config),
                                                         peers.load_series(ds),
                                                         peers.FORECAST_DATASETS[ds])
                    else:
                        res[ds] = peers.regression_metrics(make_regressor(config), ds)
                except Exception as e:  # report, keep going
                    res[ds] = {"error": f"{type(e).__name__}: {e}",
                               "traceback": traceback.format_exc()}
                print(f"deep-river {config} {ds}: {res[ds].get('error') or 'ok'}", file=sys.stderr)
        if args.speed:
            out["speed"] = peers.time_per_event(make_speed_regressor, peers.load_rows("TrumpApproval"),
                                                repeats=args.repeats)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
