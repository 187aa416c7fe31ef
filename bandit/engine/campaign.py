"""A campaign as the engine holds it: its slots (arm ids <-> indices, encoders, policy and
context-free fallback, report tallies), built from its spec; arms added and retired; the
eligibility rules; the checks of an event against the campaigns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from bandit.engine.encoding import _Encoder
from bandit.engine.tally import GROUPS, _Clustered, _Outcomes, _Tally, clustered_groups
from bandit.errors import ConflictError, InvalidInputError, NotFoundError, UnknownArmError
from bandit.models import Arm, CampaignSpec, EligibilityRule, SlotSpec, check_arm_features
from bandit.models.reports import Group, PauseReason
from bandit.policies import Bart, BetaTS, EpsilonGreedy, HybridLinUCB, LinTS, LinUCB, Policy
from bandit.wire import Joined
from bandit.wire.protocols import DecisionLike, OutcomeLike, SendLike

# What check_event takes: an event, pydantic or msgspec, or the VW learner's joined example
# (checked as the decision it was).
Checkable = DecisionLike | SendLike | OutcomeLike | Joined

# A slot's learned state is refused beyond this many float64 numbers (256 MiB), so that one
# campaign spec cannot exhaust the server.
_MAX_STATE_NUMBERS = 32 * 2**20


def _rule_holds(rule: EligibilityRule, value: Any) -> bool:
    if value is None:
        return False
    target: Any = rule.value  # compared as it is: a TypeError says the rule cannot hold
    try:
        match rule.op:
            case "eq":
                return value == target
            case "ne":
                return value != target
            case "in":
                return value in target
            case "not_in":
                return value not in target
            case "lt":
                return value < target
            case "le":
                return value <= target
            case "gt":
                return value > target
            case _:
                return value >= target
    except TypeError:  # a string against a number: the rule cannot hold
        return False


def _state_numbers(kind: str, k: int, d: int, m: int) -> int:
    """How many float64 numbers a slot's policy keeps (sums and derived factors)."""
    match kind:
        case "beta_ts":
            return 3 * k
        case "hybrid_lin_ucb":
            p = d * m
            return p * p + 2 * k * d * p + 3 * k * d * d
        case "bart":
            p = d + m + d * m
            return 2 * p * p
        case "vw":  # VW's table: 2^18 weights of 4 float32 (times bag or cover, at most 16)
            return 2**19
        case _:
            return 2 * k * d * d


def _check_size(slot: SlotSpec, k: int, d: int, m: int) -> None:
    numbers = _state_numbers(slot.policy.kind, k, d, m)
    if numbers > _MAX_STATE_NUMBERS:
        raise InvalidInputError(
            f"slot {slot.name!r}: {slot.policy.kind} with {k} arms, {d} context columns and {m} "
            f"arm-feature columns needs {numbers * 8 / 2**20:,.0f} MiB of state; at most "
            f"{_MAX_STATE_NUMBERS * 8 / 2**20:,.0f} MiB (fewer categorical values or arms)")


def _make_policy(slot: SlotSpec, dim: int, arm_features: np.ndarray, seed: int) -> Policy:
    spec, k = slot.policy, len(slot.arms)
    rng = np.random.default_rng(seed)
    match spec.kind:
        case "beta_ts":  # context-free: it is handed a zero-width view of the context
            return BetaTS(k, alpha=spec.alpha, beta=spec.beta, dim=0,
                          half_life_ms=spec.half_life_ms, rng=rng)
        case "lin_ucb":
            return LinUCB(k, dim, alpha=spec.alpha, l2=spec.l2, epsilon=spec.epsilon,
                          half_life_ms=spec.half_life_ms, rng=rng)
        case "lin_ts":
            return LinTS(k, dim, v=spec.v, l2=spec.l2, half_life_ms=spec.half_life_ms, rng=rng)
        case "epsilon_greedy":
            return EpsilonGreedy(k, dim, epsilon=spec.epsilon, l2=spec.l2,
                                 half_life_ms=spec.half_life_ms, rng=rng)
        case "bart":
            return Bart(dim, arm_features, epsilon=spec.epsilon, l2=spec.l2,
                        half_life_ms=spec.half_life_ms, rng=rng)
        case "vw":  # imported here: only a VW slot loads vowpalwabbit
            from bandit.policies import VWPolicy

            # bag and cover are whole numbers (the spec's validator makes them ints; typed
            # float there so that JSON's 5.0 passes)
            return VWPolicy(dim, arm_features if slot.arm_features else None, n_arms=k,
                            exploration=spec.exploration, epsilon=spec.epsilon,
                            bag=int(spec.bag), cover=int(spec.cover),
                            interactions=spec.interactions, lrq=spec.lrq,
                            learning_rate=spec.learning_rate, extra_args=spec.extra_args,
                            gamma_scale=spec.gamma_scale, gamma_exponent=spec.gamma_exponent,
                            rng=rng)
        case _:
            return HybridLinUCB(dim, arm_features, alpha=spec.alpha, l2=spec.l2,
                                epsilon=spec.epsilon, half_life_ms=spec.half_life_ms, rng=rng)


