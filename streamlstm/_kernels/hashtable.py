"""An int64 -> row hash table for integer keys, searched by compiled code.

Open addressing with linear probing over two int64 arrays of a power-of-two size:
TK holds keys, TR rows (EMPTY, TOMB for a deleted entry, else the key's row).
"""

from __future__ import annotations

import numpy as np

from ._jit import jit

EMPTY, TOMB = -1, -2


@jit
def key_slot(key, mask):
    """Home slot of an int64 key: the splitmix64 finaliser, masked."""
    z = np.uint64(key)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.int64(z & np.uint64(mask))


@jit
def table_find(TK, TR, key):
    """Slot of key, or -1."""
    mask = TK.shape[0] - 1
    s = key_slot(key, mask)
    while True:
        r = TR[s]
        if r == EMPTY:
            return -1
        if r >= 0 and TK[s] == key:
            return s
        s = (s + 1) & mask


@jit
def table_lookup(TK, TR, keys, rows):
    """rows[e] = row of keys[e], or -1; returns the number of misses."""
    miss = 0
    for e in range(keys.shape[0]):
        s = table_find(TK, TR, keys[e])
        if s < 0:
            rows[e] = -1
            miss += 1
        else:
            rows[e] = TR[s]
    return miss


@jit
def table_insert(TK, TR, keys, rows):
    """Insert keys (absent) with their rows; returns how many tombstones were reused."""
    mask = TK.shape[0] - 1
    reused = 0
    for e in range(keys.shape[0]):
        s = key_slot(keys[e], mask)
        while TR[s] >= 0:
            s = (s + 1) & mask
        if TR[s] == TOMB:
            reused += 1
        TK[s] = keys[e]
        TR[s] = rows[e]
    return reused


@jit
def table_delete(TK, TR, keys):
    """Delete keys (present ones); returns how many were."""
    n = 0
    for e in range(keys.shape[0]):
        s = table_find(TK, TR, keys[e])
        if s >= 0:
            TR[s] = TOMB
            n += 1
    return n


@jit
def table_rebuild(TK, TR, NK, NR):
    """Move every live entry of (TK, TR) into the empty table (NK, NR)."""
    mask = NK.shape[0] - 1
    for s in range(TK.shape[0]):
        r = TR[s]
        if r >= 0:
            t = key_slot(TK[s], mask)
            while NR[t] != EMPTY:
                t = (t + 1) & mask
            NK[t] = TK[s]
            NR[t] = r
