"""Bulk decisions from a file (``cmab decide``): a send list in, one decision per subscriber out.

Input: CSV (with a header line) or Parquet, one subscriber per row. Columns, by name, in any
order:

- ``user_id`` (required): 1 to 128 characters;
- each context feature of the campaign's spec: a numeric feature is a number (a column may be
  left out, or a cell empty, only where the feature has a default), a categorical one a label
  (empty: the engine's 'unknown' bucket);
- each segment the spec names (optional; empty: no value);
- ``consent`` (optional, default true): true/false, 1/0, yes/no.

Any other column is refused before anything is decided (a misspelt feature would otherwise be
decided without, silently). A bad row (no user id, a feature that is not a finite number within
``FEATURE_LIMIT``, a missing feature without a default, a label over 128 characters, a consent
that is no boolean) is reported with its line number (CSV: the header is line 1; Parquet: row
1 is the first) and the rest are decided.

Output (CSV or Parquet, by extension): ``decision_id``, ``user_id``, ``holdout``, then per slot
in campaign order ``<slot>.arm`` and ``<slot>.propensity``; in input order, bad rows left out.

Decided in process by an engine (a snapshot, as ``cmab serve`` loads it: decisions are not
logged, so their outcomes join only through impressions the sender posts), or by a service
through ``bandit.client``'s NDJSON stream (the service logs them). The rows are read, checked
and decided a chunk at a time, columns throughout: Arrow columns become NumPy columns (labels
as indices into their values) that the engine encodes and decides as they are
(``Engine.value_columns`` and ``decide_columns``), with no Python object per row but the
user id.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from bandit.engine.decide import ValueColumns
from bandit.errors import InvalidInputError
from bandit.models import FEATURE_LIMIT, CampaignSpec

if TYPE_CHECKING:
    from bandit.client import Client
    from bandit.engine import Engine

CHUNK = 16_384
MAX_LABEL = 128
FORMATS = ("csv", "parquet")
_TRUE = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def file_format(path: Path, option: str) -> str:
    """``csv`` or ``parquet`` from a file's extension; InvalidInputError naming ``option``."""
    kind = path.suffix.lower().lstrip(".")
    if kind not in FORMATS:
        raise InvalidInputError(f"{option} {path}: expected a .csv or .parquet file, "
                                f"got {path.suffix or 'no extension'!r}")
    return kind


@dataclass
class Refusal:
    """A bad row: where (``line 7`` or ``row 6``), the column and why."""

    where: str
    column: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.column}: {self.reason}"


@dataclass
class Result:
    decided: int = 0
    refused: list[Refusal] = field(default_factory=list)


def read_table(path: Path, spec: CampaignSpec) -> tuple[pa.Table, str]:
    """The input file as an Arrow table and its format; its columns checked against the spec."""
    kind = file_format(path, "--input")
    if not path.is_file():
        raise InvalidInputError(f"--input {path}: no such file")
    labels = [f.name for f in spec.context.features if f.kind == "categorical"]
    try:
        if kind == "csv":
            import pyarrow.csv as pv

            text = pa.string()
            table = pv.read_csv(path, convert_options=pv.ConvertOptions(
                # Only an empty cell is empty: "NA" or "null" may be a user id or a label.
                null_values=[""], strings_can_be_null=True,
                column_types={name: text for name in ["user_id", "consent", *labels,
                                                       *spec.context.segments]}))
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise InvalidInputError(f"--input {path}: cannot read it as {kind}: {error}") from None
    known = {"user_id", "consent", *(f.name for f in spec.context.features),
             *spec.context.segments}
    unknown = [c for c in table.column_names if c not in known]
    if unknown:
        raise InvalidInputError(f"--input {path}: column(s) {unknown} are not user_id, consent, "
                                f"a context feature or a segment of campaign {spec.name!r}")
    if "user_id" not in table.column_names:
        raise InvalidInputError(f"--input {path}: no user_id column")
    missing = [f.name for f in spec.context.features if f.kind == "numeric"
               and f.default is None and f.name not in table.column_names]
    if missing:
        raise InvalidInputError(f"--input {path}: no column for numeric feature(s) {missing} "
                                "(they have no default)")
    return table, kind