@dataclass
class _Slot:
    spec: SlotSpec
    index: int  # position in the campaign
    arm_ids: list[str]
    arm_index: dict[str, int]
    encoder: _Encoder  # the slot's arm features
    conditioned: list[tuple[str, int]]  # earlier slots it conditions on, one-hot widths
    columns: list[str]  # names of the policy's input columns
    policy: Policy  # over the campaign context plus earlier slots' choices
    fallback: Policy  # context-free (intercept only): consent-less requests
    arm_tally: dict[str, _Tally] = field(default_factory=dict)
    segment_counts: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    segment_tally: dict[tuple[str, str], _Tally] = field(default_factory=dict)
    # Per (arm, group) (group: GROUPS): reward and outcomes; per segment value: outcomes.
    group_tally: dict[tuple[str, str], _Tally] = field(default_factory=dict)
    outcome_tally: dict[tuple[str, str], _Outcomes] = field(default_factory=dict)
    segment_outcomes: dict[tuple[str, str], _Outcomes] = field(default_factory=dict)
    # Per group, the slot's decisions by subscriber bucket (its reward: the slot's, clipped).
    clustered: dict[Group, _Clustered] = field(default_factory=clustered_groups)

    @property
    def default(self) -> int:
        return self.arm_index[self.spec.default_arm]


@dataclass
class _Campaign:
    spec: CampaignSpec
    context: _Encoder
    slots: list[_Slot]
    paused: bool = False
    version: int = 0
    personalized: _Tally = field(default_factory=_Tally)
    holdout: _Tally = field(default_factory=_Tally)
    outcomes: dict[str, _Outcomes] = field(default_factory=dict)  # per group (GROUPS)
    # Per group, every decision by subscriber bucket (its reward: the best over its slots):
    # what the lift intervals read (tally.clustered_lift).
    clustered: dict[Group, _Clustered] = field(default_factory=clustered_groups)
    paused_by: PauseReason | None = None  # the guardrail breach that paused it
    # ``clustered`` when a person resumed it after a guardrail pause: the guardrails test the
    # decisions since (``bandit.engine.guardrails``).
    baseline: dict[Group, _Clustered] | None = None

    def slot(self, name: str) -> _Slot:
        for s in self.slots:
            if s.spec.name == name:
                return s
        raise NotFoundError(f"campaign {self.spec.name!r}: no slot {name!r}")


def _slot_row(s: _Slot, base: np.ndarray, chosen: dict[str, int]) -> np.ndarray:
    """``slot_matrix`` of one row: the context base (dim,), then a one-hot of each
    earlier slot's chosen arm (``chosen``: slot name -> arm) that slot ``s`` conditions on."""
    if not s.conditioned:
        return base
    blocks = [base]
    for prev, width in s.conditioned:
        onehot = np.zeros(width)
        onehot[min(chosen[prev], width - 1)] = 1.0
        blocks.append(onehot)
    return np.concatenate(blocks)


def slot_matrix(s: _Slot, base: np.ndarray, chosen: dict[str, np.ndarray]) -> np.ndarray:
    """The campaign context, then a one-hot of each earlier slot this one conditions on
    (its arms at creation, plus one column for arms added later)."""
    if not s.conditioned:
        return base
    n, d = base.shape
    out = np.zeros((n, d + sum(width for _, width in s.conditioned)))
    out[:, :d] = base  # every block written in place: no per-block (n, width) temporaries
    rows = np.arange(n)
    for prev, width in s.conditioned:
        out[rows, d + np.minimum(chosen[prev], width - 1)] = 1.0
        d += width
    return out


