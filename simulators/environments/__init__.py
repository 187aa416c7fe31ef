"""Simulated environments with a known ground truth, for regret and for checking estimators.

Every environment draws contexts ``X`` (n, dim) whose first column is the intercept 1.0, knows
the true click probability of every arm for every context (``expected_rewards`` (n, n_arms)),
and samples Bernoulli clicks from it. Two options are shared by all of them:

- ``drift_steps``: preferences move linearly (in logit space) from a start truth at step 0 to an
  end truth at step ``drift_steps`` and stay there, so the best arm for a context changes.
- ``new_arm_at``: the last arm only becomes eligible at that step; ``eligible(step)`` says which
  arms may be chosen.

Everything is vectorised over rows: one NumPy expression per batch, never a loop per event.
"""

from simulators.environments.base import Environment
from simulators.environments.registry import ENVIRONMENT_NAMES, make_environment
from simulators.environments.supervised import SupervisedBandit, gaussian_blobs
from simulators.environments.synthetic import Artwork, Email, LinearLogistic

__all__ = [
    "ENVIRONMENT_NAMES",
    "Artwork",
    "Email",
    "Environment",
    "LinearLogistic",
    "SupervisedBandit",
    "gaussian_blobs",
    "make_environment",
]