class _Chunk:
    """A chunk of rows checked: the good rows' columns and the bad rows' refusals."""

    def __init__(self, table: pa.Table, spec: CampaignSpec, first: int, kind: str) -> None:
        n = table.num_rows
        self.bad: dict[int, tuple[str, str]] = {}  # row in the chunk -> (column, reason)
        # Every label column's values, one list: a cell holds its index here (0: empty).
        self._names: list[str | None] = [None]
        names = set(table.column_names)
        user_ids = self._labels(table.column("user_id"), "user_id", required=True)
        consent = (self._consent(table.column("consent")) if "consent" in names
                   else np.ones(n, dtype=bool))
        features = [f for f in spec.context.features if f.name in names]
        contexts = np.empty((n, len(features)))
        for j, f in enumerate(features):
            contexts[:, j] = (self._numbers(table.column(f.name), f.name, f.default)
                              if f.kind == "numeric" else self._codes(table.column(f.name), f.name))
        segments = [s for s in spec.context.segments if s in names]
        codes = np.empty((n, len(segments)))
        for j, s in enumerate(segments):
            codes[:, j] = self._codes(table.column(s), s)
        keep: Any = slice(None)
        if self.bad:
            keep = np.setdiff1d(np.arange(n), list(self.bad))
            user_ids = [user_ids[i] for i in keep.tolist()]
        self.user_ids: list[str] = user_ids
        self.consent_mask = consent[keep]
        self.contexts = ValueColumns(tuple(f.name for f in features), contexts[keep],
                                     self._names, frozenset(f.name for f in features
                                                            if f.kind == "categorical"))
        self.segments = ValueColumns(tuple(segments), codes[keep], self._names,
                                     frozenset(segments))
        unit = "line" if kind == "csv" else "row"
        offset = first + (2 if kind == "csv" else 1)
        self.refused = [Refusal(f"{unit} {offset + i}", *self.bad[i]) for i in sorted(self.bad)]

    def __len__(self) -> int:
        return len(self.user_ids)

    def _refuse(self, rows: Any, column: str, reason: Callable[[int], str]) -> None:
        for i in rows:
            self.bad.setdefault(int(i), (column, reason(int(i))))

    def _strings(self, column: pa.ChunkedArray, name: str, required: bool = False
                 ) -> pa.ChunkedArray:
        """The column as strings, its empty cells refused when ``required``, its labels over
        MAX_LABEL characters refused."""
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            column = pc.cast(column, pa.string())
        lengths = pc.utf8_length(column).to_numpy(zero_copy_only=False)
        nulls = column.is_null().to_numpy(zero_copy_only=False)
        if required:
            self._refuse(np.flatnonzero(nulls), name, lambda i: "missing")
        self._refuse(np.flatnonzero(~nulls & (lengths > MAX_LABEL)), name,
                     lambda i: f"{int(lengths[i])} characters, at most {MAX_LABEL}")
        return column

    def _labels(self, column: pa.ChunkedArray, name: str, required: bool = False) -> list[Any]:
        return self._strings(column, name, required).to_pylist()

    def _codes(self, column: pa.ChunkedArray, name: str) -> np.ndarray:
        """A label column as indices into ``self._names`` (float64; 0 for an empty cell)."""
        encoded = pc.dictionary_encode(self._strings(column, name).combine_chunks())
        offset = len(self._names)
        self._names += encoded.dictionary.to_pylist()
        indices = pc.fill_null(pc.add(encoded.indices.cast(pa.int64()), offset), 0)
        return indices.to_numpy(zero_copy_only=False).astype(np.float64)

    def _numbers(self, column: pa.ChunkedArray, name: str, default: float | None
                 ) -> np.ndarray:
        if pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
            values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
            nulls = column.is_null().to_numpy(zero_copy_only=False)
        else:  # a column with a cell that is no number: each cell read alone
            texts = pc.cast(column, pa.string()).to_pylist()
            nulls = np.array([t is None for t in texts])
            values = np.array([_number(t) for t in texts], dtype=np.float64)
            self._refuse(np.flatnonzero(~nulls & np.isnan(values)), name,
                         lambda i: f"expected a number, got {texts[i]!r}")
        bad = ~nulls & (~np.isfinite(values) | (np.abs(values) > FEATURE_LIMIT))
        self._refuse(np.flatnonzero(bad), name,
                     lambda i: f"expected a finite number within +-{FEATURE_LIMIT:g}, "
                               f"got {values[i]!r}")
        if nulls.any():
            if default is None:
                self._refuse(np.flatnonzero(nulls), name,
                             lambda i: "missing (the feature has no default)")
            values = np.where(nulls, 0.0 if default is None else default, values)
        return values

    def _consent(self, column: pa.ChunkedArray) -> np.ndarray:
        if pa.types.is_boolean(column.type):
            nulls = column.is_null().to_numpy(zero_copy_only=False)
            self._refuse(np.flatnonzero(nulls), "consent", lambda i: "missing")
            return pc.fill_null(column, True).to_numpy(zero_copy_only=False)
        texts = pc.cast(column, pa.string()).to_pylist()
        out = []
        for i, text in enumerate(texts):
            value = _TRUE.get((text or "").strip().lower())
            if value is None:
                self.bad.setdefault(i, ("consent", f"expected true or false, got {text!r}"))
            out.append(value is not False)
        return np.array(out, dtype=bool)


