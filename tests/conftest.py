import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """All test randomness comes from here: fixed seed, fresh per test."""
    return np.random.default_rng(20261123)
