"""A streamlstm model in an Apache Flink job (PyFlink DataStream API), see docs/flink.md.

With arguments, this is the job itself (the same as ``python -m streamlstm.adapters.flink``),
e.g. for a cluster::

    flink run -pyexec /opt/streamlstm-venv/bin/python -py examples/flink_job.py \\
        --input /data/events.csv --model model.slstm --embed-model --output /data/out

Without arguments it is a local demo (run it from the Flink venv, .ci/flink-setup.sh):
it trains a small model on a few sensors, saves it, writes an event file for other
sensors, serves the model in a local Flink job and prints the mean absolute error::

    /work/venv-flink/bin/python examples/flink_job.py
"""

from __future__ import annotations

import math
import os
import random
import sys
import tempfile


def _sensor(rng: random.Random, phase: float):
    """Hourly (x1 = humidity-like cycle, x2 = noise) -> target that lags x1 by 3 hours."""
    hist = [0.0, 0.0, 0.0]
    t = 0
    while True:
        x1 = math.sin(2 * math.pi * (t + phase) / 24) + rng.gauss(0, 0.1)
        x2 = rng.gauss(0, 1)
        hist.append(x1)
        y = 0.8 * hist[-4] + 0.1 * x2
        yield x1, x2, y
        t += 1


def demo() -> int:
    from streamlstm import OnlineLSTM
    from streamlstm.adapters.flink import read_output, run_csv_job

    rng = random.Random(0)
    work = tempfile.mkdtemp(prefix="streamlstm-flink-demo-")
    model_path = os.path.join(work, "model.slstm")
    model = OnlineLSTM(n_inputs=2, hidden=16, lr=3e-3, seed=0)
    for _s in range(4):  # train on 4 sensors, one after the other, state reset in between
        model.reset_state()
        gen = _sensor(rng, phase=rng.uniform(0, 24))
        for _ in range(1500):
            x1, x2, y = next(gen)
            model.learn_one([x1, x2], y)
    model.save(model_path)

    events = os.path.join(work, "events.csv")
    gens = {f"sensor-{i}": _sensor(rng, rng.uniform(0, 24)) for i in range(10)}
    with open(events, "w") as f:
        for t in range(300):
            for key, gen in gens.items():
                x1, x2, y = next(gen)
                f.write(f"{key},{t},{x1:.6f},{x2:.6f},{y:.6f}\n")

    out = os.path.join(work, "out")
    print(f"serving {model_path} over {events} with Flink ...", flush=True)
    run_csv_job([events], out, model_path, work_dir=work, checkpoint_interval_ms=1000)
    rows = read_output(out)
    errors = [abs(float(r.split(",")[3])) for r in rows if int(r.split(",")[1]) >= 24]
    print("\n".join(rows[:5]))
    print(f"{len(rows)} rows; mean absolute error after the first day: {sum(errors) / len(errors):.3f} "
          f"(target std ~0.57); output in {out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1:
        from streamlstm.adapters.flink import main

        sys.exit(main())
    sys.exit(demo())
