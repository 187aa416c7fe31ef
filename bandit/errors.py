"""Errors raised by the engine: each has a stable ``code`` and a ``retriable`` flag.

Messages say what was expected and what arrived. The stream worker retries retriable errors and
dead-letters the rest; the HTTP service maps codes to status codes in one place.
"""

from __future__ import annotations

__all__ = [
    "BanditError",
    "ConflictError",
    "IncompatibleStateError",
    "InvalidInputError",
    "NotFoundError",
    "OverCapacityError",
    "UnavailableError",
    "UnknownArmError",
]


class BanditError(Exception):
    """Base class of every error the project raises on purpose."""

    code: str = "bandit_error"
    retriable: bool = False


class InvalidInputError(BanditError, ValueError):
    """An argument has the wrong shape, type or value (NaN, negative count, reward out of range)."""

    code = "invalid_input"


class UnknownArmError(BanditError, ValueError):
    """An arm index or id that the policy or campaign does not have."""

    code = "unknown_arm"


class IncompatibleStateError(BanditError, ValueError):
    """A state or snapshot that does not fit: another policy kind, other sizes or parameters."""

    code = "incompatible_state"


class NotFoundError(BanditError, LookupError):
    """A campaign, slot, arm or subject that does not exist."""

    code = "not_found"


class ConflictError(BanditError, ValueError):
    """The request contradicts the current state: a campaign or arm that already exists,
    retiring a slot's default arm."""

    code = "conflict"


class UnavailableError(BanditError, RuntimeError):
    """Not ready yet (state not loaded, kernels not compiled): try again shortly."""

    code = "unavailable"
    retriable = True


class OverCapacityError(BanditError, RuntimeError):
    """Too much waits already: an impression would leave more than ``max_pending`` decisions
    of its campaign open in the attribution join. Retry once windows have closed.
    ``refused``: campaign -> how many of the request's impressions did not fit."""

    code = "over_capacity"
    retriable = True

    def __init__(self, message: str, refused: dict[str, int]) -> None:
        super().__init__(message)
        self.refused = refused
