"""Child process of ``test_fuzz_persistence.py``: load each mutated case and use it.

Usage: ``python fuzz_child.py MANIFEST.json``. For each case the child prints ``BEGIN i``
before and one JSON result line after, flushed, so that the parent can tell which case a
signal killed. Memory is limited with ``resource.setrlimit`` once the imports and a warm-up
on the valid files are done; each case's peak resident memory is reported.
"""

from __future__ import annotations

import io
import json
import resource
import sys
import traceback
from pathlib import Path

import numpy as np


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def _use_model(path: str, blob: bytes) -> str:
    from streamlstm import OnlineLSTM

    m = OnlineLSTM.load(path)
    x = np.linspace(0.1, 0.5, m.n_inputs)
    m.predict_one(x)
    y = 1 if m.loss == "cross_entropy" else np.full(m.n_outputs, 0.3)
    for _ in range(3):
        m.learn_one(x, y)
    out = m.to_bytes()
    twin = OnlineLSTM.from_bytes(out)
    assert twin.to_bytes() == out, "a loaded model does not round-trip"
    assert np.array_equal(twin.predict_one(x), m.predict_one(x)), "a reloaded model predicts otherwise"
    return "works"


def _use_keyed(path: str, blob: bytes) -> str:
    from streamlstm import KeyedLSTM

    e = KeyedLSTM.load(path)
    m = e.model
    keys = [*list(e.keys())[:3], "fresh", 12345]
    X = np.full((len(keys), m.n_inputs), 0.2)
    e.step_many(keys, X)
    if e.learning:
        Y = np.ones(len(keys)) if m.loss == "cross_entropy" else np.full((len(keys), m.n_outputs), 0.3)
        e.learn_many(keys, X, Y)
    snap = e.snapshot()
    twin = KeyedLSTM.from_snapshot(snap)
    assert twin.snapshot() == snap, "a loaded snapshot does not round-trip"
    return "works"


def _use_state_bytes(path: str, blob: bytes, engines: dict) -> str:
    learn = path.endswith(".learn")
    e = engines[learn]
    try:
        e.set_state_bytes("k", blob)
    except ValueError as exc:  # the documented refusal of state bytes
        return "refused: " + str(exc)
    x = np.full(e.model.n_inputs, 0.2)
    if learn:
        e.learn_one("k", x, 0.3)
    else:
        e.step_one("k", x)
    again = e.state_bytes("k")
    e.set_state_bytes("k2", again)
    assert e.state_bytes("k2") == again
    if learn:
        e.learn_state(again, x, 0.3)
    else:
        e.step_state(again, x)
    return "works"


def _use_forecaster(path: str, blob: bytes) -> str:
    from streamlstm import Forecaster

    f = Forecaster.from_bytes(blob)
    x = np.full(f.n_features, 0.3) if f.n_features else None
    xs = None if x is None else [x] * f.horizon
    keys = [*f.keys[:3], "fresh"]
    for k in keys:
        f.forecast(k, xs)
        f.learn_one(1.5, x, k)
    out = f.to_bytes()
    twin = Forecaster.from_bytes(out)
    assert twin.to_bytes() == out, "a loaded forecaster does not round-trip"
    for k in keys:
        twin.learn_one(1.25, x, k)
        f.learn_one(1.25, x, k)
        assert np.array_equal(twin.forecast(k, xs), f.forecast(k, xs), equal_nan=True), "a reloaded forecaster differs"
    return "works"


def _use_checkpoint(path: str, blob: bytes, csv: bytes) -> str:
    from streamlstm.adapters import cli
    from streamlstm.adapters._csvio import CliError

    with cli.run.make_context("run", ["-", "--load", path, "--target", "temp", "--quiet"]) as ctx:
        opts = dict(ctx.params)
    opts["input"] = io.BytesIO(csv)
    try:
        cli._run(opts, set(), stream=io.StringIO())
    except CliError as exc:
        assert exc.code == 2 and "internal" not in str(exc), str(exc)
        return "refused: " + str(exc)
    return "works"


def main() -> None:
    from streamlstm import FormatError, KeyedLSTM, OnlineLSTM

    manifest = json.loads(Path(sys.argv[1]).read_text())
    csv = Path(manifest["csv"]).read_bytes()
    base = OnlineLSTM.from_bytes(Path(manifest["state_model"]).read_bytes())
    engines = {False: KeyedLSTM(base.copy()), True: KeyedLSTM(base.copy(), learn=True)}
    for path, fmt in manifest["warmup"]:  # compile/load every kernel before the limit is set
        blob = Path(path).read_bytes()
        _run_one(fmt, path, blob, engines, csv)
    base_rss = _maxrss()
    biggest = max(c["size"] for c in manifest["cases"])
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_size() + 20 * biggest + 400 * 2 ** 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    print(json.dumps({"base_rss": base_rss}), flush=True)
    for i, case in enumerate(manifest["cases"]):
        print(f"BEGIN {i}", flush=True)
        before = _maxrss()
        blob = Path(case["path"]).read_bytes()
        try:
            outcome = _run_one(case["format"], case["path"], blob, engines, csv)
        except FormatError as exc:
            outcome = "refused: " + str(exc)
        except Exception as exc:  # any other failure is reported to the parent, which fails the test
            outcome = f"BAD {type(exc).__name__}: {exc} | {traceback.format_exc()[-1500:]}"
        print(json.dumps({"i": i, "outcome": outcome, "rss_growth": _maxrss() - before}), flush=True)


def _run_one(fmt: str, path: str, blob: bytes, engines: dict, csv: bytes) -> str:
    if fmt == "model":
        return _use_model(path, blob)
    if fmt == "keyed":
        return _use_keyed(path, blob)
    if fmt == "state":
        return _use_state_bytes(path, blob, engines)
    if fmt == "forecaster":
        return _use_forecaster(path, blob)
    return _use_checkpoint(path, blob, csv)


def _vm_size() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * resource.getpagesize()


if __name__ == "__main__":
    main()
