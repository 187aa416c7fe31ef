"""The erasure ledger: the closed decisions the engine learned, as the columns it learned them
from, so that a subject's learned contributions can be taken out of the model again
(``Engine.erase``, ``bandit.engine.erase.forget_columns``).

Per learned decision it keeps what forgetting needs (and what the report tallies will need):
the subject key (two uint64 words), event time, holdout, best reward, per slot the arm and
the reward (unclipped), the context as encoded for learning (only for decisions learned with
one: consent-less decisions have none), the segment values and the outcomes per type. Not the
propensities: only VW learns them, and VW cannot forget (it is named for retraining).

Columnar, per campaign: chunks of numpy columns (no Python object per decision). A campaign's
newest chunk grows by doubling up to ``chunk_rows`` rows, then is sealed: a sealed chunk keeps
its rows' order by subject key, so that finding a subject's rows is a binary search per chunk
(the open chunk is scanned). Memory per decision: 8 bytes per context column (decisions with
a context), 12 per slot, 8 per segment value and 62 besides (subject 16, time 8, holdout 1,
best reward 8, context flag 1, outcomes 4 per type), and 4 for a sealed chunk's order.

Bounded by ``max_decisions`` (0: nothing is kept): beyond it the oldest chunks are dropped and
counted in ``dropped``, and the ledger is no longer ``complete`` (an erasure may then leave
older contributions of the subject in the model). Decisions learned while the ledger is off
count as dropped too. With decay a chunk whose decisions, in every slot they name, are more
than ``EXPIRY_HALF_LIVES`` half-lives older than the newest decision of that slot is dropped
freely (counted in ``expired``): such a decision weighs less than 2^-40 (below 1e-12) of what
it weighed when learned, so leaving it in the sums changes them by less than that.

Stored apart (``apart``: the stream worker's partitions). A snapshot then carries the open
chunks and only a reference to each sealed chunk, so its size does not grow with the sealed
ones: a sealed chunk changes only when an erasure takes rows out of it, so each version of it
is written once elsewhere (``unstored``, ``chunk_value``, ``stored``: a key and a position the
writer chooses) before the snapshot that references it. Sealed chunks are then smaller
(``_APART_ROWS``), so that the open chunks a snapshot carries stay small. A ledger restored
from such a snapshot has its sealed chunks as references (``references``) until ``load``
reads them; it refuses to be used before.
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import orjson

from bandit.engine.campaign import _Campaign, _is_vw
from bandit.engine.intervals import key_clusters
from bandit.engine.learn import _Learned
from bandit.models import OUTCOME_TYPES

EXPIRY_HALF_LIVES = 40
_CHUNK_ROWS = 65_536  # rows of a sealed chunk at most
_APART_ROWS = 8_192  # rows of a sealed chunk at most when sealed chunks are stored apart
_FIRST_ROWS = 64  # an open chunk's first capacity
# Per decision; the context and segment pairs have their own lengths.
_ROW_COLUMNS = ("subject_hi", "subject_lo", "ts", "holdout", "best", "has_context", "arms",
                "rewards", "outcomes")


def subject_words(subjects: list[str]) -> np.ndarray:
    """Subject keys given as 32 hex digits each -> (n, 2) uint64, the 16 bytes of each key
    read as two little-endian words (``key_words`` of the bytes)."""
    n = len(subjects)
    text = "".join(subjects)
    try:  # one pass, no (n, 32) arrays of digits
        raw = bytearray.fromhex(text) if len(text) == 32 * n else b""
    except ValueError:
        raw = b""
    if len(raw) != 16 * n:  # a wrong length, a non-hex digit, or whitespace fromhex skipped
        raise ValueError("subject keys: each must be 32 hex digits")
    return np.frombuffer(raw, dtype="<u8").reshape(n, 2)


def key_words(key: bytes) -> tuple[int, int]:
    """A 16-byte subject key as its two words (see ``subject_words``)."""
    hi, lo = np.frombuffer(key, dtype="<u8")
    return int(hi), int(lo)


class _Columns:
    """Named arrays sharing their first axis, of which the first ``n`` rows are in use; the
    capacity doubles as rows are added."""

    def __init__(self, arrays: dict[str, np.ndarray], n: int) -> None:
        self.arrays, self.n = arrays, n

    def extend(self, parts: Mapping[str, np.ndarray], most: int | None = None) -> None:
        """Append ``parts`` (arrays of the same length); the capacity doubles, to at most
        ``most`` rows unless more are needed."""
        m = len(next(iter(parts.values())))
        need = self.n + m
        capacity = len(next(iter(self.arrays.values())))
        if need > capacity:
            grown = max(2 * capacity, _FIRST_ROWS)
            capacity = max(need, grown if most is None else min(grown, most))
            for name, old in self.arrays.items():
                fresh = np.empty((capacity, *old.shape[1:]), dtype=old.dtype)
                fresh[:self.n] = old[:self.n]
                self.arrays[name] = fresh
        for name, part in parts.items():
            self.arrays[name][self.n:need] = part
        self.n = need

    def trimmed(self) -> _Columns:
        """These columns without capacity beyond the rows in use (copied only if any)."""
        if len(next(iter(self.arrays.values()))) == self.n:
            return self
        return self.take(np.ones(self.n, dtype=np.bool_))

    def used(self) -> dict[str, np.ndarray]:
        """The rows in use (views)."""
        return {name: a[:self.n] for name, a in self.arrays.items()}

    def take(self, keep: np.ndarray) -> _Columns:
        """A copy of the rows ``keep`` (a boolean mask over the rows in use), exactly sized."""
        return _Columns({name: a[:self.n][keep] for name, a in self.arrays.items()},
                        int(keep.sum()))


@dataclass
class _Chunk:
    """A campaign's decisions in learning order: per decision ``rows`` (``_ROW_COLUMNS``),
    the contexts of those with one (``context``: column ``x``, in order) and the segment
    pairs (``pairs``: ``row`` and ``code``, the pair's index in the campaign's ``_Book``).
    ``order``: a sealed chunk's rows sorted by subject key (None while open); ``newest`` the
    newest event time per slot (-inf where no decision names the slot). ``ref``: where this
    version of a sealed chunk is stored apart (key, position), None until it is; ``missing``:
    a restored reference whose columns are not read yet (``Ledger.load``)."""

    campaign: str
    rows: _Columns
    context: _Columns
    pairs: _Columns
    newest: np.ndarray  # (slots,) float64
    order: np.ndarray | None = None
    ref: tuple[str, int] | None = None
    missing: bool = False

    @property
    def n(self) -> int:
        return self.rows.n

    def seal(self) -> None:
        self.rows = self.rows.trimmed()
        self.context = self.context.trimmed()
        self.pairs = self.pairs.trimmed()
        self.order = np.argsort(self.rows.arrays["subject_hi"], kind="stable").astype(np.int32)

    def matching(self, hi: int, lo: int, at_ms: float) -> np.ndarray:
        """The rows of the subject (words ``hi``, ``lo``) at or before ``at_ms``."""
        rows = self.rows.used()
        if self.order is None:
            found = np.flatnonzero(rows["subject_hi"] == hi)
        else:
            column = rows["subject_hi"]
            start = np.searchsorted(column, np.uint64(hi), "left", sorter=self.order)
            end = np.searchsorted(column, np.uint64(hi), "right", sorter=self.order)
            found = np.sort(self.order[start:end])
        return found[(rows["subject_lo"][found] == lo) & (rows["ts"][found] <= at_ms)]

    def without(self, drop: np.ndarray) -> None:
        """Take the rows ``drop`` (a boolean mask) out; a sealed chunk stays sealed."""
        keep = ~drop
        has = self.rows.used()["has_context"]
        pair_rows = self.pairs.used()["row"].astype(np.intp)
        renumber = np.cumsum(keep, dtype=np.int64) - 1
        self.context = self.context.take(keep[has])
        self.pairs = self.pairs.take(keep[pair_rows])
        self.pairs.arrays["row"] = renumber[self.pairs.arrays["row"]].astype(np.int32)
        self.rows = self.rows.take(keep)
        self.newest = _newest(self.rows)
        self.ref = None  # a new version, to be stored again
        if self.order is not None:
            self.seal()


def _newest(rows: _Columns) -> np.ndarray:
    """The newest event time per slot of ``rows`` (-inf where none names the slot)."""
    ts, arms = rows.arrays["ts"][:rows.n], rows.arrays["arms"][:rows.n]
    return np.where(arms >= 0, ts[:, None], -math.inf).max(axis=0, initial=-math.inf)


class _Book:
    """A campaign's part of the ledger: its slots (in the campaign's order), context width,
    segment pairs seen (interned), the horizon after which its decisions expire (None: never,
    a slot does not decay) and the newest event time per slot."""

    def __init__(self, c: _Campaign) -> None:
        self.name = c.spec.name
        self.slots = [s.spec.name for s in c.slots]
        self.dim = c.context.dim
        self.pairs: list[tuple[str, str]] = []
        self.pair_index: dict[tuple[str, str], int] = {}
        lives = [None if _is_vw(s) else getattr(s.spec.policy, "half_life_ms", None)
                 for s in c.slots]
        known = [float(h) for h in lives if h is not None]
        self.horizon = (EXPIRY_HALF_LIVES * max(known, default=0.0)
                        if len(known) == len(lives) else None)
        self.newest = np.full(len(self.slots), -math.inf)
        self.open: _Chunk | None = None

    def code(self, pair: tuple[str, str]) -> int:
        found = self.pair_index.get(pair)
        if found is None:
            found = self.pair_index[pair] = len(self.pairs)
            self.pairs.append(pair)
        return found

    def empty_chunk(self) -> _Chunk:
        k = len(self.slots)
        return _Chunk(self.name, _Columns({
            "subject_hi": np.empty(0, np.uint64), "subject_lo": np.empty(0, np.uint64),
            "ts": np.empty(0), "holdout": np.empty(0, np.bool_), "best": np.empty(0),
            "has_context": np.empty(0, np.bool_), "arms": np.empty((0, k), np.int32),
            "rewards": np.empty((0, k)),
            "outcomes": np.empty((0, len(OUTCOME_TYPES)), np.int32)}, 0),
            _Columns({"x": np.empty((0, self.dim))}, 0),
            _Columns({"row": np.empty(0, np.int32), "code": np.empty(0, np.int32)}, 0),
            np.full(k, -math.inf))


class Ledger:
    """The erasure ledger (module docstring): ``add`` after every learn, ``find`` and
    ``remove`` to erase, ``state`` / ``from_state`` in snapshots. Not thread-safe: the engine
    calls it under its lock."""

    def __init__(self, max_decisions: int = 0) -> None:
        self.max_decisions = max_decisions
        self.apart = False  # sealed chunks stored apart, referenced by the snapshots
        self.dropped = 0  # learned decisions not kept (the bound, or learned while off)
        self.expired = 0  # decisions dropped once decayed below 2^-EXPIRY_HALF_LIVES
        self.complete = True  # nothing dropped since the ledger started
        self._books: dict[str, _Book] = {}
        self._chunks: list[_Chunk] = []  # oldest first; each campaign's open chunk last of its
        self.size = 0  # decisions kept

    @property
    def chunk_rows(self) -> int:
        """Rows of a sealed chunk: a sixteenth of the bound (the granularity of dropping),
        at most ``_CHUNK_ROWS`` (``_APART_ROWS`` when stored apart)."""
        return min(_APART_ROWS if self.apart else _CHUNK_ROWS, max(1, self.max_decisions // 16))

    def _loaded(self) -> None:
        """ValueError unless every sealed chunk's columns are here (``load``)."""
        if any(c.missing for c in self._chunks):
            raise ValueError("erasure ledger: its sealed chunks stored apart were not read "
                             "(Ledger.load)")

    def limit(self, max_decisions: int) -> None:
        """Keep at most ``max_decisions`` decisions (0: none, the ledger is off); the oldest
        chunks beyond it are dropped now."""
        if max_decisions < 0:
            raise ValueError(f"max_decisions: {max_decisions} is negative")
        self._loaded()
        self.max_decisions = max_decisions
        self._trim()

    def add(self, c: _Campaign, cols: _Learned, subjects: list[str]) -> None:
        """Keep the decisions campaign ``c`` learned, ``cols`` (as ``learn_columns`` learned
        them) of the subjects ``subjects`` (hex keys, one per decision)."""
        n = len(cols.ts)
        if not n:
            return
        if not self.max_decisions:
            self.dropped += n
            self.complete = False
            return
        self._loaded()
        name = c.spec.name
        book = self._books.get(name)
        if book is None:
            book = self._books[name] = _Book(c)
        words = subject_words(subjects)
        arms = np.stack([cols.arms[s] for s in book.slots], axis=1).astype(np.int32)
        keys, event, code, _ = cols.segments
        # Pairs are interned, and a decision's pairs kept, in one canonical order (by the first
        # decision that uses each, then by name), whatever order the learn path listed them in:
        # learning from events and from the join's columns keep the same ledger.
        first = np.full(len(keys), np.iinfo(np.int64).max)
        np.minimum.at(first, code, event)
        codes = np.empty(len(keys), dtype=np.int32)
        for j in sorted(range(len(keys)), key=lambda j: (int(first[j]), keys[j])):
            codes[j] = book.code(keys[j])
        order = np.lexsort((codes[code], event))
        event, code = event[order], code[order]
        rows = {"subject_hi": words[:, 0], "subject_lo": words[:, 1], "ts": cols.ts,
                "holdout": cols.holdout.astype(np.bool_), "best": cols.best,
                "has_context": cols.has_context, "arms": arms,
                "rewards": np.stack([cols.rewards[s] for s in book.slots], axis=1),
                "outcomes": cols.outcomes.astype(np.int32)}
        context_at = np.concatenate([[0], np.cumsum(cols.has_context)])
        pair_at = np.searchsorted(event, np.arange(n + 1))
        start = 0
        while start < n:
            chunk = book.open
            if chunk is not None and chunk.n >= self.chunk_rows:  # restored with a larger bound
                chunk.seal()
                chunk = book.open = None
            if chunk is None:
                chunk = book.open = book.empty_chunk()
                self._chunks.append(chunk)
            end = min(n, start + self.chunk_rows - chunk.n)
            lo, hi = pair_at[start], pair_at[end]
            most = self.chunk_rows  # a full chunk is sealed without a copy
            chunk.pairs.extend({"row": (event[lo:hi] - start + chunk.n).astype(np.int32),
                                "code": codes[code[lo:hi]]})
            chunk.rows.extend({k: v[start:end] for k, v in rows.items()}, most)
            chunk.context.extend({"x": cols.context[context_at[start]:context_at[end]]}, most)
            newest = np.where(arms[start:end] >= 0, cols.ts[start:end, None],
                              -math.inf).max(axis=0)
            chunk.newest = np.maximum(chunk.newest, newest)
            book.newest = np.maximum(book.newest, newest)
            self.size += end - start
            if chunk.n >= self.chunk_rows:
                chunk.seal()
                book.open = None
            start = end
        self._expire(book)
        self._trim()

    def find(self, subjects: Mapping[bytes, float]) -> Found:
        """The kept decisions of ``subjects`` (subject key -> erasure time, ms) made at or
        before their erasure time, per campaign."""
        self._loaded()
        found = Found(self)
        words = [(key_words(key), at) for key, at in subjects.items()]
        for chunk in self._chunks:
            hits = [chunk.matching(hi, lo, at) for (hi, lo), at in words]
            rows = np.unique(np.concatenate(hits)) if hits else np.zeros(0, np.intp)
            if len(rows):
                found.rows.append((chunk, rows))
        return found

    def columns(self, name: str, found: list[tuple[_Chunk, np.ndarray]]) -> _Learned:
        """The learned columns of campaign ``name``'s ``found`` rows (per chunk, sorted), in
        ledger order, as ``learn_columns`` had them (propensities zero: the ledger keeps
        none), with ``after``: per decision, the campaign's decisions learned after it, when
        the ledger holds every decision it learned (complete, nothing expired)."""
        book = self._books[name]
        parts: dict[str, list[np.ndarray]] = {}
        offset = 0
        # Per chunk of the campaign, its decisions and those of the chunks learned after it.
        tail = np.cumsum([c.n for c in self._chunks if c.campaign == name][::-1])[::-1]
        upto = {id(c): int(k) for c, k in zip(
            (c for c in self._chunks if c.campaign == name), tail, strict=True)}
        for chunk, rows in found:
            parts.setdefault("after", []).append(upto[id(chunk)] - 1 - rows)
            mask = np.zeros(chunk.n, dtype=np.bool_)
            mask[rows] = True
            pair_rows = chunk.pairs.used()["row"]
            in_rows = mask[pair_rows]
            renumber = np.cumsum(mask, dtype=np.int64) - 1
            r = chunk.rows.used()
            for key, value in (*((k, r[k][rows]) for k in _ROW_COLUMNS),
                               ("x", chunk.context.used()["x"][mask[r["has_context"]]]),
                               ("event", offset + renumber[pair_rows[in_rows]]),
                               ("code", chunk.pairs.used()["code"][in_rows])):
                parts.setdefault(key, []).append(value)
            offset += len(rows)
        col = {key: np.concatenate(value) for key, value in parts.items()}
        seen, local = np.unique(col["code"], return_inverse=True)
        arms, rewards = col["arms"], col["rewards"]
        return _Learned(
            ts=col["ts"], holdout=col["holdout"].astype(np.int64), best=col["best"],
            arms={s: arms[:, j].astype(np.int64) for j, s in enumerate(book.slots)},
            propensities={s: np.zeros(offset) for s in book.slots},
            rewards={s: np.ascontiguousarray(rewards[:, j]) for j, s in enumerate(book.slots)},
            has_context=col["has_context"], context=col["x"],
            segments=([book.pairs[k] for k in seen.tolist()], col["event"],
                      local.reshape(-1).astype(np.int64), offset),
            outcomes=col["outcomes"].astype(np.int64),
            clusters=key_clusters(np.stack([col["subject_hi"], col["subject_lo"]], axis=1)
                                  .astype("<u8").view(np.uint8)),
            after=col["after"].astype(np.int64)
            if self.complete and not self.expired else None)

    def remove(self, found: Found) -> None:
        """Take ``found``'s decisions out of the ledger; segment pairs no kept decision uses
        are forgotten too."""
        touched = set()
        for chunk, rows in found.rows:
            drop = np.zeros(chunk.n, dtype=np.bool_)
            drop[rows] = True
            chunk.without(drop)
            self.size -= len(rows)
            touched.add(chunk.campaign)
        for name in touched:
            self._compact(name)

    def _compact(self, name: str) -> None:
        """Renumber a campaign's segment pairs to those its chunks use; a campaign without
        chunks leaves the ledger."""
        book = self._books[name]
        chunks = [c for c in self._chunks if c.campaign == name]
        if not chunks:
            del self._books[name]
            return
        used = np.zeros(len(book.pairs), dtype=np.bool_)
        for chunk in chunks:
            used[chunk.pairs.used()["code"]] = True
        renumber = (np.cumsum(used, dtype=np.int64) - 1).astype(np.int32)
        for chunk in chunks:
            codes = chunk.pairs.arrays["code"]
            codes[:chunk.pairs.n] = renumber[codes[:chunk.pairs.n]]
        book.pairs = [p for p, keep in zip(book.pairs, used.tolist(), strict=True) if keep]
        book.pair_index = {p: i for i, p in enumerate(book.pairs)}

    def _expire(self, book: _Book) -> None:
        """Drop the chunks of ``book``'s campaign that decayed past its horizon."""
        if book.horizon is None:
            return
        limit = book.newest - book.horizon
        old = [c for c in self._chunks if c.campaign == book.name
               and c is not book.open and np.all(c.newest < limit)]
        for chunk in old:
            self._drop(chunk)
            self.expired += chunk.n
        if old:
            self._compact(book.name)

    def _trim(self) -> None:
        """Drop the oldest chunks until at most ``max_decisions`` decisions are kept."""
        touched = set()
        while self.size > self.max_decisions:
            chunk = self._chunks[0]
            self._drop(chunk)
            self.dropped += chunk.n
            self.complete = False
            touched.add(chunk.campaign)
        for name in touched:
            self._compact(name)

    def _drop(self, chunk: _Chunk) -> None:
        self._chunks.remove(chunk)
        self.size -= chunk.n
        book = self._books[chunk.campaign]
        if book.open is chunk:
            book.open = None

    # -- snapshots ----------------------------------------------------------------------

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The ledger as JSON-ready meta and named arrays (the chunks' columns in use); when
        stored ``apart``, a sealed chunk is its reference (``key``, ``at``) and has no arrays
        (ValueError if one is not stored yet: ``unstored``)."""
        arrays: dict[str, np.ndarray] = {}
        chunks: list[dict[str, Any]] = []
        for i, chunk in enumerate(self._chunks):
            sealed = chunk.order is not None
            item: dict[str, Any] = {"campaign": chunk.campaign, "sealed": sealed}
            chunks.append(item)
            if sealed and (self.apart or chunk.missing):
                if chunk.ref is None:
                    raise ValueError(f"ledger chunk {i}: sealed but not stored apart yet")
                item["key"], item["at"] = chunk.ref
                continue
            for group, columns in (("rows", chunk.rows), ("context", chunk.context),
                                   ("pairs", chunk.pairs)):
                for name, value in columns.used().items():
                    arrays[f"{i}/{group}/{name}"] = value
        books = {name: {"pairs": [list(p) for p in book.pairs]}
                 for name, book in self._books.items()}
        return ({"dropped": self.dropped, "expired": self.expired, "complete": self.complete,
                 "campaigns": books, "chunks": chunks}, arrays)

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: Mapping[str, np.ndarray],
                   campaigns: Mapping[str, _Campaign]) -> Ledger:
        """The ledger of ``state`` for the restored ``campaigns``; its bound is set by
        ``limit`` (not part of the state). Sealed chunks stored apart come as references
        (``references``), to be read (``load``) before the ledger is used; the ledger is then
        ``apart``."""
        ledger = cls()
        ledger.dropped, ledger.expired = int(meta["dropped"]), int(meta["expired"])
        ledger.complete = bool(meta["complete"])
        for name, saved in meta["campaigns"].items():
            book = ledger._books[name] = _Book(campaigns[name])
            for key, value in saved["pairs"]:
                book.code((key, value))
        for i, item in enumerate(meta["chunks"]):
            name = item["campaign"]
            book = ledger._books[name]
            if "key" in item:
                chunk = book.empty_chunk()
                chunk.ref, chunk.missing = (str(item["key"]), int(item["at"])), True
                chunk.order = np.zeros(0, dtype=np.int32)
                ledger._chunks.append(chunk)
                ledger.apart = True
                continue
            groups = {}
            for group in ("rows", "context", "pairs"):
                prefix = f"{i}/{group}/"
                columns = {k[len(prefix):]: np.array(v) for k, v in arrays.items()
                           if k.startswith(prefix)}
                groups[group] = _Columns(columns, len(next(iter(columns.values()))))
            if set(groups["rows"].arrays) != set(_ROW_COLUMNS):
                raise ValueError(f"ledger chunk {i}: columns {sorted(groups['rows'].arrays)}")
            chunk = _Chunk(name, groups["rows"], groups["context"], groups["pairs"],
                           _newest(groups["rows"]))
            book.newest = np.maximum(book.newest, chunk.newest)
            if item["sealed"]:
                chunk.seal()
            else:
                book.open = chunk
            ledger._chunks.append(chunk)
            ledger.size += chunk.n
        return ledger

    # -- sealed chunks stored apart -----------------------------------------------------

    def unstored(self) -> list[_Chunk]:
        """The sealed chunks whose current version is not stored apart yet, oldest first."""
        return [c for c in self._chunks if c.order is not None and c.ref is None]

    def stored(self, chunk: _Chunk, key: str, at: int) -> None:
        """``chunk``'s current version is stored under ``key`` at position ``at``."""
        chunk.ref = (key, at)

    def stored_keys(self) -> set[str]:
        """The keys of the sealed chunks stored apart (what a snapshot now references)."""
        return {c.ref[0] for c in self._chunks if c.order is not None and c.ref is not None}

    def references(self) -> list[tuple[str, int]]:
        """The (key, position) of each sealed chunk not read yet, in ledger order."""
        return [cast(tuple[str, int], c.ref) for c in self._chunks if c.missing]

    def chunk_value(self, chunk: _Chunk) -> bytes:
        """A sealed chunk as bytes (an npz: its columns, and its segment pairs by name, so
        that it stays valid when the campaign's pairs are renumbered)."""
        codes = chunk.pairs.used()["code"]
        used, local = np.unique(codes, return_inverse=True)
        pairs = self._books[chunk.campaign].pairs
        meta = {"campaign": chunk.campaign, "pairs": [list(pairs[k]) for k in used.tolist()]}
        arrays = {f"rows/{k}": v for k, v in chunk.rows.used().items()}
        arrays["context/x"] = chunk.context.used()["x"]
        arrays["pairs/row"] = chunk.pairs.used()["row"]
        arrays["pairs/code"] = local.reshape(-1).astype(np.int32)
        buffer = io.BytesIO()
        np.savez(buffer, meta=np.frombuffer(orjson.dumps(meta), dtype=np.uint8),
                 allow_pickle=True, **arrays)
        return buffer.getvalue()

    def load(self, values: list[bytes]) -> None:
        """Read the sealed chunks of ``references`` from their stored ``values`` (in that
        order); ValueError if one is damaged or of another campaign."""
        missing = [c for c in self._chunks if c.missing]
        if len(values) != len(missing):
            raise ValueError(f"erasure ledger: {len(values)} stored chunks for "
                             f"{len(missing)} references")
        for chunk, value in zip(missing, values, strict=True):
            where = f"ledger chunk {chunk.ref[0] if chunk.ref else '?'}"
            try:
                with np.load(io.BytesIO(value), allow_pickle=False) as npz:
                    meta = orjson.loads(npz["meta"].tobytes())
                    arrays = {k: npz[k] for k in npz.files if k != "meta"}
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile,
                    orjson.JSONDecodeError) as exc:
                raise ValueError(f"{where}: not a stored ledger chunk ({exc})") from None
            if meta.get("campaign") != chunk.campaign:
                raise ValueError(f"{where}: of campaign {meta.get('campaign')!r}, referenced "
                                 f"for {chunk.campaign!r}")
            rows = {k[5:]: v for k, v in arrays.items() if k.startswith("rows/")}
            if set(rows) != set(_ROW_COLUMNS):
                raise ValueError(f"{where}: columns {sorted(rows)}")
            book = self._books[chunk.campaign]
            codes = np.array([book.code((k, v)) for k, v in meta["pairs"]], dtype=np.int32)
            chunk.rows = _Columns(rows, len(rows["ts"]))
            chunk.context = _Columns({"x": arrays["context/x"]}, len(arrays["context/x"]))
            chunk.pairs = _Columns({"row": arrays["pairs/row"],
                                    "code": codes[arrays["pairs/code"]]},
                                   len(arrays["pairs/row"]))
            chunk.newest = _newest(chunk.rows)
            chunk.missing = False
            chunk.seal()
            book.newest = np.maximum(book.newest, chunk.newest)
            self.size += chunk.n


class Found:
    """Subjects' kept decisions (``Ledger.find``): per chunk the rows (sorted)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.rows: list[tuple[_Chunk, np.ndarray]] = []

    def __len__(self) -> int:
        return sum(len(rows) for _, rows in self.rows)

    def by_campaign(self) -> Iterator[tuple[str, _Learned]]:
        """Per campaign the found decisions' learned columns, in one batch."""
        chunks: dict[str, list[tuple[_Chunk, np.ndarray]]] = {}
        for chunk, rows in self.rows:
            chunks.setdefault(chunk.campaign, []).append((chunk, rows))
        for name, found in chunks.items():
            yield name, self.ledger.columns(name, found)
