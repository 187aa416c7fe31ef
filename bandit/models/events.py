"""Events: the decision the service logs (``LoggedDecision``), what senders and trackers write
(a send, the outcomes of an email, the old impression and click), the watermark of a stream,
and the joined event of a closed attribution window.

The loop (as Microsoft's Decision Service and Personalizer run it, done for email): the service
logs every decision it makes to ``<prefix>.decisions``; a campaign whose ``activation`` is
``"send"`` learns a decision only once its sender confirms the send (``Send``); outcomes
(``open``, ``click``, ``conversion``, ``unsubscribe``, ``complaint``, ``bounce``) join the
decision by its id, and the campaign's ``reward`` turns them into what the policies learn.

Old records: an ``impression`` is read as the send of its decision when the decision was
logged, and as a decision logged by its sender and sent at once when it was not (a decision
made elsewhere); a ``click`` is a click outcome whose ``reward`` is its value (the campaign's
click weight multiplies it).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import AfterValidator, Field, model_validator

from bandit.models.base import Strict
from bandit.models.names import (
    DECISION_ID_DESCRIPTION,
    INTEGER,
    MAX_MS,
    REWARD_LIMIT,
    DecisionId,
    EpochMs,
    Finite,
    Label,
    Name,
    UserId,
    integral,
)


class SlotChoice(Strict):
    arm: Name
    propensity: Finite = Field(gt=0, le=1)


class Impression(Strict):
    type: Literal["impression"] = "impression"
    event_id: Label
    decision_id: DecisionId = Field(description=DECISION_ID_DESCRIPTION + "; the impression of a "
                                    "decision without consent is kept without its context "
                                    "and segments")
    campaign: Name
    user_id: UserId
    ts: EpochMs
    slots: dict[Name, SlotChoice] = Field(min_length=1)
    context: dict[Name, Finite | Label] | None = None
    segments: dict[Name, Label] = Field(default_factory=dict)
    holdout: bool = False
    model_version: Annotated[float, Field(ge=0, le=MAX_MS, json_schema_extra=INTEGER),
                             AfterValidator(integral)] = 0


OutcomeType = Literal["open", "click", "conversion", "unsubscribe", "complaint", "bounce"]
OUTCOME_TYPES: tuple[str, ...] = get_args(OutcomeType)
# What an outcome may name: its decision's campaign (checked when given; legacy clicks name it)
# and the slot it is about (a click on the offer); without a slot it is about every slot.
_CAMPAIGN = Field(None, description="The decision's campaign (optional: the decision names it).")
_SLOT = Field(None, description="The slot the outcome is about; none: every slot.")
_MACHINE = Field(False, description="The tracker knows a machine made it (a mail-privacy proxy "
                 "that fetches every image, a link scanner): counted, never learned.")
# The W3C traceparent of the decision's span (bandit.tracing's TRACEPARENT_PATTERN).
Traceparent = Annotated[str, Field(pattern=r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")]
_TRACEPARENT = Field(None, description="The decision's `traceresponse` header (W3C "
                     "`00-<trace id>-<span id>-<flags>`), passed on so that the span that "
                     "reads this event links to the decision's (optional; tracing).")


class Send(Strict):
    """The sender's confirmation that a decision's email went out: what activates a decision
    of a campaign whose ``activation`` is ``"send"``. No context, no arms: the service logged
    them."""

    type: Literal["send"] = "send"
    event_id: Label
    decision_id: DecisionId
    ts: EpochMs
    campaign: Name | None = _CAMPAIGN
    traceparent: Traceparent | None = _TRACEPARENT


class _Outcome(Strict):
    """What the subscriber (or a machine) did with the email of a decision."""

    event_id: Label
    decision_id: DecisionId
    ts: EpochMs
    campaign: Name | None = _CAMPAIGN
    slot: Name | None = _SLOT
    machine: bool = _MACHINE
    traceparent: Traceparent | None = _TRACEPARENT

    @property
    def amount(self) -> float:
        """What the campaign's weight for this outcome type multiplies: 1, a conversion's
        value, a legacy click's reward."""
        return 1.0


