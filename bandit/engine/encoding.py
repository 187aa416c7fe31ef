"""Contexts and arm features -> float64 rows in schema order (``_Encoder``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any, cast

import numpy as np

from bandit.errors import InvalidInputError
from bandit.models import FEATURE_LIMIT

_Numbers = Callable[[Mapping[str, Any]], tuple[Any, ...]]  # a row's numeric values, in order


class _Encoder:
    """Named values -> a float64 row in schema order: numeric features as is, categorical ones
    one-hot with an 'unknown' bucket, an optional leading 1.0."""

    def __init__(self, features: Sequence[Any], intercept: bool, what: str) -> None:
        self.what = what
        self.columns: list[str] = ["(intercept)"] if intercept else []
        self._numeric: list[tuple[str, int, float | None]] = []
        self._categorical: list[tuple[str, int, dict[str, int]]] = []
        for f in features:
            if f.kind == "numeric":
                self._numeric.append((f.name, len(self.columns), f.default))
                self.columns.append(f.name)
            else:
                start = len(self.columns)
                self._categorical.append((f.name, start, {v: i for i, v in enumerate(f.values)}))
                self.columns += [f"{f.name}={v}" for v in f.values] + [f"{f.name}=(unknown)"]
        self.names = {f.name for f in features}
        self.intercept = intercept
        # The numeric columns as runs of adjacent ones (slices: views of a matrix, not copies).
        self._runs: list[slice] = []
        for _, col, _ in self._numeric:
            if self._runs and self._runs[-1].stop == col:
                self._runs[-1] = slice(self._runs[-1].start, col + 1)
            else:
                self._runs.append(slice(col, col + 1))
        # Row shapes (keys, value types) that ``check`` passed -> their numbers, as a tuple.
        self._passed: dict[tuple[Any, ...], _Numbers] = {}

    @property
    def dim(self) -> int:
        return len(self.columns)

    def encode(self, rows: Sequence[Mapping[str, Any]], out: np.ndarray | None = None
               ) -> np.ndarray:
        """(n, dim) from n mappings; unknown names, missing numeric values and wrong types
        are refused with the row and the feature named."""
        X = np.zeros((len(rows), self.dim)) if out is None else out
        if self.intercept:
            X[:, 0] = 1.0
        if len(rows) > 1 and self._encode_uniform(rows, X):
            self._bounded(X)
            return X
        for i, row in enumerate(rows):
            X[i] = self._values(row, i)
        self._bounded(X)
        return X

    def encode_one(self, row: dict[str, Any]) -> np.ndarray:
        """``encode([row])[0]`` (dim,), with the same errors, for one row: its values go into
        a list and become an array in one call (a single decision would pay a NumPy item
        assignment per feature)."""
        x = np.array(self._values(row, 0), dtype=np.float64)
        # Every column but the numeric ones holds 0 or 1: one test of the whole row, and
        # _bounded's for the message.
        if not (np.abs(x) <= FEATURE_LIMIT).all():
            self._bounded(x[None, :])
        return x

    def _values(self, row: Mapping[str, Any], i: int) -> list[float]:
        """Row ``i``'s values in column order; unknown names, missing numeric values and
        wrong types are refused with the row and the feature named."""
        if not row.keys() <= self.names:
            unknown = sorted(set(row) - self.names)
            raise InvalidInputError(f"{self.what} row {i}: unknown feature {unknown[0]!r}; "
                                    f"expected some of {sorted(self.names)}")
        values = [0.0] * len(self.columns)
        if self.intercept:
            values[0] = 1.0
        for name, col, default in self._numeric:
            value = row.get(name, default)
            if value is None:
                raise InvalidInputError(f"{self.what} row {i}: missing numeric feature {name!r}")
            if isinstance(value, str):
                raise InvalidInputError(
                    f"{self.what} row {i}: feature {name!r} expects a number, got {value!r}")
            values[col] = value
        for name, start, index in self._categorical:
            category = row.get(name)
            if isinstance(category, str):
                values[start + index.get(category, len(index))] = 1.0
            elif category is None:  # not given: the 'unknown' bucket
                values[start + len(index)] = 1.0
            else:
                raise InvalidInputError(
                    f"{self.what} row {i}: feature {name!r} expects a string, got {category!r}")
        return values

    def _bounded(self, X: np.ndarray) -> None:
        """Refuse a numeric value beyond +-FEATURE_LIMIT (bandit.models), naming its row."""
        if not self._numeric or not len(X):
            return
        # The common case, every value within bounds, in two reductions of views of X (no
        # temporary of its size); NaN fails both comparisons, so it is found below.
        if all(X[:, run].min() >= -FEATURE_LIMIT and X[:, run].max() <= FEATURE_LIMIT
               for run in self._runs):
            return
        cols = [col for _, col, _ in self._numeric]
        bad = ~(np.abs(X[:, cols]) <= FEATURE_LIMIT)
        if bad.any():
            i, j = (int(v) for v in np.argwhere(bad)[0])
            raise InvalidInputError(
                f"{self.what} row {i}: feature {self._numeric[j][0]!r} is "
                f"{float(X[i, cols[j]])!r}, beyond +-{FEATURE_LIMIT:g} "
                "(scale it: the policies are linear in it)")

    def _encode_uniform(self, rows: Sequence[Mapping[str, Any]], X: np.ndarray) -> bool:
        """``encode``'s common case in one pass over the values: every row has the same numeric
        features in the same order, each a float (as pydantic hands them over). Fills X and
        says True; anything else (a string, another key order, a categorical value, a missing
        feature without default) says False before X is touched, for the row by row path."""
        keys = tuple(rows[0])
        numeric = {name: (col, default) for name, col, default in self._numeric}
        if (not all(key in numeric for key in keys)
                or any(default is None and name not in keys for name, _, default in self._numeric)
                or not all(map(keys.__eq__, map(tuple, rows)))):
            return False
        # dict.values refuses a row that is not a dict (TypeError: the row by row path)
        dicts = cast("Sequence[dict[str, Any]]", rows)
        try:  # float.__float__ refuses a str (or an int) where float() would convert it
            flat = np.fromiter(map(float.__float__, chain.from_iterable(map(dict.values, dicts))),
                               dtype=np.float64, count=len(rows) * len(keys))
        except TypeError:
            return False
        X[:, [numeric[key][0] for key in keys]] = flat.reshape(len(rows), len(keys))
        for name, col, default in self._numeric:
            if name not in keys:
                X[:, col] = default
        for _, start, index in self._categorical:  # none given: the 'unknown' bucket
            X[:, start + len(index)] = 1.0
        return True

    def encode_columns(self, keys: Sequence[str], values: np.ndarray,
                       names: Sequence[str | None], out: np.ndarray) -> None:
        """``encode`` of rows that share their keys, from columns: ``values`` (n, len(keys))
        holds numbers, and for categorical features indices into ``names`` (None there: the
        row omits the feature, the 'unknown' bucket); fills ``out`` (n, dim). The rows must
        have passed ``check`` (the join's and ``bandit.bulk``'s rows did, on the way in)."""
        n = values.shape[0]
        where = {key: j for j, key in enumerate(keys)}
        if self.intercept:
            out[:, 0] = 1.0
        for name, col, default in self._numeric:
            j = where.get(name)
            if j is None and default is None:
                raise InvalidInputError(f"{self.what} row 0: missing numeric feature {name!r}")
            out[:, col] = default if j is None else values[:, j]
        for name, start, index in self._categorical:
            j = where.get(name)
            if j is None:
                out[:, start + len(index)] = 1.0
                continue
            seen, codes = np.unique(values[:, j].astype(np.int64), return_inverse=True)
            offset = np.array([index.get(names[v], len(index)) for v in seen.tolist()],
                              dtype=np.int64)
            out[np.arange(n), start + offset[codes.reshape(-1)]] = 1.0
        self._bounded(out)

    def encode_values(self, rows: Sequence[Any], values: Callable[[Any], tuple], absent: object,
                      out: np.ndarray) -> None:
        """``encode`` of rows whose ``values(row)`` are their values in the order of the
        features (``absent`` where a row omits one), already checked for type: numbers for
        numeric features, strings for categorical ones; fills ``out`` (n, dim). A numeric
        feature without a default that a row omits raises InvalidInputError."""
        if self.intercept:
            out[:, 0] = 1.0
        if not self._categorical and len(rows):
            # All numeric: one pass over every value into the matrix, unless one is omitted.
            width = len(self._numeric)
            try:
                flat = np.fromiter(chain.from_iterable(map(values, rows)), dtype=np.float64,
                                   count=len(rows) * width)
            except TypeError:
                pass  # an omitted value: feature by feature below
            else:
                numbers = flat.reshape(len(rows), width)
                if len(self._runs) == 1:  # adjacent columns: a slice, not a fancy index
                    out[:, self._runs[0]] = numbers
                else:
                    out[:, [col for _, col, _ in self._numeric]] = numbers
                self._bounded(out)
                return
        # Feature by feature, in schema order (the order of their first columns); ``index``
        # is None for a numeric feature, ``default`` None for a categorical one.
        columns = list(zip(*map(values, rows), strict=True)) or [()] * (
            len(self._numeric) + len(self._categorical))
        order: list[tuple[int, str, float | None, dict[str, int] | None]] = sorted(
            [(col, name, default, None) for name, col, default in self._numeric]
            + [(start, name, None, index) for name, start, index in self._categorical],
            key=itemgetter(0))
        for (col, name, default, index), column in zip(order, columns, strict=True):
            if index is None:
                filled: Sequence[Any] = column
                if any(v is absent for v in column):
                    if default is None:
                        raise InvalidInputError(f"{self.what}: missing numeric feature {name!r}")
                    filled = [default if v is absent else v for v in column]
                out[:, col] = filled
            else:
                out[np.arange(len(column)),
                    col + np.array([index.get(v, len(index)) for v in column], dtype=np.int64)
                    ] = 1.0
        self._bounded(out)

    def check_many(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[int, str]]:
        """``check`` of each row: the positions of the rows it refuses, with its messages, in
        order. Rows that are dicts with the same keys (a stream's, mostly) are checked as
        columns at once; if that does not pass them all, row by row."""
        if not rows or self._fit_as_columns(rows):
            return []
        bad = []
        for i, row in enumerate(rows):
            try:
                self.check(row)
            except InvalidInputError as exc:
                bad.append((i, str(exc)))
        return bad

    def _fit_as_columns(self, rows: Sequence[Mapping[str, Any]]) -> bool:
        """True if every row is a dict with the first row's keys, which are features, with a
        float (within bounds) for each numeric one, a string for each categorical one and a
        default for each numeric one omitted: then ``check`` passes every row. False says
        nothing (the rows are checked one by one)."""
        if set(map(type, rows)) != {dict}:
            return False
        keys = tuple(rows[0])
        width = len(keys)
        if set(map(len, rows)) != {width}:
            return False
        if not width:
            return self.fits_columns(keys, (), np.zeros((len(rows), 0)))
        try:  # same length and none of the first row's keys missing: the same keys
            flat = (list(chain.from_iterable(map(itemgetter(*keys), rows))) if width > 1
                    else list(map(itemgetter(keys[0]), rows)))
        except KeyError:
            return False
        # Each key's values all numbers (floats) or all labels, as a shape of columns holds.
        kinds = [set(map(type, flat[j::width])) for j in range(width)]
        if not all(kind in ({float}, {str}) for kind in kinds):
            return False
        strings = [kind == {str} for kind in kinds]
        numbers = np.array([flat[j::width] for j in range(width) if not strings[j]],
                           dtype=np.float64).reshape(-1, len(rows)).T
        return self.fits_columns(keys, strings, numbers)

    def fits_columns(self, keys: Sequence[str], strings: Sequence[bool],
                     numbers: np.ndarray) -> bool:
        """Whether ``check`` passes every row of a shape given as columns: its context keys
        in order, which of them hold labels (``strings``), and its numbers (rows, number
        keys). False says nothing (check the rows)."""
        if not set(keys) <= self.names:
            return False
        label = dict(zip(keys, strings, strict=True))
        for name, _, default in self._numeric:  # a number, or omitted with a default
            if label.get(name, default is None):
                return False
        return (all(label.get(name, True) for name, _, _ in self._categorical)  # labels
                and bool((np.abs(numbers) <= FEATURE_LIMIT).all()))

    def check(self, row: Mapping[str, Any]) -> None:
        """``encode([row])``'s checks without building the row (the stream checks every
        event's context once); a refused row gets ``encode``'s error."""
        # Rows of one stream mostly share their keys and value types: a shape seen to pass
        # passes again, once its numbers are within bounds.
        shape = (*row, *map(type, row.values()))
        numbers = self._passed.get(shape)
        if numbers is None:
            if not (row.keys() <= self.names and all(
                    not isinstance(row.get(name, default), str | None)
                    for name, _, default in self._numeric) and all(
                    isinstance(row.get(name), str | None) for name, _, _ in self._categorical)):
                self.encode([row])  # raises, naming the row and feature
                return
            keys = [name for name, _, _ in self._numeric if name in row]
            if not keys:
                numbers = _no_numbers
            elif len(keys) == 1:
                numbers = _one_number(keys[0])
            else:
                numbers = itemgetter(*keys)
            if len(self._passed) < 1024:
                self._passed[shape] = numbers
        values = numbers(row)
        if values and not (min(values) >= -FEATURE_LIMIT and max(values) <= FEATURE_LIMIT):
            self.encode([row])  # raises: the value out of bounds


def _no_numbers(row: Mapping[str, Any]) -> tuple[()]:
    """``check``'s numbers of a row shape without numeric features."""
    return ()


def _one_number(key: str) -> Callable[[Mapping[str, Any]], tuple[Any]]:
    """``check``'s numbers of a row shape with one numeric feature, ``key``: a 1-tuple
    (``itemgetter`` of one key gives the value itself)."""
    return lambda row: (row[key],)
