"""Bandit policies: thin objects that hold additive sums and derived factors and call kernels.

Every policy has the same verbs: ``choose_one(x)``, ``choose_many(X)``, ``scores(X)``,
``propensities(X)``, ``learn_one(arm, x, reward)``, ``learn_many(arms, X, rewards)``,
``merge(other)``, ``state()`` / ``from_state(state)``, ``add_arm()`` and ``retire_arm(arm)``,
and ``forget_many(arms, X, rewards)``, which takes learned rows out of the sums again (not VW).
Inputs are validated here, once; kernels trust their arrays.

The learned state is a sum over events (plus, with decay, the event time it refers to), so two
policies that learned disjoint parts of a stream merge into the policy that learned all of it.
``learn_many`` adds its rows to the sums one after another, so a sequence of events learned in
any split into calls gives the same sums bit for bit; with ``half_life_ms`` too, since the
sums' reference time moves by whole half-lives at the row that crosses one (a power of two,
exact for a whole-number half-life) and each row is weighed against the reference in force
at that row (``bandit.kernels.decay``).
Inverses and factors are derived from the sums when the state changes and are never part of
the state; between refactorizations the per-event path updates them in O(d^2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bandit.policies.bart import Bart
from bandit.policies.base import Policy, is_vw
from bandit.policies.beta import _BETA_NODES as _BETA_NODES
from bandit.policies.beta import _BETA_PIECE_SDS as _BETA_PIECE_SDS
from bandit.policies.beta import _BETA_WEIGHTS as _BETA_WEIGHTS
from bandit.policies.beta import BetaTS
from bandit.policies.hybrid import HybridLinUCB
from bandit.policies.kinds import from_state
from bandit.policies.linear import _GL_NODES as _GL_NODES
from bandit.policies.linear import _GL_WEIGHTS as _GL_WEIGHTS
from bandit.policies.linear import _RADIUS as _RADIUS
from bandit.policies.linear import _STEPS as _STEPS
from bandit.policies.linear import EpsilonGreedy, LinTS, LinUCB

if TYPE_CHECKING:
    from bandit.policies.vw import VWPolicy

__all__ = [
    "Bart",
    "BetaTS",
    "EpsilonGreedy",
    "HybridLinUCB",
    "LinTS",
    "LinUCB",
    "Policy",
    "VWPolicy",
    "from_state",
    "is_vw",
]


def __getattr__(name: str) -> Any:
    # VWPolicy is imported on first use, so that importing this package does not load
    # vowpalwabbit; bandit.policies.vw imports only bandit.policies.base, never this module's names.
    if name == "VWPolicy":
        from bandit.policies.vw import VWPolicy

        return VWPolicy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(globals().keys() | {"VWPolicy"})
