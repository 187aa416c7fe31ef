"""msgspec mirrors of the contract (``bandit.models``), for the hot paths: one per schema,
each pinned to its pydantic twin by tests (tests/streams/test_codec.py).

``names`` (the scalar types and the one name and decision-id check), ``events`` (impression,
click, watermark), ``joined`` (the joined event), ``decode`` (the one bisecting batch decoder,
``Reader``: msgspec first, the contract for the verdict), ``strict`` (BOMs, UTF-16, repeated
keys), ``protocols`` (what a model and its mirror both have), ``batch`` (decision batch
bodies into the engine's columns; import it from ``bandit.wire.batch``: it reads the engine's
campaigns, so the package does not load it).
"""

from bandit.wire.decode import Reader, decode_lines
from bandit.wire.events import EVENTS, Click, Event, Impression, SlotChoice, Watermark, misfits
from bandit.wire.joined import Joined, joined_json
from bandit.wire.names import names_fit
from bandit.wire.strict import duplicate_key, encoding_problem, keys_unique

__all__ = [
    "EVENTS",
    "Click",
    "Event",
    "Impression",
    "Joined",
    "Reader",
    "SlotChoice",
    "Watermark",
    "decode_lines",
    "duplicate_key",
    "encoding_problem",
    "joined_json",
    "keys_unique",
    "misfits",
    "names_fit",
]
