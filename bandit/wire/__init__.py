"""msgspec mirrors of the contract (``bandit.models``), for the hot paths: one per schema,
each pinned to its pydantic twin by tests (tests/test_codec.py).

``names`` (the scalar types and the one name and decision-id check), ``events`` (impression,
click, watermark), ``joined`` (the joined event), ``decode`` (the one bisecting batch decoder,
``Reader``: msgspec first, the contract for the verdict), ``strict`` (BOMs, UTF-16, repeated
keys), ``protocols`` (what a model and its mirror both have), ``batch`` (decision batch
bodies into the engine's columns; import it from ``bandit.wire.batch``: it reads the engine's
campaigns, so the package does not load it).
"""

from bandit.wire.decode import Reader, decode_lines
from bandit.wire.events import EVENTS, Click, Event, Impression, SlotChoice, Watermark, misfits
from bandit.wire.joined import JOINED, Joined, joined_json
from bandit.wire.names import (
    DecisionId,
    EpochMs,
    Label,
    Name,
    Propensity,
    Reward,
    ids_misfit,
    names_fit,
)
from bandit.wire.protocols import (
    ClickLike,
    DecisionRequestLike,
    ImpressionLike,
    JoinedLike,
    SlotChoiceLike,
    WatermarkLike,
)
from bandit.wire.strict import duplicate_key, encoding_problem, keys_unique

__all__ = [
    "EVENTS",
    "JOINED",
    "Click",
    "ClickLike",
    "DecisionId",
    "DecisionRequestLike",
    "EpochMs",
    "Event",
    "Impression",
    "ImpressionLike",
    "Joined",
    "JoinedLike",
    "Label",
    "Name",
    "Propensity",
    "Reader",
    "Reward",
    "SlotChoice",
    "SlotChoiceLike",
    "Watermark",
    "WatermarkLike",
    "decode_lines",
    "duplicate_key",
    "encoding_problem",
    "ids_misfit",
    "joined_json",
    "keys_unique",
    "misfits",
    "names_fit",
]
