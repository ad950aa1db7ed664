"""Write a synthetic multi-sensor CSV (for the `streamlstm` command line examples).

Columns: ``time`` (ISO hour), ``sensor_id``, ``humidity``, ``pressure``, ``temp``. Each
sensor has its own daily cycle; the temperature follows the humidity with a 3-hour lag
plus the pressure, so a stateful model that remembers the last hours does better than
one that only sees the current row.

    python examples/make_sensor_csv.py --rows 2000 --sensors 4 > sensors.csv
    python examples/make_sensor_csv.py --rows 500 --delay 0.01 | streamlstm run --target temp --key sensor_id
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from datetime import datetime, timedelta, timezone


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1000, help="hours (rows per sensor)")
    ap.add_argument("--sensors", type=int, default=3, help="number of sensors (interleaved)")
    ap.add_argument("--start", type=int, default=0, help="first hour (continue a previous file)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--missing", type=float, default=0.02, help="fraction of empty temperatures (no label)")
    ap.add_argument("--bad", type=int, default=0, help="bad rows to slip in (humidity 'fault', not a number)")
    ap.add_argument("--no-temp", action="store_true", help="leave the temp column out (inference input)")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds between rows, flushed: a live feed")
    a = ap.parse_args()

    rng = random.Random(a.seed)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    phase = [rng.uniform(0, 2 * math.pi) for _ in range(a.sensors)]
    level = [rng.uniform(15, 25) for _ in range(a.sensors)]
    bad_at = set(rng.sample(range(a.rows * a.sensors), min(a.bad, a.rows * a.sensors)))
    out = sys.stdout
    out.write("time,sensor_id,humidity,pressure" + ("" if a.no_temp else ",temp") + "\n")

    def humidity(s: int, h: int) -> float:
        return 60 + 15 * math.sin(2 * math.pi * h / 24 + phase[s])

    try:
        for h in range(a.start, a.start + a.rows):
            stamp = (t0 + timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%SZ")
            for s in range(a.sensors):
                i = (h - a.start) * a.sensors + s
                hum = humidity(s, h) + rng.gauss(0, 1.0)
                pres = 1013 + 8 * math.sin(2 * math.pi * h / 170 + s) + rng.gauss(0, 0.5)
                temp = level[s] - 0.25 * (humidity(s, h - 3) - 60) + 0.3 * (pres - 1013) + rng.gauss(0, 0.3)
                hum_text = "fault" if i in bad_at else f"{hum:.2f}"
                row = f"{stamp},s{s},{hum_text},{pres:.2f}"
                if not a.no_temp:
                    row += "," + ("" if rng.random() < a.missing else f"{temp:.2f}")
                out.write(row + "\n")
                if a.delay:
                    out.flush()
                    time.sleep(a.delay)
        out.flush()
    except BrokenPipeError:  # the reader stopped (e.g. `| head`)
        sys.stderr.close()


if __name__ == "__main__":
    main()