def _number(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan


def _chunks(table: pa.Table, spec: CampaignSpec, kind: str) -> Iterator[_Chunk]:
    for first in range(0, table.num_rows, CHUNK):
        yield _Chunk(table.slice(first, CHUNK), spec, first, kind)


def output_schema(spec: CampaignSpec) -> pa.Schema:
    fields = [pa.field("decision_id", pa.string()), pa.field("user_id", pa.string()),
              pa.field("holdout", pa.bool_())]
    for slot in spec.slots:
        fields += [pa.field(f"{slot.name}.arm", pa.string()),
                   pa.field(f"{slot.name}.propensity", pa.float64())]
    return pa.schema(fields)


class _Writer:
    """Writes decision tables to a CSV or Parquet file as they come."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        kind = file_format(path, "--out")
        self.schema = schema
        try:
            if kind == "csv":
                import pyarrow.csv as pv

                self._out: Any = pv.CSVWriter(path, schema)
            else:
                import pyarrow.parquet as pq

                self._out = pq.ParquetWriter(path, schema)
        except (OSError, pa.ArrowException) as error:
            raise InvalidInputError(f"--out {path}: cannot write it: {error}") from None

    def write(self, columns: Sequence[Any]) -> None:
        self._out.write_table(pa.Table.from_arrays(list(columns), schema=self.schema))

    def close(self) -> None:
        self._out.close()


def decide_file(source: Path, out: Path, spec: CampaignSpec, *, engine: Engine | None = None,
                client: Client | None = None,
                progress: Callable[[int, int], None] | None = None) -> Result:
    """Decide every good row of ``source`` into ``out`` with ``engine`` (in process) or
    ``client`` (a service, one NDJSON stream for the whole file); ``progress(rows, total)`` as
    rows are decided or refused. Exactly one of ``engine`` and ``client``."""
    if (engine is None) == (client is None):
        raise InvalidInputError("give exactly one of --snapshot and --url")
    file_format(out, "--out")
    table, kind = read_table(source, spec)
    writer = _Writer(out, output_schema(spec))
    result = Result()
    total = table.num_rows

    def done(n: int) -> None:
        if progress is not None:
            progress(n, total)

    try:
        if engine is not None:
            for chunk in _chunks(table, spec, kind):
                result.refused += chunk.refused
                if len(chunk):
                    writer.write(_decide_chunk(engine, spec, chunk))
                    result.decided += len(chunk)
                done(len(chunk) + len(chunk.refused))
        elif client is not None:
            lines = client.decide_lines(spec.name, _requests(table, spec, kind, result, done))
            while decisions := [orjson.loads(line) for line in islice(lines, CHUNK)]:
                writer.write(_decision_columns(decisions, len(spec.slots)))
                result.decided += len(decisions)
                done(len(decisions))
    finally:
        writer.close()
    return result


def _decide_chunk(engine: Engine, spec: CampaignSpec, chunk: _Chunk) -> list[Any]:
    columns = engine.value_columns(spec.name, chunk.user_ids, chunk.consent_mask,
                                   np.zeros(len(chunk), dtype=bool), chunk.contexts,
                                   chunk.segments)
    batch = engine.decide_columns(columns)
    out: list[Any] = [batch.decision_ids, batch.user_ids, batch.holdout]
    for s in batch.slots:
        out += [pc.take(pa.array(s.arm_ids), pa.array(s.arms)), s.propensity]
    return out


def _requests(table: pa.Table, spec: CampaignSpec, kind: str, result: Result,
              done: Callable[[int], None]) -> Iterator[dict[str, Any]]:
    """The good rows as decision requests (mappings) for the NDJSON stream; the bad ones into
    ``result``."""
    for chunk in _chunks(table, spec, kind):
        result.refused += chunk.refused
        done(len(chunk.refused))
        for user_id, consent, context, segments in zip(
                chunk.user_ids, chunk.consent_mask.tolist(), chunk.contexts, chunk.segments,
                strict=True):
            yield {"user_id": user_id, "consent": consent, "segments": segments,
                   "context": context}


def _decision_columns(decisions: list[dict[str, Any]], n_slots: int) -> list[Any]:
    """The output columns of decisions as the service writes them (JSON objects)."""
    out: list[Any] = [[d["decision_id"] for d in decisions], [d["user_id"] for d in decisions],
                      [d["holdout"] for d in decisions]]
    for j in range(n_slots):
        out += [[d["slots"][j]["arm"] for d in decisions],
                [d["slots"][j]["propensity"] for d in decisions]]
    return out
