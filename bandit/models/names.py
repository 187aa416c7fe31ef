"""The scalar types every contract shares: names and their ONE pattern, user ids, labels,
decision ids, finite numbers, times in ms, and the bounds of rewards.

The pattern texts live here only: the pydantic types below use them, and ``bandit.wire``
compiles the same texts for the msgspec mirrors, which check names apart (``wire.names``).

>>> import re
>>> bool(re.fullmatch(NAME_REGEX, "subject_line.v2")), bool(re.fullmatch(NAME_REGEX, "_x"))
(True, False)
>>> bool(re.fullmatch(DECISION_ID_REGEX, "0" * 31 + "f"))
True
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

# A campaign, slot, arm, feature or segment name: a letter or digit, then letters, digits and
# "_.:-". Anchored ("^...$") where pydantic reads it; wire anchors it its own way.
NAME_REGEX = r"[A-Za-z0-9][A-Za-z0-9_.:-]*"
# A decision id: DECISION_ID_LENGTH of DECISION_ID_DIGITS (a character class body).
DECISION_ID_DIGITS = "0-9a-f"
DECISION_ID_LENGTH = 32
DECISION_ID_REGEX = f"[{DECISION_ID_DIGITS}]{{{DECISION_ID_LENGTH}}}"
DECISION_ID_DESCRIPTION = ("32 lowercase hex digits, random; the last one is odd when the "
                           "decision was made with consent, even when not")

Finite = Annotated[float, Field(allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=f"^{NAME_REGEX}$")]
UserId = Annotated[str, Field(min_length=1, max_length=128)]
Label = Annotated[str, Field(min_length=1, max_length=128)]
DecisionId = Annotated[str, Field(pattern=f"^{DECISION_ID_REGEX}$")]


def integral(value: float) -> int:
    """A whole number as an int; ValueError for any other."""
    # JSON Schema counts 154.0 as an integer; accept it rather than answer a valid body with 422.
    if value != int(value):
        raise ValueError(f"expected a whole number, got {value}")
    return int(value)


# The largest time in ms: float64 (the JSON number, the join's columns) holds every integer up
# to it exactly, so an integer beyond (2**53 + 1 reads as 2**53) cannot round into range.
MAX_MS = 2**53 - 1
# A whole number is JSON Schema's integer (154.0 is one); validated as a float, so that a
# number too large for float64 is refused by its bound rather than read at another value.
INTEGER = {"type": "integer"}
EpochMs = Annotated[float, Field(ge=0, le=MAX_MS, json_schema_extra=INTEGER),
                    AfterValidator(integral)]
PositiveMs = Annotated[float, Field(gt=0, le=MAX_MS, json_schema_extra=INTEGER),
                       AfterValidator(integral)]

# Click rewards (and a campaign's default reward) lie within +-REWARD_LIMIT: a reward like 1e300
# would turn a linear model's sums r x to inf and VW's propensities to NaN. Revenue fits easily.
REWARD_LIMIT = 1e9
