"""msgspec first, the contract for the verdict: the one bisecting decoder of JSON values.

A ``Reader`` pairs a mirror (a msgspec type) with its schema's two other parts: ``misfits``,
what msgspec leaves unchecked (the name and decision-id patterns, ``wire.names``), and
``verdict``, what a value msgspec or ``misfits`` refuses becomes: the pydantic contract's
answer (its reason, or the model when it accepts). A batch is one msgspec call when every value
is good; a bad value is found by halving, so it costs a few calls, not one per value.

>>> def verdict(value, error):
...     return f"refused: {error}"
>>> reader = Reader(dict[str, int], verdict)
>>> reader.many([b'{"a": 1}', b'{"a": "x"}', b'{"b": 2}'])
[{'a': 1}, 'refused: Expected `int`, got `str` - at `$[...]`', {'b': 2}]
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar, cast

import msgspec

T = TypeVar("T")
V = TypeVar("V")
_ONE_BY_ONE = 8  # below this many values a bad run is decoded value by value


def decode_lines(many: msgspec.json.Decoder, values: Sequence[bytes | None],
                 one: Callable[[bytes | None], T],
                 misfits: Callable[[list[Any]], Iterable[int]] | None = None) -> list[Any]:
    """Each JSON object of ``values`` decoded, in order: ``many`` (a Decoder of a list of the
    type) reads them in one call, and ``one(value)`` gives the verdict on a value it cannot,
    or that ``misfits(decoded)`` names by index. A run with a bad value is split in halves, so
    one bad value costs a few calls, not one each.

    The values become one JSON array, joined by a newline and a comma. A newline is a byte no
    JSON string may hold raw, so no string runs from one value into the next; with every value
    starting an object, the comma before a value can only begin a new element (inside an object
    a key must follow; the schemas read this way hold no arrays). N elements from N values is
    then one per value, as if each were decoded alone.

    >>> def one(value):
    ...     try:
    ...         return msgspec.json.decode(value, type=dict[str, int])
    ...     except msgspec.ValidationError as exc:
    ...         return f"refused: {exc}"
    >>> many = msgspec.json.Decoder(list[dict[str, int]])
    >>> decode_lines(many, [b'{"a": 1}', b'{"a": "x"}', b'{"b": 2}'], one)
    [{'a': 1}, 'refused: Expected `int`, got `str` - at `$[...]`', {'b': 2}]
    """
    if len(values) > 1 and [v[:1] for v in values if v is not None].count(b"{") == len(values):
        try:
            # Every value starts with "{" (checked above), so none is None.
            decoded = many.decode(b"[" + b"\n,".join(cast("Sequence[bytes]", values)) + b"]")
        except msgspec.DecodeError:
            pass  # at least one bad value: find it (and its verdict)
        else:
            if len(decoded) == len(values):
                for i in misfits(decoded) if misfits is not None else ():
                    decoded[i] = one(values[i])
                return decoded
    if len(values) > _ONE_BY_ONE:
        half = len(values) // 2
        return (decode_lines(many, values[:half], one, misfits)
                + decode_lines(many, values[half:], one, misfits))
    return [one(value) for value in values]


class Reader(Generic[T, V]):
    """Values of one schema: decoded by msgspec into ``kind`` (its mirror), checked by
    ``misfits(decoded)`` (the indices whose names or ids do not fit), and any value either
    refuses handed to ``verdict(value, error)`` (``error``: msgspec's DecodeError, or None
    for a misfit or a missing value), whose answer takes its place."""

    def __init__(self, kind: type[T] | Any, verdict: Callable[[bytes | None, Exception | None], V],
                 misfits: Callable[[list[Any]], Iterable[int]] | None = None) -> None:
        self._one = msgspec.json.Decoder(kind).decode
        # list[kind], built as Python builds it: a type held in a variable is no type to mypy.
        self._many = msgspec.json.Decoder(types.GenericAlias(list, kind))
        self._verdict, self._misfits = verdict, misfits

    def one(self, value: bytes | None) -> T | V:
        """The value decoded, or its verdict."""
        if value is None:
            return self._verdict(value, None)
        try:
            decoded = self._one(value)
        except msgspec.DecodeError as error:
            return self._verdict(value, error)
        if self._misfits is not None and self._misfits([decoded]):
            return self._verdict(value, None)
        return decoded

    def many(self, values: Sequence[bytes | None]) -> list[T | V]:
        """``one`` of every value, in order, in one msgspec call when all are good."""
        return decode_lines(self._many, values, self.one, self._misfits)
