"""`streamlstm run --ahead H` over the core forecasting engine (the default model).

The CLI's forecasts equal the core :class:`streamlstm.Forecaster`'s fed the same rows
(``==``), plain and keyed; checkpoints resume to the same bytes, also after ``kill -9``; a
pipe and a file give the same bytes; the season found is said; what cannot be honoured is
refused with a message that says why.
"""

from __future__ import annotations

import inspect
import io
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("click")

from test_cli import assert_same_model, cli, consumed, kill_9_mid_pipe, ok, rows_of, start

from streamlstm import Forecaster


def seasonal_csv(path: Path, rows: int, keys: tuple[str, ...] = ("a",), missing_every: int = 0, seed: int = 0) -> Path:
    """time,site,hum,load: a daily cycle of 12 rows, a trend, noise; load follows hum."""
    rng = np.random.default_rng(seed)
    lines = ["time,site,hum,load"]
    for t in range(rows):
        for j, k in enumerate(keys):
            hum = 50 + 5 * math.sin(2 * math.pi * t / 12 + j) + rng.normal(0, 0.3)
            load = 100 + 10 * j + 0.05 * t + 8 * math.sin(2 * math.pi * t / 12 + j) + 0.2 * hum + rng.normal(0, 0.5)
            cell = "" if missing_every and (t * len(keys) + j) % missing_every == 5 else f"{load:.3f}"
            lines.append(f"{t},{k},{hum:.3f},{cell}")
    path.write_text("\n".join(lines) + "\n")
    return path


def core_forecasts(path: Path, H: int, keyed: bool, features: bool, **params) -> list[float]:
    """The core engine fed the CSV's rows in Python: each row's forecast for t+H, the row's
    features standing for those of the times forecast (NaN before the key's first value; a row
    without a value does not step the engine)."""
    model = Forecaster(horizon=H, n_features=1 if features else 0, **params)
    seen: set = set()
    out = []
    for line in path.read_text().splitlines()[1:]:
        _t, site, hum, load = line.split(",")
        key = site if keyed else None
        x = [float(hum)] if features else None
        if load:
            model.learn_one(float(load), x, key)
            seen.add(key)
        out.append(float(model.forecast(key, None if x is None else [x] * H)[H - 1]) if key in seen else math.nan)
    return out


def column(stdout: bytes, name: str) -> list[float]:
    return [float(r[name]) if r[name] else math.nan for r in rows_of(stdout)]


def same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(x == y or (x != x and y != y) for x, y in zip(a, b))


# ------------------------------------------------------------ the same numbers everywhere
@pytest.mark.parametrize("keyed,features,H", [(False, False, 1), (False, True, 3), (True, True, 2)])
def test_cli_forecasts_equal_the_core_engine_fed_the_same_rows(tmp_path, keyed, features, H):
    data = seasonal_csv(tmp_path / "s.csv", 150, keys=("a", "b") if keyed else ("a",), missing_every=17)
    args = ["run", data, "--target", "load", "--time", "time", "--ahead", str(H), "--features",
            "hum" if features else "", "-q"]
    args += ["--key", "site"] if keyed else ["--keep", "site"]
    r = ok(cli(*args))
    got = column(r.stdout, f"forecast_load_t+{H}")
    want = core_forecasts(data, H, keyed, features)
    assert same(got, want)
    # the forecast made H rows (of the key) earlier is written beside each row
    rows = rows_of(r.stdout)
    for key in {r_["site"] for r_ in rows}:
        mine = [r_ for r_ in rows if r_["site"] == key]
        for i in range(H, len(mine)):
            assert mine[i]["forecast_load_t"] == mine[i - H][f"forecast_load_t+{H}"]


def test_cli_anomaly_scores_equal_the_core_detector_with_the_engine_base(tmp_path):
    """``streamlstm run FILE --anomaly`` on a ``timestamp,value`` file writes, row for row,
    what ``AnomalyDetector(base="engine")`` scores (the first row has no forecast: no score)."""
    from streamlstm.anomaly import AnomalyDetector

    rng = np.random.default_rng(5)
    values = 10.0 + np.sin(np.arange(400) / 6.0) + 0.1 * rng.normal(size=400)
    values[300] += 4.0
    path = tmp_path / "series.csv"
    path.write_text("timestamp,value\n" + "".join(f"2024-01-01T{i // 60:02d}:{i % 60:02d},{v!r}\n"
                                                   for i, v in enumerate(values.tolist())))
    got = column(ok(cli("run", path, "--anomaly", "-q")).stdout, "anomaly_score")
    det = AnomalyDetector(base="engine")
    want = [det.score_one(v) for v in values]
    assert math.isnan(got[0]) and want[0] == 0.0
    assert got[1:] == want[1:]
    assert max(want) >= 0.5 and int(np.argmax(want)) == 300


def test_engine_options_reach_the_engine_and_match_its_parameters(tmp_path):
    from streamlstm.adapters import cli as cli_mod

    sig = inspect.signature(Forecaster.__init__).parameters
    for name, (param, default) in cli_mod._engine_defaults().items():
        assert param in sig, name
        assert sig[param].default == default, (name, sig[param].default, default)
    data = seasonal_csv(tmp_path / "s.csv", 120)
    r = ok(cli("run", data, "--target", "load", "--ahead", "2", "--features", "", "--season", "6",
               "--no-lstm-expert", "--seed", "3", "-q"))
    want = core_forecasts(data, 2, False, False, season=6, lstm=False, seed=3)
    assert same(column(r.stdout, "forecast_load_t+2"), want)
    bad = cli("run", data, "--target", "load", "--ahead", "1", "--season", "1")
    assert bad.returncode == 2 and "--season '1': expected 'auto', 'none'" in bad.stderr.decode()


