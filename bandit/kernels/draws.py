"""The uniforms of one decision for every slot at once: ``bandit.engine.decision_draws``
(SplitMix64 over the decision's seed, the slot's salt and the column), as one kernel call for a
single decision, where NumPy would spend two dozen array operations on a few dozen numbers."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _splitmix(z):
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def slot_draws(seed, out):
    """Fill out (n_slots, width) float64: row i, column j is ``decision_draws`` of the decision
    with ``seed`` (uint64) for slot i, column j; uniforms in [0, 1)."""
    for i in range(out.shape[0]):
        salt = np.uint64(i + 1) * np.uint64(0xD1B54A32D192ED03)
        mixed = _splitmix(seed ^ salt)
        for j in range(out.shape[1]):
            z = _splitmix(mixed + np.uint64(j) * np.uint64(0x8CB92BA72F3D8DD7))
            out[i, j] = np.float64(z >> np.uint64(11)) * 2.0**-53
