"""What a pydantic contract model and its msgspec mirror both have, for the functions that take
either (the join, the engine's event and learn paths, the stream codec, the VW learner): read
only, as both kinds are read by attribute.

>>> from bandit.models import JoinedEvent
>>> from bandit.wire.joined import Joined
>>> def reward(event: JoinedLike, slot: str) -> float:
...     return event.rewards[slot]
>>> fields = dict(decision_id="0" * 32, campaign="w", user_id="u", ts=0,
...               slots={"s": {"arm": "a", "propensity": 0.5}}, rewards={"s": 1.0})
>>> reward(JoinedEvent(**fields), "s") == reward(Joined(**fields), "s")
True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol


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
    def campaign(self) -> str: ...
    @property
    def ts(self) -> float: ...


class _Sent(_Decided, Protocol):
    """An event as a sender writes it; ``type`` is the tag that tells the kinds apart."""

    @property
    def type(self) -> str: ...
    @property
    def event_id(self) -> str: ...


class _Logged(_Decided, Protocol):
    """The logged decision, in an impression and in its joined event."""

    @property
    def user_id(self) -> str: ...
    @property
    def slots(self) -> Mapping[str, SlotChoiceLike]: ...
    @property
    def context(self) -> Mapping[str, float | str] | None: ...
    @property
    def segments(self) -> Mapping[str, str]: ...
    @property
    def holdout(self) -> bool: ...


class ImpressionLike(_Sent, _Logged, Protocol):
    """``models.Impression`` or ``wire.Impression``."""

    @property
    def type(self) -> Literal["impression"]: ...
    @property
    def model_version(self) -> float: ...


class ClickLike(_Sent, Protocol):
    """``models.Click`` or ``wire.Click``."""

    @property
    def type(self) -> Literal["click"]: ...
    @property
    def reward(self) -> float: ...
    @property
    def slot(self) -> str | None: ...


class WatermarkLike(Protocol):
    """``models.Watermark`` or ``wire.Watermark``."""

    @property
    def type(self) -> str: ...
    @property
    def ts(self) -> float: ...


class JoinedLike(_Logged, Protocol):
    """``models.JoinedEvent`` or ``wire.Joined``."""

    @property
    def rewards(self) -> Mapping[str, float]: ...

