"""Every policy family by its state's ``kind``, and ``from_state``, which dispatches on it.

VW is registered by module name and imported on first use, so that reading the other kinds
(and importing this package) never loads vowpalwabbit.
"""

from __future__ import annotations

import importlib
from typing import Any

from bandit.errors import IncompatibleStateError
from bandit.policies.bart import Bart
from bandit.policies.base import VW_KIND, Policy, Rng
from bandit.policies.beta import BetaTS
from bandit.policies.hybrid import HybridLinUCB
from bandit.policies.linear import EpsilonGreedy, LinTS, LinUCB

_KINDS: dict[str, type[Policy]] = {
    cls.kind: cls for cls in (Bart, BetaTS, EpsilonGreedy, HybridLinUCB, LinTS, LinUCB)
}
# Kinds whose module is imported when a state of theirs is first read: kind -> (module, class).
_LAZY_KINDS = {VW_KIND: ("bandit.policies.vw", "VWPolicy")}


def policy_class(kind: Any) -> type[Policy]:
    """The policy class of a state's ``kind``; IncompatibleStateError for an unknown kind."""
    if kind in _LAZY_KINDS and kind not in _KINDS:
        module, name = _LAZY_KINDS[kind]
        _KINDS[kind] = getattr(importlib.import_module(module), name)
    if kind not in _KINDS:
        known = sorted(_KINDS.keys() | _LAZY_KINDS.keys())
        raise IncompatibleStateError(f"unknown policy kind {kind!r}; expected one of {known}")
    return _KINDS[kind]


def from_state(state: dict[str, Any], *, rng: Rng = None) -> Policy:
    """Rebuild whichever policy ``state`` describes (dispatch on its ``kind``)."""
    kind = state.get("kind") if isinstance(state, dict) else None
    return policy_class(kind).from_state(state, rng=rng)
