"""Gradient clipping and the optimizers (SGD with momentum, Adam, RMSprop), in place on P."""

from __future__ import annotations

import math

import numpy as np

from ._jit import jit
from .layout import (
    F_B1,
    F_B1T,
    F_B2,
    F_B2T,
    F_CLIP,
    F_EPS,
    F_GLIMIT,
    F_GNORM,
    F_L2,
    F_LR,
    F_MOM,
    F_RHO,
    I_NP,
    I_NSKIP,
    I_OPT,
    I_OPT_STEPS,
    OPT_ADAM,
    OPT_RMSPROP,
)


@jit
def penalised_sum_squares(grad, theta, l2):
    """Σ (grad + l2·theta)², as 16 column sums then their total: a fixed order of roundings
    that still vectorises (one long serial sum would be latency-bound)."""
    acc = np.zeros(16)
    n = grad.shape[0]
    m = n // 16
    for i in range(m):
        for j in range(16):
            g = grad[i * 16 + j] + l2 * theta[i * 16 + j]
            acc[j] += g * g
    sq = 0.0
    for k in range(m * 16, n):
        g = grad[k] + l2 * theta[k]
        sq += g * g
    for j in range(16):
        sq += acc[j]
    return sq


@jit
def optimizer_step(P, F, I):
    """Apply one update from the grad block. Skips (and counts) a non-finite gradient."""
    n = I[I_NP]
    l2 = F[F_L2]
    sq = penalised_sum_squares(P[n:2 * n], P[:n], l2)
    if not sq <= F[F_GLIMIT]:  # also catches NaN; the limit keeps moments finite in the dtype
        I[I_NSKIP] += 1
        F[F_GNORM] = sq
        return False
    norm = math.sqrt(sq)
    F[F_GNORM] = norm
    scale = 1.0
    if F[F_CLIP] > 0.0 and norm > F[F_CLIP]:
        scale = F[F_CLIP] / norm
    lr, eps = F[F_LR], F[F_EPS]
    opt = I[I_OPT]
    # separate views (not offsets into P) let LLVM prove the blocks apart and vectorise
    theta, grad, m1, m2 = P[:n], P[n:2 * n], P[2 * n:3 * n], P[3 * n:4 * n]
    if opt == OPT_ADAM:
        b1, b2 = F[F_B1], F[F_B2]
        F[F_B1T] *= b1
        F[F_B2T] *= b2
        step = lr / (1.0 - F[F_B1T])
        corr2 = 1.0 / (1.0 - F[F_B2T])
        for k in range(n):
            g = (grad[k] + l2 * theta[k]) * scale
            m = b1 * m1[k] + (1.0 - b1) * g
            v = b2 * m2[k] + (1.0 - b2) * g * g
            m1[k] = m
            m2[k] = v
            theta[k] -= step * m / (math.sqrt(v * corr2) + eps)
    elif opt == OPT_RMSPROP:
        rho = F[F_RHO]
        for k in range(n):
            g = (grad[k] + l2 * theta[k]) * scale
            v = rho * m2[k] + (1.0 - rho) * g * g
            m2[k] = v
            theta[k] -= lr * g / (math.sqrt(v) + eps)
    else:
        mom = F[F_MOM]
        for k in range(n):
            g = (grad[k] + l2 * theta[k]) * scale
            m = mom * m1[k] + g
            m1[k] = m
            theta[k] -= lr * m
    I[I_OPT_STEPS] += 1
    return True
