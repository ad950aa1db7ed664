"""One forecasting engine, the same numbers everywhere (issue #10): the core
:class:`streamlstm.Forecaster`, ``streamlstm run --ahead H`` on a CSV of the same series and
River's ``LSTMForecaster`` give the same forecasts, to the last bit, on a public series.

The CSV holds each value as ``repr(float)``, which parses back to the same float; the CLI
prints its forecasts in shortest round-trip form, so they too compare with ``==`` once parsed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("river")
pytest.importorskip("click")

from river import datasets
from test_cli import cli, ok, rows_of

from streamlstm import Forecaster
from streamlstm.adapters.river import LSTMForecaster

SERIES = [float(y) for _, y in datasets.AirlinePassengers()]  # 144 months, bundled with River


@pytest.mark.parametrize("H", [1, 3])
def test_core_cli_and_river_forecast_the_same_numbers(tmp_path: Path, H: int) -> None:
    core, river = Forecaster(horizon=H), LSTMForecaster(horizon=H, exogenous=False)
    by_core, by_river = [], []
    for y in SERIES:
        core.learn_one(y)
        river.learn_one(y, {"month": "ignored with exogenous=False"})
        by_core.append(core.forecast().tolist())
        by_river.append(river.forecast(H))
    assert by_river == by_core

    data = tmp_path / "airline.csv"
    data.write_text("t,passengers\n" + "".join(f"{t},{y!r}\n" for t, y in enumerate(SERIES)))
    out = ok(cli("run", data, "--target", "passengers", "--time", "t", "--ahead", str(H), "-q"))
    by_cli = [float(row[f"forecast_passengers_t+{H}"]) for row in rows_of(out.stdout)]
    assert by_cli == [f[H - 1] for f in by_core]
    assert river.season_ == core.season_ == 12