# ----------------------------------------------------------------- what is said or refused
def test_the_season_found_is_said_in_the_summary_and_by_info(tmp_path):
    data = seasonal_csv(tmp_path / "s.csv", 200, keys=("a", "b"))
    one = seasonal_csv(tmp_path / "one.csv", 200)
    model = tmp_path / "m.slstm"
    r = ok(cli("run", one, "--target", "load", "--time", "time", "--ahead", "1", "--save", model))
    err = r.stderr.decode()
    assert "the forecasting engine" in err
    assert "numeric columns not used as features by the engine: hum (--features A,B,... to use them)" in err
    assert "streamlstm: season: 12 steps (found online in the recent values" in err
    info = ok(cli("info", model)).stdout.decode()
    assert "season: 12" in info and "model: forecasting engine" in info and "experts: last_value" in info
    keyed = ok(cli("run", data, "--target", "load", "--time", "time", "--key", "site", "--ahead", "1"))
    assert "season per key: 12 (2 keys) (found online" in keyed.stderr.decode()


def test_what_the_engine_cannot_honour_is_refused_with_the_reason(tmp_path):
    data = seasonal_csv(tmp_path / "s.csv", 30)
    model = tmp_path / "m.slstm"
    ok(cli("run", data, "--target", "load", "--ahead", "1", "--save", model, "-q"))
    cases = {
        ("--load", model, "--no-learn"): "--no-learn: the forecasting engine",
        ("--no-learn",): "--no-learn: the forecasting engine",
        ("--hidden", "4"): "--hidden: option(s) of the bare LSTM (--model lstm)",
        ("--difference",): "--difference: option(s) of the bare LSTM",
        ("--model", "lstm", "--season", "12"): "--season: option(s) of the forecasting engine",
    }
    procs = {extra: start("run", data, "--target", "load", "--ahead", "1", *extra, stdin=subprocess.DEVNULL)
             for extra in cases}
    for extra, p in procs.items():
        _, err = p.communicate(timeout=120)
        assert p.returncode == 2 and cases[extra] in err.decode() and b"Traceback" not in err, (extra, err)
    r = cli("run", data, "--target", "load", "--model", "engine")
    assert r.returncode == 2 and "--model engine forecasts (--ahead H)" in r.stderr.decode()


# ------------------------------------------------------------- exact resume, pipe == file
@pytest.fixture(scope="module")
def engine_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("engine_resume")
    data = seasonal_csv(d / "s.csv", 300, keys=("a", "b", "c"), missing_every=11)
    args = ["--target", "load", "--key", "site", "--time", "time", "--ahead", "2", "--features", "hum", "--quiet",
            "--interval", "0.8", "--interval", "0.95", "--anomaly"]  # calibrator and scorer states resume too
    r = ok(cli("run", data, *args, "--save", d / "full.slstm"))
    return d, data, args, r.stdout


def test_engine_pipe_and_file_write_the_same_bytes(engine_run):
    d, data, args, full = engine_run
    piped = ok(cli("run", *args, "--save", d / "piped.slstm", input=data.read_bytes()))
    assert piped.stdout == full
    assert_same_model(d / "full.slstm", d / "piped.slstm")


def test_engine_checkpoint_of_a_prefix_then_resume_equals_one_run(engine_run, tmp_path):
    d, data, args, full = engine_run
    prefix = tmp_path / "p.csv"
    prefix.write_text("".join(data.read_text().splitlines(keepends=True)[:1 + 451]))
    ck = tmp_path / "ck.slstm"
    first = ok(cli("run", prefix, *args, "--checkpoint", ck))
    rest = ok(cli("run", data, *args, "--checkpoint", ck, "--resume", "--save", tmp_path / "end.slstm"))
    assert first.stdout + rest.stdout == full
    assert_same_model(d / "full.slstm", tmp_path / "end.slstm")


def test_engine_kill_9_mid_pipe_then_resume_matches_an_uninterrupted_run(engine_run, tmp_path):
    d, data, args, full = engine_run
    ck = tmp_path / "ck.slstm"
    kill_9_mid_pipe(data, args, ck, 550, 100)
    assert consumed(ck) == 500
    r = ok(cli("run", data, *args, "--checkpoint", ck, "--resume", "--save", tmp_path / "end.slstm"))
    assert r.stdout == b"".join(full.splitlines(keepends=True)[1 + 500:])
    assert_same_model(d / "full.slstm", tmp_path / "end.slstm")


def test_engine_in_process_file_and_stream_objects_agree(tmp_path):
    """The compiled file reader and the Python reader feed the engine the same rows."""
    from streamlstm.adapters import cli as cli_mod

    data = seasonal_csv(tmp_path / "s.csv", 80, keys=("a", "b"), missing_every=7)
    outs = []
    for source in (str(data), io.BytesIO(data.read_bytes())):
        with cli_mod.run.make_context("run", ["-", "--target", "load", "--key", "site", "--ahead", "3",
                                              "--block-size", "13", "--quiet"]) as ctx:
            opts = dict(ctx.params)
        opts["input"] = source
        out = io.StringIO()
        cli_mod._run(opts, set(), stream=out)
        outs.append(out.getvalue())
    assert outs[0] == outs[1] and outs[0].count("\n") == 161


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
