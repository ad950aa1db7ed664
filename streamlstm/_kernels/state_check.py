"""The check every recurrent state passes where it enters a model (file, bytes, assignment).

Compiled code uses some of a state's numbers as indices: a pending label's class index
(cross-entropy), the step counter that picks a ring slot. One value out of range there
reads or writes outside the buffers, so states from outside are checked here first, in
one compiled pass over any number of rows (a state swap costs well under a microsecond).
"""

from __future__ import annotations

import numpy as np

from ._jit import jit

# spec: what the check needs to know of the layout (one array: one argument to dispatch)
S_RING, S_K2, S_SLOT, S_FLAG, S_Y, S_NOUT, S_CE, S_SIZE, S_LIMIT = range(9)

# fault codes, returned as code + 8 * (row * width + position)
MAX_COUNTER = 1 << 62  # far beyond any stream, far from wrapping around
# Counters from files and bytes get half of that, so that a stream loaded at the limit can
# still take 2**61 steps before a swap of its own state would refuse it.
MAX_STORED_COUNTER = 1 << 61
OK, NOT_FINITE, BAD_FLAG, BAD_CLASS, BAD_COUNTER = 0, 1, 2, 3, 4
_MESSAGES = {
    NOT_FINITE: "holds a non-finite value at position {pos}: {value!r}",
    BAD_FLAG: "holds a label flag of {value!r} at position {pos} (0 or 1 allowed)",
    BAD_CLASS: "holds a pending label {value!r} at position {pos} that is not a class index in [0, {n_out})",
    BAD_COUNTER: "has step counter {pos} = {value!r} (an integer in [0, {limit}] allowed)",
}


def spec_of(ring: int, k2: int, slot: int, flag: int, y: int, n_out: int, ce: bool, size: int) -> np.ndarray:
    """The layout facts of a model, packed for :func:`first_fault`."""
    return np.array([ring, k2, slot, flag, y, n_out, int(ce), size, MAX_COUNTER], dtype=np.int64)


@jit
def _count_exponent_all_ones(u, mask):
    bad = 0
    for k in range(u.shape[0]):
        bad += (u[k] & mask) == mask
    return bad


@jit
def all_finite(v):
    """Whether every value of the contiguous float array v is finite: NaN and ±inf are the
    values whose exponent bits are all ones. An integer count vectorises (a float test with
    an early exit does not), so a state swap stays cheap."""
    if v.itemsize == 8:
        return _count_exponent_all_ones(v.view(np.uint64), np.uint64(0x7FF0000000000000)) == 0
    return _count_exponent_all_ones(v.view(np.uint32), np.uint32(0x7F800000)) == 0


@jit
def first_fault(S, C, spec):
    """First fault in states ``S`` (rows of a state buffer, or of ``h, c`` only when the
    width is below the ring) and counters ``C`` (rows of ``[t, since]``, may be empty).
    Returns ``code + 8 * (row * width + position)``, 0 when all is well."""
    n, width = S.shape
    for r in range(n):
        if not all_finite(S[r]):
            for k in range(width):
                if not np.isfinite(S[r, k]):
                    return NOT_FINITE + 8 * (r * width + k)
    if C.shape[0] == n:
        for r in range(n):
            for k in range(C.shape[1]):
                if C[r, k] < 0 or C[r, k] > spec[S_LIMIT]:
                    return BAD_COUNTER + 8 * (r * C.shape[1] + k)
    ring, k2, slot = spec[S_RING], spec[S_K2], spec[S_SLOT]
    if width < ring + k2 * slot:
        return OK  # h and c only
    n_out = spec[S_NOUT]
    for r in range(n):
        for s in range(k2):
            base = ring + s * slot
            f = S[r, base + spec[S_FLAG]]
            if f != 0.0 and f != 1.0:
                return BAD_FLAG + 8 * (r * width + base + spec[S_FLAG])
            if spec[S_CE] and f != 0.0:
                v = S[r, base + spec[S_Y]]
                if not (v >= 0.0 and v < n_out and v == np.floor(v)):
                    return BAD_CLASS + 8 * (r * width + base + spec[S_Y])
    return OK


def describe_fault(fault: int, S: np.ndarray, C: np.ndarray, n_out: int, what: str, limit: int = MAX_COUNTER) -> str:
    """The message for a fault of :func:`first_fault`, naming the row and the position."""
    code, where = fault % 8, fault // 8
    width = C.shape[1] if code == BAD_COUNTER else S.shape[1]
    row, pos = divmod(where, width)
    value = (C if code == BAD_COUNTER else S)[row, pos]
    value = value.item()
    label = what if S.shape[0] == 1 else f"{what} (row {row})"
    return f"{label} " + _MESSAGES[code].format(pos=pos, value=value, n_out=n_out, limit=limit)
