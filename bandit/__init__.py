"""Contextual multi-armed bandit engine: policies with exact propensities, Numba kernels."""

from bandit.errors import BanditError, IncompatibleStateError, InvalidInputError, UnknownArmError

__all__ = ["BanditError", "IncompatibleStateError", "InvalidInputError", "UnknownArmError"]
