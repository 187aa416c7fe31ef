"""What a pydantic contract model and its msgspec mirror both have, for the functions that take
either (the join, the engine's event and learn paths, the stream codec, the VW learner): read
only, as both kinds are read by attribute.

>>> from bandit.models import JoinedEvent
>>> from bandit.wire.joined import Joined
>>> def reward(event: JoinedLike, slot: str) -> float:
...     return event.rewards[slot]
>>> fields = dict(decision_id="0" * 32, campaign="w", subject="0" * 32, ts=0,
...               slots={"s": {"arm": "a", "propensity": 0.5}}, rewards={"s": 1.0})
>>> reward(JoinedEvent(**fields), "s") == reward(Joined(**fields), "s")
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol


class SlotChoiceLike(Protocol):
    @property
    def arm(self) -> str: ...
    @property
    def propensity(self) -> float: ...


class _Decided(Protocol):
    """What every event of a decision names."""

    @property
    def decision_id(self) -> str: ...
    @property
    def ts(self) -> float: ...


class _Sent(_Decided, Protocol):
    """An event as a sender or tracker writes it (its ``type``, a literal, tells the kinds
    apart)."""

    @property
    def event_id(self) -> str: ...


class _Logged(_Decided, Protocol):
    """The logged decision, in a decision record, an impression and a joined event."""

    @property
    def campaign(self) -> str: ...
    @property
    def slots(self) -> Mapping[str, SlotChoiceLike]: ...
    @property
    def context(self) -> Mapping[str, float | str] | None: ...
    @property
    def segments(self) -> Mapping[str, str]: ...
    @property
    def holdout(self) -> bool: ...
    @property
    def model_version(self) -> float: ...


class ImpressionLike(_Sent, _Logged, Protocol):
    """``models.Impression`` or ``wire.Impression``: the legacy sender-logged decision."""

    @property
    def type(self) -> Literal["impression"]: ...
    @property
    def user_id(self) -> str: ...


class LoggedDecisionLike(_Logged, Protocol):
    """``models.LoggedDecision`` or ``wire.LoggedDecision``: a line of the decision log."""

    @property
    def type(self) -> Literal["decision"]: ...
    @property
    def subject(self) -> str: ...


DecisionLike = ImpressionLike | LoggedDecisionLike  # what opens a row of the join


class SendLike(_Sent, Protocol):
    """``models.Send`` or ``wire.Send``."""

    @property
    def type(self) -> Literal["send"]: ...
    @property
    def campaign(self) -> str | None: ...


class OutcomeLike(_Sent, Protocol):
    """An outcome (``models.Open`` ... ``models.Bounce`` or their mirrors); ``type`` is one of
    ``models.OUTCOME_TYPES``."""

    @property
    def type(self) -> str: ...
    @property
    def campaign(self) -> str | None: ...
    @property
    def slot(self) -> str | None: ...
    @property
    def machine(self) -> bool: ...
    @property
    def amount(self) -> float: ...


ClickLike = OutcomeLike  # a legacy click is the click outcome


class WatermarkLike(Protocol):
    """``models.Watermark`` or ``wire.Watermark``."""

    @property
    def type(self) -> Literal["watermark"]: ...
    @property
    def ts(self) -> float: ...


class JoinedLike(_Logged, Protocol):
    """``models.JoinedEvent`` or ``wire.Joined``."""

    @property
    def subject(self) -> str: ...
    @property
    def outcomes(self) -> Mapping[Any, int]: ...  # keys: OUTCOME_TYPES (Literal, or str)
    @property
    def rewards(self) -> Mapping[str, float]: ...


if TYPE_CHECKING:
    from bandit import models
    from bandit.wire import events, joined, logged

    def _both_kinds_fit(
        model_impression: models.Impression, mirror_impression: events.Impression,
        model_decision: models.LoggedDecision, mirror_decision: logged.LoggedDecision,
        model_send: models.Send, mirror_send: events.Send,
        model_click: models.Click, mirror_click: events.Click,
        model_conversion: models.Conversion, mirror_conversion: events.Conversion,
        model_watermark: models.Watermark, mirror_watermark: events.Watermark,
        model_joined: models.JoinedEvent, mirror_joined: joined.Joined,
        model_choice: models.SlotChoice, mirror_choice: events.SlotChoice,
    ) -> tuple[list[ImpressionLike], list[LoggedDecisionLike], list[SendLike],
               list[OutcomeLike], list[WatermarkLike], list[JoinedLike], list[SlotChoiceLike]]:
        """Never run: mypy checks that a model and its mirror both fit each protocol."""
        return ([model_impression, mirror_impression], [model_decision, mirror_decision],
                [model_send, mirror_send],
                [model_click, mirror_click, model_conversion, mirror_conversion],
                [model_watermark, mirror_watermark], [model_joined, mirror_joined],
                [model_choice, mirror_choice])
