"""msgspec mirrors of the contract (``bandit.models``), for the hot paths: one per schema,
each pinned to its pydantic twin by tests (tests/streams/test_codec.py).

``names`` (the scalar types and the one name and decision-id check), ``events`` (impression,
send, outcomes, watermark), ``logged`` (the logged decision), ``joined`` (the joined event),
``decode`` (the one bisecting batch decoder, ``Reader``: msgspec first, the contract for the
verdict), ``strict`` (BOMs, UTF-16, repeated keys), ``protocols`` (what a model and its mirror
both have), ``batch`` (decision batch bodies into the engine's columns; import it from
``bandit.wire.batch``: it reads the engine's campaigns, so the package does not load it).
"""

from bandit.wire.decode import Reader, decode_lines
from bandit.wire.events import (
    EVENTS,
    OUTCOMES,
    Bounce,
    Click,
    Complaint,
    Conversion,
    Event,
    Impression,
    Open,
    Outcome,
    Send,
    SlotChoice,
    Unsubscribe,
    Watermark,
    misfits,
)
from bandit.wire.joined import Joined, joined_json
from bandit.wire.logged import DECISIONS, LoggedChoice, LoggedDecision
from bandit.wire.names import names_fit
from bandit.wire.strict import duplicate_key, encoding_problem, keys_unique

__all__ = [
    "DECISIONS",
    "EVENTS",
    "OUTCOMES",
    "Bounce",
    "Click",
    "Complaint",
    "Conversion",
    "Event",
    "Impression",
    "Joined",
    "LoggedChoice",
    "LoggedDecision",
    "Open",
    "Outcome",
    "Reader",
    "Send",
    "SlotChoice",
    "Unsubscribe",
    "Watermark",
    "decode_lines",
    "duplicate_key",
    "encoding_problem",
    "joined_json",
    "keys_unique",
    "misfits",
    "names_fit",
]
