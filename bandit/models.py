"""Pydantic models for everything that crosses a process boundary: campaign specs, decision
requests and answers, events, reports. Strict and closed (``extra="forbid"``): a typo or a
wrong type is refused at the edge with the field's name, never half-understood inside.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

Finite = Annotated[float, Field(allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
UserId = Annotated[str, Field(min_length=1, max_length=128)]
Label = Annotated[str, Field(min_length=1, max_length=128)]
DecisionId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]


def _integral(value: float) -> int:
    # JSON Schema counts 154.0 as an integer; accept it rather than answer a valid body with 422.
    if value != int(value):
        raise ValueError(f"expected a whole number, got {value}")
    return int(value)


# The largest time in ms: float64 (the JSON number, the join's columns) holds every integer up
# to it exactly, so an integer beyond (2**53 + 1 reads as 2**53) cannot round into range.
MAX_MS = 2**53 - 1
# A whole number is JSON Schema's integer (154.0 is one); validated as a float, so that a
# number too large for float64 is refused by its bound rather than read at another value.
_INTEGER = {"type": "integer"}
EpochMs = Annotated[float, Field(ge=0, le=MAX_MS, json_schema_extra=_INTEGER),
                    AfterValidator(_integral)]
PositiveMs = Annotated[float, Field(gt=0, le=MAX_MS, json_schema_extra=_INTEGER),
                       AfterValidator(_integral)]


def _as_enforced(schema: dict[str, Any]) -> None:
    """State in a model's JSON Schema what validation enforces, where pydantic's schema is
    laxer (schema-valid bodies got 422). The key pattern of ``dict[Name, X]``: pydantic writes
    ``patternProperties``, under which a key that misses the pattern may hold anything; here
    every key must match (``propertyNames``) and every value is an X (``additionalProperties``).
    A tag (``type``, ``kind``: a constant with a default) is required: the tagged unions that
    read these models need it."""
    for value in schema.values():
        for inner in value if isinstance(value, list) else [value]:
            if isinstance(inner, dict):
                _as_enforced(inner)
    patterns = schema.pop("patternProperties", None)
    if patterns:
        ((pattern, values),) = patterns.items()
        schema["propertyNames"] = {**schema.get("propertyNames", {}), "pattern": pattern}
        schema["additionalProperties"] = values
    tags = [name for name, p in schema.get("properties", {}).items()
            if isinstance(p, dict) and "const" in p and "default" in p]
    if tags:
        schema["required"] = [*tags, *schema.get("required", [])]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True,
                              json_schema_extra=_as_enforced)


# -- campaign spec --------------------------------------------------------------------------


# Numeric feature values (contexts, arm features, defaults) lie within +-FEATURE_LIMIT. The
# policies are linear in them and keep sums of their squares: values like 1e200 overflowed
# those sums to inf (a model poisoned for good) and gave epsilon-greedy arm -1 with a NaN
# propensity; VW reads 32-bit floats (at most 3.4e38). Scaled features are far inside.
FEATURE_LIMIT = 1e9
# Click rewards (and a campaign's default reward) lie within +-REWARD_LIMIT: a reward like 1e300
# turned a linear model's sums r x to inf and VW's propensities to NaN. Revenue fits easily.
REWARD_LIMIT = 1e9


class NumericFeature(Strict):
    """A number, used as is (scale it before sending; the policies are linear in it)."""

    kind: Literal["numeric"] = "numeric"
    name: Name
    default: Finite | None = Field(
        None, ge=-FEATURE_LIMIT, le=FEATURE_LIMIT,
        description="Used when a request omits the feature; without it, omitting is an error."
    )


class CategoricalFeature(Strict):
    """One of a fixed vocabulary, one-hot encoded; any other value lands in an 'unknown' bucket."""

    kind: Literal["categorical"] = "categorical"
    name: Name
    values: list[Label] = Field(min_length=1, max_length=256)

    @model_validator(mode="after")
    def _distinct(self) -> CategoricalFeature:
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"feature {self.name!r}: values must be distinct")
        return self


Feature = Annotated[NumericFeature | CategoricalFeature, Field(discriminator="kind")]


class ContextSchema(Strict):
    """What a subscriber's context holds. Segments (region, age band, ...) are labels kept for
    the bias audit only: policies never see them."""

    features: list[Feature] = Field(default_factory=list, max_length=256)
    segments: list[Name] = Field(default_factory=list, max_length=16)
    intercept: bool = Field(True, description="Prepend a constant 1.0 feature.")

    @model_validator(mode="after")
    def _distinct(self) -> ContextSchema:
        names = [f.name for f in self.features] + list(self.segments)
        if len(set(names)) != len(names):
            raise ValueError("context feature and segment names must be distinct")
        return self


class Arm(Strict):
    """A treatment: an id and its features (numeric, or a value of a categorical arm feature)."""

    id: Name
    features: dict[Name, Finite | Label] = Field(default_factory=dict, max_length=64)
    retired: bool = Field(False, description="Never chosen; kept for its statistics and the "
                          "decisions already logged. Set by retiring the arm.")


# Policy settings within [PARAM_MIN, PARAM_MAX] (where a bound applies): the spec used to take
# any positive or finite value, and priors of 1e-300 divided by zero, an alpha or v of 1e300
# gave NaN bonuses and propensities, an l2 of 1e-300 singular factorizations (arm -1).
PARAM_MIN, PARAM_MAX = 1e-6, 1e6


class BetaTSSpec(Strict):
    kind: Literal["beta_ts"] = "beta_ts"
    alpha: Finite = Field(1.0, ge=PARAM_MIN, le=PARAM_MAX)
    beta: Finite = Field(1.0, ge=PARAM_MIN, le=PARAM_MAX)
    half_life_ms: Finite | None = Field(None, gt=0)


class _UCBParams(Strict):
    alpha: Finite = Field(1.0, ge=0, le=PARAM_MAX)
    l2: Finite = Field(1.0, ge=PARAM_MIN, le=PARAM_MAX)
    epsilon: Finite = Field(0.05, ge=0, le=1, description="Exploration floor.")
    half_life_ms: Finite | None = Field(None, gt=0)


class LinUCBSpec(_UCBParams):
    kind: Literal["lin_ucb"] = "lin_ucb"


class HybridLinUCBSpec(_UCBParams):
    kind: Literal["hybrid_lin_ucb"] = "hybrid_lin_ucb"


class LinTSSpec(Strict):
    kind: Literal["lin_ts"] = "lin_ts"
    v: Finite = Field(0.2, ge=PARAM_MIN, le=PARAM_MAX)
    l2: Finite = Field(1.0, ge=PARAM_MIN, le=PARAM_MAX)
    half_life_ms: Finite | None = Field(None, gt=0)


class EpsilonGreedySpec(Strict):
    kind: Literal["epsilon_greedy"] = "epsilon_greedy"
    epsilon: Finite = Field(0.1, ge=0, le=1)
    l2: Finite = Field(1.0, ge=PARAM_MIN, le=PARAM_MAX)
    half_life_ms: Finite | None = Field(None, gt=0)


class BartSpec(Strict):
    kind: Literal["bart"] = "bart"
    epsilon: Finite = Field(0.1, ge=0, le=1)
    l2: Finite = Field(1.0, ge=PARAM_MIN, le=PARAM_MAX)
    half_life_ms: Finite | None = Field(None, gt=0)


# Vowpal Wabbit options a spec may add to the ones VWSpec builds, with what each takes: a set
# of words, a (low, high) range, or None for a flag. Anything else could change the reduction
# stack (and with it what a decision's pmf means), so it is refused.
VW_EXTRA_OPTIONS: dict[str, frozenset[str] | tuple[float, float] | None] = {
    "--cb_type": frozenset({"ips", "dr", "dm", "mtr"}),
    "--power_t": (0.0, 1.0),
    "--l1": (0.0, 1.0),
    "--l2": (0.0, 1.0),
    "--gamma_scale": (1e-6, 1e6),
    "--gamma_exponent": (0.0, 1.0),
    "--noconstant": None,
}


def check_vw_args(tokens: list[str]) -> list[str]:
    """The tokens of whitelisted VW options (``["--cb_type", "dr", "--noconstant"]``), as given;
    ValueError naming the token for anything else, a repeat or a bad value."""
    out, seen, i = [], set(), 0
    while i < len(tokens):
        option = tokens[i]
        if option not in VW_EXTRA_OPTIONS:
            raise ValueError(f"extra_args: option {option!r} is not allowed; expected some of "
                             f"{sorted(VW_EXTRA_OPTIONS)}")
        if option in seen:
            raise ValueError(f"extra_args: option {option!r} is given twice")
        seen.add(option)
        allowed = VW_EXTRA_OPTIONS[option]
        if allowed is None:
            out.append(option)
            i += 1
            continue
        if i + 1 >= len(tokens):
            raise ValueError(f"extra_args: option {option!r} needs a value")
        value = tokens[i + 1]
        if isinstance(allowed, frozenset):
            if value not in allowed:
                raise ValueError(f"extra_args: {option} expects one of {sorted(allowed)}, "
                                 f"got {value!r}")
        else:
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not allowed[0] <= number <= allowed[1]:
                raise ValueError(f"extra_args: {option} expects a number in [{allowed[0]:g}, "
                                 f"{allowed[1]:g}], got {value!r}")
        out += [option, value]
        i += 2
    return out


VWInteraction = Annotated[str, Field(pattern=r"^[ca]{2,3}$")]


class VWSpec(Strict):
    """Vowpal Wabbit ``--cb_explore_adf``: the context is the shared namespace ``c``, each arm an
    action line in namespace ``a`` (its id and its arm features). ``epsilon`` is the exploration
    of ``epsilon``, ``bag`` and ``cover``; ``bag`` and ``cover`` are their numbers of models."""

    kind: Literal["vw"] = "vw"
    exploration: Literal["squarecb", "epsilon", "bag", "cover"] = "squarecb"
    epsilon: Finite = Field(0.05, ge=0, le=1)
    bag: Annotated[float, Field(ge=2, le=16, json_schema_extra=_INTEGER),
                   AfterValidator(_integral)] = 5
    cover: Annotated[float, Field(ge=1, le=16, json_schema_extra=_INTEGER),
                     AfterValidator(_integral)] = 5
    interactions: list[VWInteraction] = Field(
        default_factory=lambda: ["ca"], max_length=8,
        description="Namespace interactions (-q), e.g. 'ca' = context x arm.")
    lrq: str | None = Field(None, pattern=r"^[ca]{2}[1-9][0-9]?$", description="Low-rank "
                            "quadratic (--lrq), e.g. 'ca4': BaRT's factorization machine.")
    learning_rate: Finite | None = Field(None, gt=0, le=10)
    extra_args: Annotated[list[str], AfterValidator(check_vw_args)] = Field(
        default_factory=list, max_length=16,
        description="More VW options, from a whitelist: " + ", ".join(sorted(VW_EXTRA_OPTIONS)))


PolicySpec = Annotated[
    BetaTSSpec | LinUCBSpec | HybridLinUCBSpec | LinTSSpec | EpsilonGreedySpec | BartSpec
    | VWSpec,
    Field(discriminator="kind"),
]


class EligibilityRule(Strict):
    """Arm ``arm`` may be chosen only when ``feature`` (a context feature or segment) satisfies
    ``op value``; a request that lacks the feature makes the arm ineligible."""

    arm: Name
    feature: Name
    op: Literal["eq", "ne", "lt", "le", "gt", "ge", "in", "not_in"]
    value: Finite | Label | list[Finite | Label]


class SlotSpec(Strict):
    """One decision inside a message (subject_line, artwork, offer, send_hour, ...)."""

    name: Name
    arms: list[Arm] = Field(min_length=1, max_length=1000)
    default_arm: Name = Field(description="What holdout subscribers, paused campaigns and "
                              "subscribers without eligible arms get.")
    policy: PolicySpec = Field(default_factory=LinUCBSpec)
    arm_features: list[Feature] = Field(
        default_factory=list, max_length=64,
        description="Schema of the arms' features (needed by hybrid_lin_ucb).")
    condition_on: list[Name] = Field(
        default_factory=list, description="Earlier slots whose choice is a feature here.")
    eligibility: list[EligibilityRule] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="after")
    def _consistent(self) -> SlotSpec:
        ids = [a.id for a in self.arms]
        if len(set(ids)) != len(ids):
            raise ValueError(f"slot {self.name!r}: arm ids must be distinct")
        if self.default_arm not in ids:
            raise ValueError(f"slot {self.name!r}: default_arm {self.default_arm!r} is not an arm")
        if any(a.retired for a in self.arms if a.id == self.default_arm):
            raise ValueError(f"slot {self.name!r}: default_arm {self.default_arm!r} is retired")
        for rule in self.eligibility:
            if rule.arm not in ids:
                raise ValueError(f"slot {self.name!r}: eligibility rule names no arm {rule.arm!r}")
        if self.policy.kind in ("hybrid_lin_ucb", "bart") and not self.arm_features:
            raise ValueError(f"slot {self.name!r}: {self.policy.kind} needs arm_features")
        for arm in self.arms:
            check_arm_features(self, arm)
        return self


def check_arm_features(slot: SlotSpec, arm: Arm) -> None:
    """Raise ValueError unless ``arm`` gives every declared arm feature a fitting value."""
    schema = {f.name: f for f in slot.arm_features}
    extra = set(arm.features) - set(schema)
    if extra:
        raise ValueError(f"slot {slot.name!r}, arm {arm.id!r}: unknown arm features {sorted(extra)}")
    for name, feature in schema.items():
        value = arm.features.get(name)
        if feature.kind == "numeric":
            if value is None and feature.default is None:
                raise ValueError(f"slot {slot.name!r}, arm {arm.id!r}: missing arm feature {name!r}")
            if value is not None and not isinstance(value, float | int):
                raise ValueError(
                    f"slot {slot.name!r}, arm {arm.id!r}: arm feature {name!r} must be a number"
                )
            if value is not None and not -FEATURE_LIMIT <= value <= FEATURE_LIMIT:
                raise ValueError(f"slot {slot.name!r}, arm {arm.id!r}: arm feature {name!r} is "
                                 f"{value!r}, beyond +-{FEATURE_LIMIT:g} (scale it)")
        elif value is not None and not isinstance(value, str):
            raise ValueError(
                f"slot {slot.name!r}, arm {arm.id!r}: arm feature {name!r} must be a string"
            )


class CampaignSpec(Strict):
    """A named experiment: context schema, holdout, attribution and ordered slots."""

    name: Name
    context: ContextSchema = Field(default_factory=ContextSchema)
    holdout: Finite = Field(0.05, ge=0, le=0.5, description="Share of subscribers on default arms.")
    attribution_window_ms: PositiveMs = Field(7 * 24 * 3600 * 1000)
    default_reward: Finite = Field(0.0, ge=-REWARD_LIMIT, le=REWARD_LIMIT,
                                   description="Learned when a window closes without a click.")
    reward_aggregation: Literal["sum", "max", "earliest"] = "sum"
    slots: list[SlotSpec] = Field(min_length=1, max_length=32)

    @model_validator(mode="after")
    def _consistent(self) -> CampaignSpec:
        names = [s.name for s in self.slots]
        if len(set(names)) != len(names):
            raise ValueError("slot names must be distinct")
        context = {f.name for f in self.context.features} | set(self.context.segments)
        for i, slot in enumerate(self.slots):
            for earlier in slot.condition_on:
                if earlier not in names[:i]:
                    raise ValueError(
                        f"slot {slot.name!r}: condition_on {earlier!r} is not an earlier slot"
                    )
            for rule in slot.eligibility:
                if rule.feature not in context:
                    raise ValueError(f"slot {slot.name!r}: eligibility rule names no context "
                                     f"feature or segment {rule.feature!r}")
        return self


# -- decisions ------------------------------------------------------------------------------


class DecisionRequest(Strict):
    campaign: Name
    user_id: UserId
    context: dict[Name, Finite | Label] = Field(default_factory=dict, max_length=512)
    segments: dict[Name, Label] = Field(default_factory=dict, max_length=16)
    consent: bool = Field(True, description="Personalization consent; without it the decision "
                          "ignores the context and logs none, and its id records that: "
                          "context and segments of its impression are dropped at ingestion.")
    explain: bool = False


class Contribution(Strict):
    feature: str
    value: float


class SlotDecision(Strict):
    slot: str
    arm: str
    propensity: float
    expected_reward: float
    exploration_bonus: float
    explanation: list[Contribution] | None = None


_DECISION_ID = ("32 lowercase hex digits, random; the last one is odd when the decision was "
                "made with consent, even when not")


class Decision(Strict):
    decision_id: str = Field(description=_DECISION_ID)
    campaign: str
    user_id: str
    holdout: bool
    model_version: int
    slots: list[SlotDecision]


class BatchDecisionRequest(Strict):
    campaign: Name
    requests: list[DecisionRequest] = Field(min_length=1, max_length=100_000)


class BatchDecisionResponse(Strict):
    decisions: list[Decision]


# -- events ---------------------------------------------------------------------------------


class SlotChoice(Strict):
    arm: Name
    propensity: Finite = Field(gt=0, le=1)


class Impression(Strict):
    type: Literal["impression"] = "impression"
    event_id: Label
    decision_id: DecisionId = Field(description=_DECISION_ID + "; the impression of a "
                                    "decision without consent is kept without its context "
                                    "and segments")
    campaign: Name
    user_id: UserId
    ts: EpochMs
    slots: dict[Name, SlotChoice] = Field(min_length=1)
    context: dict[Name, Finite | Label] | None = None
    segments: dict[Name, Label] = Field(default_factory=dict)
    holdout: bool = False
    model_version: Annotated[float, Field(ge=0, le=MAX_MS, json_schema_extra=_INTEGER),
                             AfterValidator(_integral)] = 0


class Click(Strict):
    type: Literal["click"] = "click"
    event_id: Label
    decision_id: DecisionId
    campaign: Name
    ts: EpochMs
    reward: Finite = Field(1.0, ge=-REWARD_LIMIT, le=REWARD_LIMIT)
    slot: Name | None = None


Event = Annotated[Impression | Click, Field(discriminator="type")]


class JoinedEvent(Strict):
    """A decision whose attribution window closed: its logged context and choices, and the
    reward aggregated over its clicks (the campaign's default reward when there were none)."""

    decision_id: DecisionId
    campaign: Name
    user_id: UserId
    ts: EpochMs
    slots: dict[Name, SlotChoice]
    context: dict[Name, Finite | Label] | None = None
    segments: dict[Name, Label] = Field(default_factory=dict)
    holdout: bool = False
    rewards: dict[Name, Finite] = Field(description="Reward per slot.")


# -- reports --------------------------------------------------------------------------------


class Interval(Strict):
    estimate: float
    low: float
    high: float


class ArmReport(Strict):
    arm: str
    active: bool
    impressions: int
    reward: float
    ctr: Interval | None
    share: float


class SegmentReport(Strict):
    segment: str
    value: str
    impressions: int
    ctr: Interval | None
    allocation: dict[str, float]
    flagged: bool
    reason: str | None = None
    ctr_gap: Interval | None = Field(
        None, description="Reward rate of this value minus that of the segment's other values.")


class SlotReport(Strict):
    slot: str
    policy: str
    arms: list[ArmReport]
    segments: list[SegmentReport]


class CampaignReport(Strict):
    campaign: str
    model_version: int
    paused: bool
    impressions: int
    personalized_ctr: Interval | None
    holdout_ctr: Interval | None
    lift: Interval | None = Field(description="Personalized minus holdout reward per decision.")
    slots: list[SlotReport]
