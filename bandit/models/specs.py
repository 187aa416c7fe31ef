"""Campaign specs: the context schema, arms, policy settings, eligibility rules and slots of
a campaign, checked whole when it is created."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from bandit.models.base import Strict
from bandit.models.events import OUTCOME_TYPES, OutcomeType
from bandit.models.names import (
    INTEGER,
    MAX_MS,
    REWARD_LIMIT,
    Finite,
    Label,
    Name,
    PositiveMs,
    integral,
)

# Numeric feature values (contexts, arm features, defaults) lie within +-FEATURE_LIMIT. The
# policies are linear in them and keep sums of their squares: values like 1e200 would overflow
# those sums to inf (a model poisoned for good) and give epsilon-greedy arm -1 with a NaN
# propensity; VW reads 32-bit floats (at most 3.4e38). Scaled features are far inside.
FEATURE_LIMIT = 1e9


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


# Policy settings within [PARAM_MIN, PARAM_MAX] (where a bound applies): beyond them, priors of
# 1e-300 divide by zero, an alpha or v of 1e300 gives NaN bonuses and propensities, an l2 of
# 1e-300 singular factorizations (arm -1).
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
    # bandit.policies.LinUCB's defaults (why: its docstring).
    alpha: Finite = Field(0.2, ge=0, le=PARAM_MAX)
    l2: Finite = Field(10.0, ge=PARAM_MIN, le=PARAM_MAX)
    epsilon: Finite = Field(0.01, ge=0, le=1, description="Exploration floor.")


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


VW_GAMMA_SCALE = (1e-6, 1e6)
VW_GAMMA_EXPONENT = (0.0, 1.0)


def check_vw_gamma(exploration: str, gamma_scale: Any, gamma_exponent: Any,
                   extra_args: list[str]) -> tuple[float | None, float | None]:
    """squarecb's ``gamma_scale`` and ``gamma_exponent`` as floats (None: VW's default), or a
    ValueError naming the setting: a number in range, for exploration ``squarecb`` only, and
    not also given in ``extra_args``."""
    out: list[float | None] = []
    for name, value, (low, high) in (("gamma_scale", gamma_scale, VW_GAMMA_SCALE),
                                     ("gamma_exponent", gamma_exponent, VW_GAMMA_EXPONENT)):
        if value is None:
            out.append(None)
            continue
        number = (math.nan if isinstance(value, bool) or not isinstance(value, int | float)
                  else float(value))
        if not low <= number <= high:
            raise ValueError(f"{name}: expected a number in [{low:g}, {high:g}], got {value!r}")
        if exploration != "squarecb":
            raise ValueError(f"{name}: applies to exploration 'squarecb' only, got exploration "
                             f"{exploration!r}")
        if f"--{name}" in extra_args:
            raise ValueError(f"{name}: given twice, as a setting and in extra_args")
        out.append(number)
    return out[0], out[1]


VWInteraction = Annotated[str, Field(pattern=r"^[ca]{2,3}$")]


class VWSpec(Strict):
    """Vowpal Wabbit ``--cb_explore_adf``: the context is the shared namespace ``c``, each arm an
    action line in namespace ``a`` (its id and its arm features). ``epsilon`` is the exploration
    of ``epsilon``, ``bag`` and ``cover``; ``bag`` and ``cover`` are their numbers of models;
    ``gamma_scale`` and ``gamma_exponent`` are squarecb's (VW's defaults when unset)."""

    kind: Literal["vw"] = "vw"
    exploration: Literal["squarecb", "epsilon", "bag", "cover"] = "squarecb"
    epsilon: Finite = Field(0.05, ge=0, le=1)
    bag: Annotated[float, Field(ge=2, le=16, json_schema_extra=INTEGER),
                   AfterValidator(integral)] = 5
    cover: Annotated[float, Field(ge=1, le=16, json_schema_extra=INTEGER),
                     AfterValidator(integral)] = 5
    interactions: list[VWInteraction] = Field(
        default_factory=lambda: ["ca"], max_length=8,
        description="Namespace interactions (-q), e.g. 'ca' = context x arm.")
    lrq: str | None = Field(None, pattern=r"^[ca]{2}[1-9][0-9]?$", description="Low-rank "
                            "quadratic (--lrq), e.g. 'ca4': BaRT's factorization machine.")
    learning_rate: Finite | None = Field(None, gt=0, le=10)
    extra_args: Annotated[list[str], AfterValidator(check_vw_args)] = Field(
        default_factory=list, max_length=16,
        description="More VW options, from a whitelist: " + ", ".join(sorted(VW_EXTRA_OPTIONS)))
    gamma_scale: Finite | None = Field(
        None, ge=VW_GAMMA_SCALE[0], le=VW_GAMMA_SCALE[1],
        description="squarecb's --gamma_scale (greedier when larger); VW's default when unset.")
    gamma_exponent: Finite | None = Field(
        None, ge=VW_GAMMA_EXPONENT[0], le=VW_GAMMA_EXPONENT[1],
        description="squarecb's --gamma_exponent; VW's default when unset.")

    @model_validator(mode="after")
    def _gamma(self) -> VWSpec:
        check_vw_gamma(self.exploration, self.gamma_scale, self.gamma_exponent, self.extra_args)
        return self


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
        raise ValueError(
            f"slot {slot.name!r}, arm {arm.id!r}: unknown arm features {sorted(extra)}")
    for name, feature in schema.items():
        value = arm.features.get(name)
        if feature.kind == "numeric":
            if value is None and feature.default is None:
                raise ValueError(
                    f"slot {slot.name!r}, arm {arm.id!r}: missing arm feature {name!r}")
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


class OutcomeReward(Strict):
    """What one outcome type is worth: ``weight`` times its amount (1; a conversion's value),
    counted within ``window_ms`` of the send and aggregated over the type's events of a slot
    by ``aggregation`` (``first``: the earliest event's)."""

    weight: Finite = Field(ge=-REWARD_LIMIT, le=REWARD_LIMIT)
    window_ms: PositiveMs | None = Field(None, description="Only events this soon after the "
                                         "send count; none: the campaign's attribution window.")
    aggregation: Literal["sum", "max", "first"] = "sum"


def _click_reward() -> dict[OutcomeType, OutcomeReward]:
    return {"click": OutcomeReward(weight=1.0)}


class RewardSpec(Strict):
    """The reward the policies learn, per slot: the sum over outcome types of their
    aggregated, weighted amounts; the campaign's ``default_reward`` when no weighted outcome
    counted. Outcome types without a weight are still counted and reported (unsubscribe and
    complaint rates always are)."""

    outcomes: dict[OutcomeType, OutcomeReward] = Field(
        default_factory=_click_reward, description="Weight, window and aggregation per outcome "
        "type, e.g. {click: {weight: 1}, conversion: {weight: 0.01}, unsubscribe: {weight: -5}}.")
    scanner_ms: Annotated[float, Field(ge=0, le=MAX_MS, json_schema_extra=INTEGER),
                          AfterValidator(integral)] = Field(
        0, description="Clicks this soon after the send are a link scanner's: counted, never "
        "learned.")


class Guardrail(Strict):
    """A bound on the lift of an outcome type (personalized minus holdout rate of decisions
    with the outcome, as a fraction: 0.001 is +0.1 points), tested sequentially as outcomes
    close (``bandit.engine.guardrails``); a breach pauses the campaign until a person resumes
    it."""

    outcome: OutcomeType
    max_lift: Finite | None = Field(
        None, ge=-1, le=1, description="Breached when the lift is surely above it, e.g. "
        "unsubscribe 0.001: no more than +0.1 points.")
    min_lift: Finite | None = Field(
        None, ge=-1, le=1, description="Breached when the lift is surely below it, e.g. "
        "click -0.005: no less than -0.5 points.")
    min_decisions: Annotated[float, Field(ge=1, le=MAX_MS, json_schema_extra=INTEGER),
                             AfterValidator(integral)] = Field(
        1000, description="Decisions each group needs (since the last resume) before the "
        "guardrail can trip.")

    @model_validator(mode="after")
    def _bounded(self) -> Guardrail:
        if self.max_lift is None and self.min_lift is None:
            raise ValueError(f"guardrail on {self.outcome!r}: max_lift or min_lift: give at "
                             "least one")
        if (self.max_lift is not None and self.min_lift is not None
                and self.min_lift > self.max_lift):
            raise ValueError(f"guardrail on {self.outcome!r}: min_lift {self.min_lift:g} is "
                             f"above max_lift {self.max_lift:g}")
        return self


class CampaignSpec(Strict):
    """A named experiment: context schema, holdout, attribution and ordered slots."""

    name: Name
    context: ContextSchema = Field(default_factory=ContextSchema)
    holdout: Finite = Field(0.05, ge=0, le=0.5, description="Share of subscribers on default arms.")
    lift_horizon: Annotated[float, Field(ge=1, le=MAX_MS, json_schema_extra=INTEGER),
                            AfterValidator(integral)] = Field(
        100_000, description="Decisions (both groups) at which the report's always-valid lift "
        "interval is tightest (bandit.engine.intervals.rho_for); it stays valid at every other "
        "count, only wider.")
    attribution_window_ms: PositiveMs = Field(7 * 24 * 3600 * 1000)
    default_reward: Finite = Field(0.0, ge=-REWARD_LIMIT, le=REWARD_LIMIT,
                                   description="Learned when a window closes without a click.")
    reward_aggregation: Literal["sum", "max", "earliest"] = Field(
        "sum", description="Legacy: the click aggregation when ``reward`` is not given.")
    reward: RewardSpec = Field(default_factory=RewardSpec, description="What the policies "
                               "learn from a decision's outcomes.")
    activation: Literal["decision", "send"] = Field(
        "decision", description="When a decision becomes learnable: when made (batch sends), "
        "or once its sender posts its send event.")
    activation_window_ms: PositiveMs = Field(
        2 * 24 * 3600 * 1000, description="With activation 'send': a decision not sent within "
        "this time of being made is never learned (and is counted).")
    slots: list[SlotSpec] = Field(min_length=1, max_length=32)
    guardrails: list[Guardrail] = Field(
        default_factory=list, max_length=len(OUTCOME_TYPES), description="Bounds on the "
        "lift of outcome types that pause the campaign when breached; one per outcome type.")

    @model_validator(mode="before")
    @classmethod
    def _legacy_reward(cls, data: Any) -> Any:
        """A spec without ``reward`` learns its clicks aggregated by ``reward_aggregation``."""
        if isinstance(data, dict) and "reward" not in data and data.get(
                "reward_aggregation") in ("max", "earliest"):
            rule = "first" if data["reward_aggregation"] == "earliest" else "max"
            data = {**data, "reward": {"outcomes": {"click": {"weight": 1.0,
                                                              "aggregation": rule}}}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> CampaignSpec:
        names = [s.name for s in self.slots]
        if len(set(names)) != len(names):
            raise ValueError("slot names must be distinct")
        guarded = [g.outcome for g in self.guardrails]
        for kind in dict.fromkeys(k for k in guarded if guarded.count(k) > 1):
            raise ValueError(f"guardrails: {guarded.count(kind)} guardrails on {kind!r}; at "
                             "most one per outcome type")
        for kind, outcome in self.reward.outcomes.items():
            if (outcome.window_ms is not None
                    and outcome.window_ms > self.attribution_window_ms):
                raise ValueError(f"reward.outcomes.{kind}.window_ms: {outcome.window_ms:g} is "
                                 "longer than attribution_window_ms "
                                 f"{self.attribution_window_ms:g}")
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