def _rule_features(c: _Campaign) -> list[str]:
    """The features the eligibility rules of a campaign's slots read."""
    return list(dict.fromkeys(rule.feature for s in c.slots for rule in s.spec.eligibility))


def warm_up_spec() -> CampaignSpec:
    """A campaign with a slot of every policy kind whose kernels ``Engine.warm_up`` compiles
    (VW has none)."""
    kinds = ["beta_ts", "lin_ucb", "hybrid_lin_ucb", "lin_ts", "epsilon_greedy", "bart"]
    return CampaignSpec.model_validate({
        "name": "warm-up", "holdout": 0.0,
        "slots": [{"name": kind, "arms": [{"id": "a", "features": {"f": 1.0}},
                                          {"id": "b", "features": {"f": 0.0}}],
                   "default_arm": "a", "policy": {"kind": kind},
                   "arm_features": [{"kind": "numeric", "name": "f"}]} for kind in kinds]})


def _is_vw(s: _Slot) -> bool:
    """Whether the slot's policy is a VWPolicy (by its spec: no import of vowpalwabbit)."""
    return s.spec.policy.kind == "vw"


def build_campaign(spec: CampaignSpec, rng: np.random.Generator) -> _Campaign:
    """A campaign's slots from its spec, each policy seeded from ``rng``."""
    context = _Encoder(spec.context.features, spec.context.intercept, "context")
    campaign = _Campaign(spec=spec, context=context, slots=[])
    for i, s in enumerate(spec.slots):
        encoder = _Encoder(s.arm_features, intercept=False, what=f"slot {s.name!r} arm features")
        F = (encoder.encode([a.features for a in s.arms]) if s.arm_features
             else np.ones((len(s.arms), 1)))
        # An earlier slot's choice enters as a one-hot over its arms at creation plus one
        # column for arms added later, so the input width never changes.
        conditioned = [(prev, len(campaign.slot(prev).arm_ids) + 1) for prev in s.condition_on]
        columns = list(context.columns)
        for prev, _ in conditioned:
            columns += [f"{prev}={arm}" for arm in campaign.slot(prev).arm_ids]
            columns.append(f"{prev}=(added later)")
        _check_size(s, len(s.arms), len(columns), F.shape[1])
        seed = int(rng.integers(2**63))
        policy = _make_policy(s, len(columns), F, seed)
        fallback = policy if s.policy.kind == "beta_ts" else _make_policy(s, 1, F, seed + 1)
        for j in (j for j, a in enumerate(s.arms) if a.retired):
            for p in {id(policy): policy, id(fallback): fallback}.values():
                p.retire_arm(j)
        campaign.slots.append(_Slot(
            spec=s, index=i, arm_ids=[a.id for a in s.arms],
            arm_index={a.id: j for j, a in enumerate(s.arms)}, encoder=encoder,
            conditioned=conditioned, columns=columns, policy=policy, fallback=fallback))
    return campaign


def add_arm(c: _Campaign, slot: str, arm: Arm) -> CampaignSpec:
    """Add an arm to a running slot; it starts from the prior (hybrid: from its features)."""
    campaign = c.spec.name
    s = c.slot(slot)
    if arm.id in s.arm_index:
        raise ConflictError(f"campaign {campaign!r}, slot {slot!r}: arm {arm.id!r} exists")
    try:
        check_arm_features(s.spec, arm)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    _check_size(s.spec, len(s.arm_ids) + 1, s.policy.dim, max(s.encoder.dim, 1))
    features = (s.encoder.encode([arm.features])[0]
                if isinstance(s.policy, HybridLinUCB | Bart)
                or (_is_vw(s) and s.spec.arm_features) else None)
    for policy in {id(s.policy): s.policy, id(s.fallback): s.fallback}.values():
        policy.add_arm(features)
        if arm.retired:
            policy.retire_arm(len(s.arm_ids))
    s.spec = s.spec.model_copy(update={"arms": [*s.spec.arms, arm]})
    s.arm_index[arm.id] = len(s.arm_ids)
    s.arm_ids.append(arm.id)
    c.spec = c.spec.model_copy(
        update={"slots": [x.spec for x in c.slots]})
    return c.spec


