"""Subscribers whose responses are correlated across sends: the same list mailed again and
again, each subscriber with persistent propensities, so that whoever opens or clicks one
email is likely to do so for the next. The ground truth for the report's lift intervals.

Subscriber i draws, once, a base rate per outcome type, ``p_ik ~ Beta(a_k, b_k)`` (a_k + b_k
small: propensities spread widely, the intra-subscriber correlation of two sends is
``1 / (a_k + b_k + 1)``). The holdout gets the default arms, at rate ``p_ik``; personalized
subscribers get a fixed policy (a fixed arm effect), at rate ``p_ik + effect_k (1 - p_ik)``
(``effect_k`` in [0, 1]: the share of the non-responders the personalized email wins over).
Every send mails the whole list and each decision's outcome of type k is Bernoulli of the
subscriber's rate, independent given the rates; the reward is the click.

The true lift of type k, personalized minus holdout rate in expectation over subscribers, is
then exactly ``effect_k (1 - a_k / (a_k + b_k))`` (``true_lift``; the reward's is the
click's), whatever the holdout or the number of sends. The holdout is per subscriber, as the
engine's (``holdout_mask`` of the campaign and user id), and subject keys are the engine's
(``subject_key``), so the subscriber buckets are the ones the engine clusters by.

>>> panel = CorrelatedPanel(n=1_000, holdout=0.1)
>>> rng = np.random.default_rng(0)
>>> run = panel.draw("weekly", rng)
>>> sent = run.send(rng)
>>> sent.shape, int(run.holdout.sum()) > 0
((1000, 6), True)
>>> round(panel.true_lift("click"), 6)
0.0095
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bandit.engine.intervals import clusters_of
from bandit.engine.randomness import holdout_mask, subject_key
from bandit.errors import InvalidInputError
from bandit.models import OUTCOME_TYPES

# Per outcome type: (a, b) of the subscribers' Beta base rates, and the personalized effect.
# Opens and clicks are habits (correlation 1/6 and 1/7 between two sends of a subscriber).
DEFAULT_RATES: dict[str, tuple[float, float]] = {
    "open": (1.5, 3.5), "click": (0.3, 5.7), "conversion": (0.1, 9.9),
    "unsubscribe": (0.2, 99.8), "complaint": (0.1, 499.9), "bounce": (0.5, 99.5)}
DEFAULT_EFFECTS: dict[str, float] = {
    "open": 0.05, "click": 0.01, "conversion": 0.002, "unsubscribe": 0.0, "complaint": 0.0,
    "bounce": 0.0}
_CLICK = OUTCOME_TYPES.index("click")


@dataclass(frozen=True)
class PanelRun:
    """One population drawn from a ``CorrelatedPanel``: per subscriber the holdout flag
    ``holdout`` (n,) bool, the subscriber bucket ``clusters`` (n,) (the engine's), and the
    rate of each outcome type on this campaign ``rates`` (n, len(OUTCOME_TYPES))."""

    holdout: np.ndarray
    clusters: np.ndarray
    rates: np.ndarray

    def send(self, rng: np.random.Generator) -> np.ndarray:
        """One send to every subscriber: (n, len(OUTCOME_TYPES)) int64 outcome counts (0 or
        1); the reward of a decision is its click (``rewards``)."""
        return (rng.random(self.rates.shape) < self.rates).astype(np.int64)

    @staticmethod
    def rewards(outcomes: np.ndarray) -> np.ndarray:
        """(n,) float64: the reward of each decision of a ``send``, its click."""
        return outcomes[:, _CLICK].astype(np.float64)


class CorrelatedPanel:
    """``n`` subscribers (user ids ``u0`` ...) mailed repeatedly, ``holdout`` of them held out
    (per subscriber, by the engine's hash), Beta base rates ``rates`` and personalized
    effects ``effects`` per outcome type (the module docstring; defaults ``DEFAULT_*``)."""

    def __init__(self, n: int = 10_000, holdout: float = 0.1,
                 rates: dict[str, tuple[float, float]] | None = None,
                 effects: dict[str, float] | None = None) -> None:
        rates = DEFAULT_RATES if rates is None else rates
        effects = DEFAULT_EFFECTS if effects is None else effects
        if n < 2:
            raise InvalidInputError(f"n: at least 2 subscribers, got {n}")
        if not 0 < holdout < 1:
            raise InvalidInputError(f"holdout: a share in (0, 1), got {holdout}")
        for kind in OUTCOME_TYPES:
            a, b = rates.get(kind, (0.0, 0.0))
            if not (a > 0 and b > 0):
                raise InvalidInputError(f"rates.{kind}: Beta parameters (a, b) > 0, got "
                                        f"{rates.get(kind)}")
            if not 0 <= effects.get(kind, -1.0) <= 1:
                raise InvalidInputError(f"effects.{kind}: a share in [0, 1], got "
                                        f"{effects.get(kind)}")
        self.n, self.holdout = n, holdout
        self.rates, self.effects = dict(rates), dict(effects)
        self.users = [f"u{i}" for i in range(n)]
        self.subjects = [subject_key(u) for u in self.users]
        self.clusters = clusters_of(self.subjects)

    def true_lift(self, kind: str) -> float:
        """Personalized minus holdout rate of outcome type ``kind`` in expectation over
        subscribers: ``effect (1 - a / (a + b))``."""
        a, b = self.rates[kind]
        return self.effects[kind] * (1 - a / (a + b))

    def draw(self, campaign: str, rng: np.random.Generator) -> PanelRun:
        """A population for campaign ``campaign``: its holdout (the engine's per-subscriber
        hash of campaign and user id) and every subscriber's rates, drawn from ``rng``."""
        held = holdout_mask(campaign, self.users, self.holdout)
        a = np.array([self.rates[k][0] for k in OUTCOME_TYPES])
        b = np.array([self.rates[k][1] for k in OUTCOME_TYPES])
        effect = np.array([self.effects[k] for k in OUTCOME_TYPES])
        base = rng.beta(a, b, size=(self.n, len(OUTCOME_TYPES)))
        rates = np.where(held[:, None], base, base + effect * (1 - base))
        return PanelRun(holdout=held, clusters=self.clusters, rates=rates)
