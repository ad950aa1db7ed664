"""Helpers for the Flink plumbing tests: an event-file writer and scratch engines.

The engines are NOT a feature: stand-ins for the core's keyed engine (see
streamlstm.adapters.flink.load_core_engine, file adapters/flink.py), with its interface:

    step(state: bytes | None, time: str, values: tuple[float, ...]) -> (bytes, prediction, error)

``running_mean_engine`` predicts the running mean of the key's past values (0.0 first) and
returns error = value - prediction. It compiles its update with numba (exercises
NUMBA_CACHE_DIR in the workers) and checks that the state comes back as ``bytes``.
Optionally it fails once, after ``fail_at`` events and only once a checkpoint is complete
(``*/chk-*/_metadata`` under ``checkpoint_dir``), creating ``marker`` so it fails only once.
"""

import glob
import os
import random
import struct
import time

from numba import njit

_STATE = struct.Struct("<qd")  # n, mean


@njit(cache=True)
def _update(n, mean, v):
    n1 = n + 1
    return n1, mean + (v - mean) / n1


def write_events(path, n, n_keys, seed=0):
    """CSV "key,time,value" lines; returns the rows as (key, time_str, value_float)."""
    rng = random.Random(seed)
    rows = []
    with open(path, "w") as f:
        for i in range(n):
            key = f"k{rng.randrange(n_keys)}"
            v = round(rng.uniform(-1.0, 1.0), 6)
            rows.append((key, str(i), v))
            f.write(f"{key},{i},{v!r}\n")
    return rows


def reference(rows):
    """Expected output lines for input rows (key, time, value), in input order."""
    acc = {}
    out = []
    for key, t, v in rows:
        n, mean = acc.get(key, (0, 0.0))
        out.append(f"{key},{t},{mean!r},{v - mean!r}")
        n1 = n + 1
        acc[key] = (n1, mean + (v - mean) / n1)
    return out


class RunningMean:
    def __init__(self, fail_at=0, marker="", checkpoint_dir=""):
        self.fail_at = int(fail_at)
        self.marker = marker
        self.checkpoint_dir = checkpoint_dir
        self.seen = 0

    def _maybe_fail(self):
        self.seen += 1
        if not self.marker or self.seen < self.fail_at or os.path.exists(self.marker):
            return
        if not glob.glob(os.path.join(self.checkpoint_dir, "*", "chk-*", "_metadata")):
            time.sleep(0.002)  # let a checkpoint complete first (barriers pass between events)
            return
        open(self.marker, "w").close()
        raise RuntimeError("injected failure (flink_test_engines)")

    def step(self, state, t, values):
        self._maybe_fail()
        if state is None:
            n, mean = 0, 0.0
        else:
            if not isinstance(state, bytes):
                raise TypeError(f"state came back as {type(state).__name__}, not bytes")
            n, mean = _STATE.unpack(state)
        v = values[0]
        n1, mean1 = _update(n, mean, v)
        return _STATE.pack(n1, mean1), mean, v - mean


def running_mean_engine(fail_at="0", marker="", checkpoint_dir=""):
    return RunningMean(fail_at, marker, checkpoint_dir)