def retire_arm(c: _Campaign, slot: str, arm_id: str) -> CampaignSpec:
    """Never choose ``arm_id`` again; decisions already made keep their propensities."""
    campaign = c.spec.name
    s = c.slot(slot)
    if arm_id not in s.arm_index:
        raise UnknownArmError(f"campaign {campaign!r}, slot {slot!r}: no arm {arm_id!r}")
    if arm_id == s.spec.default_arm:
        raise ConflictError(f"campaign {campaign!r}, slot {slot!r}: {arm_id!r} is the "
                            "default arm (holdout and pause use it); it cannot retire")
    a = s.arm_index[arm_id]
    if not s.policy.active[a]:
        return c.spec
    for policy in {id(s.policy): s.policy, id(s.fallback): s.fallback}.values():
        try:
            policy.retire_arm(a)
        except InvalidInputError as exc:
            raise ConflictError(str(exc)) from None
    # Marked in the spec: GET campaign and snapshots show the arm, retired.
    arms = [x.model_copy(update={"retired": True}) if x.id == arm_id else x
            for x in s.spec.arms]
    s.spec = s.spec.model_copy(update={"arms": arms})
    c.spec = c.spec.model_copy(update={"slots": [x.spec for x in c.slots]})
    return c.spec


def campaign_record(c: _Campaign) -> dict[str, Any]:
    """What another process needs to hold the same campaign: the spec, the retired arms per
    slot, the pause flag and the guardrails' state (``guard_state``), JSON-ready (the
    stream's campaigns topic carries it)."""
    return {"spec": c.spec.model_dump(mode="json"), "paused": c.paused,
            "retired": {s.spec.name: [a for a, on in zip(s.arm_ids, s.policy.active, strict=True)
                                      if not on] for s in c.slots},
            **guard_state(c)}


def guard_state(c: _Campaign) -> dict[str, Any]:
    """The guardrails' state, JSON-ready: why a guardrail paused the campaign (``paused_by``)
    and the sums at the resume after such a pause (``baseline``: per group, decisions and
    the decisions reaching each outcome type per subscriber bucket); each null when none."""
    baseline = None if c.baseline is None else {
        group: {"n": t.n.tolist(), "reached": t.reached.tolist()}
        for group, t in c.baseline.items()}
    return {"paused_by": None if c.paused_by is None else c.paused_by.model_dump(mode="json"),
            "baseline": baseline}


def read_guard(state: Mapping[str, Any]
               ) -> tuple[PauseReason | None, dict[Group, _Clustered] | None]:
    """``paused_by`` and ``baseline`` from ``guard_state``'s dict (a record or snapshot
    without them: none). ValueError, TypeError or KeyError for a malformed one."""
    reason, baseline = state.get("paused_by"), state.get("baseline")
    paused_by = None if reason is None else PauseReason.model_validate(reason)
    if baseline is None:
        return paused_by, None
    sums: dict[Group, _Clustered] = {}
    for group in GROUPS:
        t = _Clustered()
        n = np.asarray(baseline[group]["n"], dtype=np.int64)
        reached = np.asarray(baseline[group]["reached"], dtype=np.int64)
        if n.shape != t.n.shape or reached.shape != t.reached.shape:
            raise ValueError(f"baseline of {group}: shapes {n.shape} and {reached.shape}, "
                             f"expected {t.n.shape} and {t.reached.shape}")
        t.n[:], t.reached[:] = n, reached
        sums[group] = t
    return paused_by, sums


def _campaign_of(campaigns: Mapping[str, _Campaign], name: str) -> _Campaign:
    """An event's campaign; InvalidInputError if there is none."""
    c = campaigns.get(name)
    if c is None:
        raise _no_campaign(name)
    return c


def _no_campaign(name: str) -> InvalidInputError:
    return InvalidInputError(f"no campaign {name!r}")


