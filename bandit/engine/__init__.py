"""The engine: campaigns, decisions, learning, partition states, snapshots and reports, with
``Engine`` (``facade``) the one object the service, the stream worker and the simulators hold.

Modules, one reason to change each: ``campaign`` (a campaign's slots, arms, rules and
policies), ``encoding`` (context -> rows), ``randomness`` (decision ids, the consent bit,
draws, the holdout hash), ``decide`` (the single-row and columnar decision paths), ``output``
(decision JSON), ``learn`` (closed decisions -> policies and tallies), ``tally`` (the reward
sums reports read), ``intervals`` (lift variance clustered by subscriber, fixed-horizon and
always-valid intervals), ``guardrails`` (the sequential test and the kill switch), ``merge``
(partition states), ``snapshot``, ``report``, ``join`` and ``windows`` (the attribution join),
``decisionlog`` (what a decide call logs), ``pseudonyms`` (subscribers' keyed pseudonyms and
their secrets), ``ledger`` (what was learned, kept for erasure) and ``erase`` (taking it out of
the policies and tallies again).
"""

from bandit.engine.campaign import _rule_holds
from bandit.engine.decide import RequestColumns
from bandit.engine.facade import Engine
from bandit.engine.join import (
    ERASED,
    MAX_PENDING,
    OVER_CAPACITY,
    Closed,
    Joiner,
    JoinResult,
    subject_key,
)
from bandit.engine.learn import encode_slot_contexts
from bandit.engine.output import DecisionBatch, OneDecision, SlotColumns
from bandit.engine.randomness import (
    _in_holdout,
    decided_with_consent,
    decision_draws,
    decision_seeds,
    holdout_mask,
    slot_draws,
    strip_consentless,
)
from bandit.engine.tally import _add_grouped, _Tally

__all__ = [
    "ERASED",
    "MAX_PENDING",
    "OVER_CAPACITY",
    "Closed",
    "DecisionBatch",
    "Engine",
    "JoinResult",
    "Joiner",
    "OneDecision",
    "RequestColumns",
    "SlotColumns",
    "_Tally",
    "_add_grouped",
    "_in_holdout",
    "_rule_holds",
    "decided_with_consent",
    "decision_draws",
    "decision_seeds",
    "encode_slot_contexts",
    "holdout_mask",
    "slot_draws",
    "strip_consentless",
    "subject_key",
]
