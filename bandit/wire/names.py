"""The msgspec mirrors' scalar types and their ONE check of names and decision ids.

msgspec checks a pattern with a regex call per string, which would outweigh the rest of the
decoding; a stream repeats the same few names, so the mirrors leave the patterns out of their
types and ``names_fit`` checks names against a cache of names already seen to be valid (a set
lookup each), ``ids_misfit`` decision ids with one pass over their concatenation. The pattern
texts are the contract's (``bandit.models.names``); the stream (``wire.events``), the joined
examples (``wire.joined``), the batch decoder (``wire.batch``) and the service's single
fast path all check names here.

>>> names_fit(["weekly", "subject_line"]), names_fit(["weekly", "-x"])
(True, False)
>>> ids_misfit(["0" * 32, "A" * 32, "f" * 32], [4, 5, 6])
[5]
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated

import msgspec

from bandit.models.names import DECISION_ID_DIGITS, MAX_MS, NAME_REGEX, REWARD_LIMIT

# The pydantic patterns' constraints but the patterns themselves (see above).
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
DecisionId = Annotated[str, msgspec.Meta(min_length=32, max_length=32)]
EpochMs = Annotated[float, msgspec.Meta(ge=0, le=MAX_MS)]  # models.EpochMs's bound
# JSON has no NaN or infinity and msgspec refuses numbers out of float64's range: finite.
Propensity = Annotated[float, msgspec.Meta(gt=0, le=1)]
Reward = Annotated[float, msgspec.Meta(ge=-REWARD_LIMIT, le=REWARD_LIMIT)]  # models.Click's

# Python's re lets "$" match before a final newline, pydantic's regex does not: "\Z".
_NAME = re.compile(NAME_REGEX + r"\Z").match
# The bytes of the decision id's digits, for bytes.translate.
_DIGITS = bytes(b for b in range(128) if re.fullmatch(f"[{DECISION_ID_DIGITS}]", chr(b)))
_KNOWN_MAX = 65_536  # names remembered as valid (more are checked by the regex every time)
known: set[str] = set()  # names seen to match the pattern (read it, never add to it)


def whole(ts: float) -> int:
    """EpochMs's rule: a whole number (154.0 is accepted as 154)."""
    if ts != int(ts):
        raise ValueError(f"expected a whole number, got {ts}")
    return int(ts)


def names_fit(names: list[str]) -> bool:
    """Whether every name matches the models' name pattern: a set lookup for names already
    seen to match, the regex for the others (which are then remembered)."""
    return known.issuperset(names) or names_match(names)


def names_match(names: list[str]) -> bool:
    """Whether every name matches the pattern (by the regex); those that do are remembered."""
    if not all(map(_NAME, names)):
        return False
    if len(known) < _KNOWN_MAX:
        known.update(names)
    return True


def ids_misfit(ids: list[str], where: Iterable[int]) -> list[int]:
    """The ``where`` of the decision ids (32 characters each: msgspec checked) that are not all
    the pattern's digits, in order."""
    # All digits if deleting those leaves nothing (a character beyond ASCII encodes to bytes
    # that are not digits either): one pass for the whole batch.
    if not "".join(ids).encode().translate(None, _DIGITS):
        return []
    return [i for i, d in zip(where, ids, strict=True) if d.encode().translate(None, _DIGITS)]