def check_event(campaigns: Mapping[str, _Campaign], e: Checkable) -> None:
    """InvalidInputError if the event does not fit the campaigns: unknown campaign, slot or
    arm, or a context outside the campaign's schema."""
    if e.campaign is None:  # a send or an outcome that does not name its campaign
        return
    c = _campaign_of(campaigns, e.campaign)
    try:
        if e.type == "impression" or e.type == "decision":
            decision = cast("DecisionLike | Joined", e)
            for slot, choice in decision.slots.items():
                if choice.arm not in c.slot(slot).arm_index:
                    raise UnknownArmError(f"slot {slot!r}: no arm {choice.arm!r}")
            if decision.context is not None:
                c.context.check(decision.context)
        elif e.type != "send" and (slot_name := cast(OutcomeLike, e).slot) is not None:
            c.slot(slot_name)
    except (NotFoundError, UnknownArmError) as exc:
        raise InvalidInputError(str(exc)) from None


class EventChecker:
    """``check_event`` for a batch of events during which the campaigns do not change (the
    stream worker's): each campaign's slots are looked up once, then an event costs a dict
    lookup per slot; whatever misses is passed to ``check_event``, whose error it raises.
    ``contexts`` checks the contexts of a run of decisions at once."""

    def __init__(self, campaigns: Mapping[str, _Campaign]) -> None:
        self._campaigns = campaigns
        self._arms_of: dict[str, dict[str, dict[str, int]]] = {}  # campaign -> slot -> arms

    def __call__(self, e: Checkable) -> None:
        if e.campaign is None:  # a send or an outcome that does not name its campaign
            return
        slots = self._slots(e.campaign)
        if slots is None:
            raise _no_campaign(e.campaign)
        if e.type == "impression" or e.type == "decision":
            decision = cast("DecisionLike | Joined", e)
            for slot, choice in decision.slots.items():
                arms = slots.get(slot)
                if arms is None or choice.arm not in arms:
                    check_event(self._campaigns, e)  # raises: no such slot or arm
            if decision.context is not None:
                self._campaigns[e.campaign].context.check(decision.context)
        elif e.type != "send" and (name := cast(OutcomeLike, e).slot) is not None and (
                name not in slots):
            check_event(self._campaigns, e)  # raises: no such slot

    def knows(self, campaign: str, slot: str, arm_ids: Sequence[str]) -> bool:
        """Whether ``campaign`` has ``slot`` and each of ``arm_ids`` in it: then a decision
        of the campaign choosing one of them in that slot passes. False says nothing (check
        the decisions)."""
        slots = self._slots(campaign)
        arms = None if slots is None else slots.get(slot)
        return arms is not None and all(map(arms.__contains__, arm_ids))

    def _slots(self, campaign: str) -> dict[str, dict[str, int]] | None:
        """Slot name -> arm index of ``campaign`` (looked up once), or None if unknown."""
        slots = self._arms_of.get(campaign)
        if slots is None:
            c = self._campaigns.get(campaign)
            if c is None:
                return None
            slots = self._arms_of[campaign] = {s.spec.name: s.arm_index for s in c.slots}
        return slots

    def contexts(self, campaign: str, rows: Sequence[Mapping[str, Any]]
                 ) -> list[tuple[int, str]]:
        """The positions of the contexts ``rows`` that a decision of ``campaign`` may not
        carry, with the reason this checker gives such a decision, in order."""
        try:
            c = _campaign_of(self._campaigns, campaign)
        except InvalidInputError as exc:
            return [(i, str(exc)) for i in range(len(rows))]
        return c.context.check_many(rows)


    def fit_columns(self, campaign: str,
                    shapes: Sequence[tuple[Sequence[str], Sequence[bool], np.ndarray]]) -> bool:
        """Whether a decision of ``campaign`` may carry every context of ``shapes`` (per
        shape its keys, which hold labels, and its numbers: its encoder's ``fits_columns``).
        False says nothing (check the contexts)."""
        c = self._campaigns.get(campaign)
        return c is not None and all(c.context.fits_columns(*shape) for shape in shapes)


def event_checker(campaigns: Mapping[str, _Campaign]) -> EventChecker:
    """The ``EventChecker`` of ``campaigns``."""
    return EventChecker(campaigns)