class Open(_Outcome):
    type: Literal["open"] = "open"


class Click(_Outcome):
    type: Literal["click"] = "click"
    reward: Finite = Field(1.0, ge=-REWARD_LIMIT, le=REWARD_LIMIT,
                           description="Legacy: the click's value, which the campaign's click "
                           "weight multiplies (1 unless given).")

    @property
    def amount(self) -> float:
        return self.reward


class Conversion(_Outcome):
    type: Literal["conversion"] = "conversion"
    value: Finite = Field(ge=-REWARD_LIMIT, le=REWARD_LIMIT,
                          description="The conversion's value (revenue), which the campaign's "
                          "conversion weight multiplies.")

    @property
    def amount(self) -> float:
        return self.value


class Unsubscribe(_Outcome):
    type: Literal["unsubscribe"] = "unsubscribe"


class Complaint(_Outcome):
    type: Literal["complaint"] = "complaint"


class Bounce(_Outcome):
    type: Literal["bounce"] = "bounce"


Outcome = Open | Click | Conversion | Unsubscribe | Complaint | Bounce


Event = Annotated[Impression | Send | Open | Click | Conversion | Unsubscribe | Complaint
                  | Bounce, Field(discriminator="type")]


class Watermark(Strict):
    """A producer's promise on one partition: none of its later events is older than ``ts``.

    Senders and trackers send one to every partition of their topic when they know time has
    moved on (a send is over, an attribution window has passed), so windows close without
    waiting for the next event. It is part of the stream, so replays close the same windows.
    """

    type: Literal["watermark"] = "watermark"
    ts: EpochMs


SubjectKey = Annotated[str, Field(pattern="^[0-9a-f]{32}$", description="The subscriber's "
                       "pseudonym: 32 hex digits of a keyed hash of the user id "
                       "(bandit.engine.join.subject_key), never the user id.")]


class LoggedChoice(Strict):
    """One slot of a logged decision: the arm, its propensity, and the probability of every
    eligible arm (what off-policy estimators need)."""

    arm: Name
    propensity: Finite = Field(gt=0, le=1)
    probabilities: dict[Name, Finite] = Field(
        default_factory=dict, description="Probability of every eligible arm (the chosen one "
        "included); empty when not known (a legacy impression).")

    @model_validator(mode="before")
    @classmethod
    def _from_slot_choice(cls, data: Any) -> Any:
        """An impression's SlotChoice is a logged choice whose probabilities are unknown."""
        return data.model_dump() if isinstance(data, SlotChoice) else data


class LoggedDecision(Strict):
    """A decision as the service logs it to ``<prefix>.decisions``: one line of a decision
    block (``streams.blocks``). Context and segments only with consent."""

    type: ClassVar[Literal["decision"]] = "decision"
    decision_id: DecisionId
    campaign: Name
    subject: SubjectKey
    ts: EpochMs
    model_version: Annotated[float, Field(ge=0, le=MAX_MS, json_schema_extra=INTEGER),
                             AfterValidator(integral)] = 0
    holdout: bool = False
    slots: dict[Name, LoggedChoice] = Field(min_length=1)
    context: dict[Name, Finite | Label] | None = None
    segments: dict[Name, Label] = Field(default_factory=dict)


class JoinedEvent(Strict):
    """A decision whose attribution window closed: its logged context and choices, what
    happened (``outcomes``: the learned outcomes per type) and the reward the campaign's
    ``reward`` made of them per slot (its default reward when none counted)."""

    decision_id: DecisionId
    campaign: Name
    subject: SubjectKey
    ts: EpochMs
    slots: dict[Name, LoggedChoice]
    context: dict[Name, Finite | Label] | None = None
    segments: dict[Name, Label] = Field(default_factory=dict)
    holdout: bool = False
    model_version: Annotated[float, Field(ge=0, le=MAX_MS, json_schema_extra=INTEGER),
                             AfterValidator(integral)] = 0
    outcomes: dict[OutcomeType, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="Learned outcomes of the decision per type (in their "
        "windows, not machine-made); types without any are left out.")
    rewards: dict[Name, Finite] = Field(description="Reward per slot.")
