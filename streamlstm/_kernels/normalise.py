"""Online standardisation: Welford statistics in F, the network's inputs and targets from
raw values, and outputs back in the target's units."""

from __future__ import annotations

import math

import numpy as np

from ._jit import jit
from .layout import (
    I_FOUT,
    I_FROZEN,
    I_FY,
    I_LOSS,
    I_NIN,
    I_NOUT,
    I_SLOT_OUT,
    I_STDX,
    I_STDY,
    INPUT_LIMIT,
    LOSS_CE,
)


@jit
def scale_of(F, base, n_feat, j):
    """Running standard deviation of feature j, or 1 while it is not yet defined.

    Statistics block at F[base:]: counts (n_feat), means (n_feat), M2 sums (n_feat).
    """
    n = F[base + j]
    if n < 2.0:
        return 1.0
    var = F[base + 2 * n_feat + j] / n
    if var > 0.0 and var < np.inf:
        return math.sqrt(var)
    return 1.0


@jit
def welford(F, base, n_feat, v, j):
    """Welford's update of feature j's count, mean and M2 with value v.

    When the mean or M2 would overflow, one side of the update is absurd (|v| or the
    mean beyond about 1e154): the statistics keep the side of smaller magnitude. A value
    far above the mean is left out (it is still fed to the network, clipped); a mean far
    above the value (an absurd first reading) is dropped and the statistics restart at v.
    Either way they stay finite and go on adapting after one absurd reading.
    """
    n = F[base + j] + 1.0
    mean = F[base + n_feat + j]
    delta = v - mean
    new_mean = mean + delta / n
    new_m2 = F[base + 2 * n_feat + j] + delta * (v - new_mean)
    if np.isfinite(new_mean) and np.isfinite(new_m2):
        F[base + j] = n
        F[base + n_feat + j] = new_mean
        F[base + 2 * n_feat + j] = new_m2
    elif abs(v) < abs(mean):
        F[base + j] = 1.0
        F[base + n_feat + j] = v
        F[base + 2 * n_feat + j] = 0.0


@jit
def standardise(F, base, n_feat, v, j):
    return (v - F[base + n_feat + j]) / scale_of(F, base, n_feat, j)


@jit
def take_inputs(x, F, I, fx, add, xs):
    """The network's inputs for raw input x into xs[:n_in]: x first enters the input
    statistics at F[fx:] (when standardising and ``add``), then each value is
    standardised and clipped to ±INPUT_LIMIT. Shared by every forward path."""
    n_in = I[I_NIN]
    if I[I_STDX] and add and not I[I_FROZEN]:
        for k in range(n_in):
            welford(F, fx, n_in, x[k], k)
    for k in range(n_in):
        v = standardise(F, fx, n_in, x[k], k) if I[I_STDX] else x[k]
        xs[k] = min(max(v, -INPUT_LIMIT), INPUT_LIMIT)


@jit
def take_target(y, F, I, ys):
    """The network's target for raw target y into ys: a class index for cross-entropy;
    else y first enters the target statistics (when standardising), then each value is
    standardised and clipped to ±INPUT_LIMIT. Shared by every labelling path."""
    n_out = I[I_NOUT]
    if I[I_LOSS] == LOSS_CE:
        ys[0] = y[0]
        return
    fy = I[I_FY]
    for m in range(n_out):
        if I[I_STDY]:
            if not I[I_FROZEN]:
                welford(F, fy, n_out, y[m], m)
            v = standardise(F, fy, n_out, y[m], m)
        else:
            v = y[m]
        ys[m] = min(max(v, -INPUT_LIMIT), INPUT_LIMIT)


@jit
def emit_output(R, F, I, slot_base):
    """The slot's raw output in target units (softmax probabilities for cross-entropy)
    into F's output field; returns the first."""
    n_out = I[I_NOUT]
    src = slot_base + I[I_SLOT_OUT]
    dst = I[I_FOUT]
    if I[I_LOSS] == LOSS_CE:
        zmax = R[src]
        for m in range(1, n_out):
            zmax = max(zmax, R[src + m])
        total = 0.0
        for m in range(n_out):
            F[dst + m] = math.exp(R[src + m] - zmax)
            total += F[dst + m]
        for m in range(n_out):
            F[dst + m] /= total
    else:
        fy = I[I_FY]
        for m in range(n_out):
            if I[I_STDY]:
                F[dst + m] = F[fy + n_out + m] + scale_of(F, fy, n_out, m) * R[src + m]
            else:
                F[dst + m] = R[src + m]
    return F[dst]
