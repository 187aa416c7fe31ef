"""Snapshots: campaigns, policy states, report tallies and the open attribution windows as
one npz (``meta`` JSON plus named arrays), written atomically; and read back. The stream
worker's partition checkpoints are these snapshots too (``Engine.to_bytes``).

The lift's clustered tallies (``tally._Clustered``, per group, for the campaign and each slot)
are arrays under ``clustered/<ci>/[<si>/]<group>/``: the buckets that hold anything
(``bucket``), their decisions and decisions per outcome type (``counts``, (m, 1 + K), the
narrowest integer type that holds them) and reward (``reward``, float64); a snapshot written
before they were kept has none, and loads with them empty (the lift intervals then cover the
decisions learned since).

The subscribers' secrets (``bandit.engine.pseudonyms``) are ``subjects/index`` and
``subjects/secret``, (m, 16) uint8 each: an erased subscriber's are absent from every snapshot
written after the erasure. A snapshot without them (written before they were kept) loads
with none: subscribers get new pseudonyms, and their decisions logged before keep the legacy
``subject_key`` by which erasure still finds them.

The erasure ledger is ``ledger/<i>/<group>/<column>`` per chunk, with its meta under
``ledger``; a ledger stored apart (the stream worker's, ``Ledger.apart``) has arrays for its
open chunks only, and its sealed chunks as references in the meta (``Ledger.state``), read back
by ``Ledger.load`` after the snapshot.

A linear TS slot's state written before it kept its sums of rewards and contexts (for its prior
centred on the mean reward) cannot be derived from the other sums: ``LinTS.from_state`` refuses
it with IncompatibleStateError, and the snapshot does not load."""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bandit.engine.campaign import _Campaign, build_campaign, guard_state, read_guard
from bandit.engine.join import Joiner
from bandit.engine.ledger import Ledger
from bandit.engine.pseudonyms import SubjectKeys
from bandit.engine.tally import _K, _Clustered, _Outcomes, _Tally, clustered_groups
from bandit.errors import IncompatibleStateError
from bandit.models import CampaignSpec
from bandit.models.reports import Group
from bandit.policies import from_state

SNAPSHOT_MAGIC = "bandit-engine-snapshot"
SNAPSHOT_FORMAT = 2  # 2: the open attribution windows as binary columns
_JOIN = "join/"  # snapshot arrays of the attribution join (policy arrays are "ci/si/role/")
_CLUSTERED = "clustered/"  # the lift's clustered tallies: "clustered/ci/group/", ".../ci/si/..."
_LEDGER = "ledger/"  # snapshot arrays of the erasure ledger
_SUBJECTS = "subjects/"  # the subscribers' secrets: "subjects/index", "subjects/secret"


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """``data`` into ``path``: a crash leaves the old file or the new one, never half of one."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def to_bytes(meta: dict[str, Any], arrays: Mapping[str, np.ndarray]) -> bytes:
    """The npz of ``snapshot``'s parts."""
    buffer = io.BytesIO()
    # allow_pickle: savez's default, named so that ``**arrays`` is not read as that flag
    np.savez(buffer, meta=np.frombuffer(orjson.dumps(meta), dtype=np.uint8), allow_pickle=True,
             **arrays)
    return buffer.getvalue()


def snapshot(campaigns: Mapping[str, _Campaign], joiner: Joiner, rejected_events: int
             ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The snapshot's meta (JSON-ready) and arrays, from the engine's state."""
    arrays: dict[str, np.ndarray] = {}
    items = []
    for ci, c in enumerate(campaigns.values()):
        slots = []
        for si, s in enumerate(c.slots):
            policies = {}
            for role, policy in (("policy", s.policy), ("fallback", s.fallback)):
                state = policy.state()
                for name, value in state["arrays"].items():
                    arrays[f"{ci}/{si}/{role}/{name}"] = value
                policies[role] = {k: v for k, v in state.items() if k != "arrays"}
            slots.append({
                "policies": policies,
                "shared_fallback": s.fallback is s.policy,
                "conditioned": s.conditioned,
                "columns": s.columns,
                "arm_tally": {a: vars(t) for a, t in s.arm_tally.items()},
                "segments": [[seg, val, counts, vars(s.segment_tally[(seg, val)]),
                              vars(s.segment_outcomes.get((seg, val), _Outcomes()))]
                             for (seg, val), counts in s.segment_counts.items()],
                "groups": [[arm, group, vars(t), vars(s.outcome_tally[(arm, group)])]
                           for (arm, group), t in s.group_tally.items()],
            })
            _clustered_arrays(f"{_CLUSTERED}{ci}/{si}/", s.clustered, arrays)
        _clustered_arrays(f"{_CLUSTERED}{ci}/", c.clustered, arrays)
        items.append({
            "spec": c.spec.model_dump(mode="json"), "paused": c.paused, "version": c.version,
            "personalized": vars(c.personalized), "holdout": vars(c.holdout), "slots": slots,
            "outcomes": {group: vars(t) for group, t in c.outcomes.items()},
            **guard_state(c),
        })
    join, windows = joiner.state()
    arrays.update({f"{_JOIN}{name}": value for name, value in windows.items()})
    meta = {"magic": SNAPSHOT_MAGIC, "format": SNAPSHOT_FORMAT, "campaigns": items,
            "joiner": join, "rejected_events": rejected_events}
    return meta, arrays


def _clustered_arrays(prefix: str, tallies: Mapping[Group, _Clustered],
                      arrays: dict[str, np.ndarray]) -> None:
    """The clustered tallies as arrays (the module docstring): only the buckets that hold
    anything, so a small campaign's snapshot stays small, and the counts in the narrowest
    integer type that holds them (read back as int64)."""
    for group, t in tallies.items():
        used = np.flatnonzero((t.n != 0) | t.reached.any(axis=1) | (t.reward != 0))
        counts = np.column_stack([t.n[used], t.reached[used]])
        arrays[f"{prefix}{group}/bucket"] = used.astype(np.uint16)
        arrays[f"{prefix}{group}/counts"] = counts.astype(_narrowest(counts))
        arrays[f"{prefix}{group}/reward"] = t.reward[used]


def _narrowest(values: np.ndarray) -> type[np.signedinteger]:
    """The narrowest signed integer type that holds every one of ``values``."""
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    for kind in (np.int8, np.int16, np.int32):
        if np.iinfo(kind).min <= low and high <= np.iinfo(kind).max:
            return kind
    return np.int64


def _clustered_from(prefix: str, arrays: Mapping[str, np.ndarray]) -> dict[Group, _Clustered]:
    """``_clustered_arrays`` read back; empty tallies where the snapshot has none (written
    before they were kept). ValueError if the arrays do not fit together."""
    out = clustered_groups()
    for group, t in out.items():
        bucket = arrays.get(f"{prefix}{group}/bucket")
        if bucket is None:
            continue
        counts, reward = arrays[f"{prefix}{group}/counts"], arrays[f"{prefix}{group}/reward"]
        m = len(bucket)
        if (counts.shape != (m, 1 + _K) or reward.shape != (m,)
                or counts.dtype.kind != "i" or bucket.dtype.kind not in "iu"
                or (m and not 0 <= bucket.min() <= bucket.max() < len(t.n))):
            raise ValueError(f"{prefix}{group}: clustered tallies do not fit together")
        t.n[bucket], t.reached[bucket], t.reward[bucket] = counts[:, 0], counts[:, 1:], reward
    return out


def read(data: bytes, path: str, model_only: bool) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A snapshot's meta and arrays (the join's left out when ``model_only``); damaged or
    foreign data gets IncompatibleStateError naming ``path``."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            meta = orjson.loads(npz["meta"].tobytes())
            # Members are read on access: a model-only load never touches the windows.
            arrays = {k: npz[k] for k in npz.files if k != "meta"
                      and not (model_only and k.startswith((_JOIN, _LEDGER, _SUBJECTS)))}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise IncompatibleStateError(f"{path}: not an engine snapshot ({exc})") from None
    if not isinstance(meta, dict) or meta.get("magic") != SNAPSHOT_MAGIC:
        raise IncompatibleStateError(f"{path}: not an engine snapshot")
    if meta.get("format") != SNAPSHOT_FORMAT:
        raise IncompatibleStateError(
            f"{path}: snapshot format {meta.get('format')!r}, expected {SNAPSHOT_FORMAT}")
    return meta, arrays


def restore_campaign(item: dict[str, Any], ci: int, arrays: Mapping[str, np.ndarray],
                     rng: np.random.Generator) -> _Campaign:
    """Campaign ``ci`` of a snapshot's meta, its policies seeded from ``rng``. A snapshot
    written before outcome tallies (or the lift's clustered tallies) were kept has none: they
    start empty."""
    c = build_campaign(CampaignSpec.model_validate(item["spec"]), rng)
    c.paused, c.version = bool(item["paused"]), int(item["version"])
    c.personalized, c.holdout = _Tally(**item["personalized"]), _Tally(**item["holdout"])
    c.outcomes = {group: _Outcomes(**t) for group, t in item.get("outcomes", {}).items()}
    c.clustered = _clustered_from(f"{_CLUSTERED}{ci}/", arrays)
    c.paused_by, c.baseline = read_guard(item)
    for si, (s, saved) in enumerate(zip(c.slots, item["slots"], strict=True)):
        restored = {}
        for role, head in saved["policies"].items():
            prefix = f"{ci}/{si}/{role}/"
            state = dict(head, arrays={k[len(prefix):]: v for k, v in arrays.items()
                                       if k.startswith(prefix)})
            restored[role] = from_state(state, rng=int(rng.integers(2**63)))
        # Widths fixed at creation, before arms were added to earlier slots.
        s.conditioned = [(prev, int(w)) for prev, w in saved["conditioned"]]
        s.columns = list(saved["columns"])
        s.policy = restored["policy"]
        s.fallback = s.policy if saved["shared_fallback"] else restored["fallback"]
        s.arm_tally = {a: _Tally(**t) for a, t in saved["arm_tally"].items()}
        for seg, val, counts, tally, *outcomes in saved["segments"]:
            s.segment_counts[(seg, val)] = dict(counts)
            s.segment_tally[(seg, val)] = _Tally(**tally)
            if outcomes:
                s.segment_outcomes[(seg, val)] = _Outcomes(**outcomes[0])
        for arm, group, tally, outcomes in saved.get("groups", []):
            s.group_tally[(arm, group)] = _Tally(**tally)
            s.outcome_tally[(arm, group)] = _Outcomes(**outcomes)
        s.clustered = _clustered_from(f"{_CLUSTERED}{ci}/{si}/", arrays)
    return c


def restore_joiner(meta: dict[str, Any], arrays: Mapping[str, np.ndarray],
                   campaign: Callable[[str], CampaignSpec]) -> Joiner:
    """The attribution join of a snapshot."""
    return Joiner.from_state(meta["joiner"], {k[len(_JOIN):]: v for k, v in arrays.items()
                                              if k.startswith(_JOIN)}, campaign)


def add_ledger(meta: dict[str, Any], arrays: dict[str, np.ndarray], ledger: Ledger) -> None:
    """The erasure ledger into a snapshot's meta (key ``ledger``) and arrays."""
    head, columns = ledger.state()
    meta["ledger"] = head
    arrays.update({f"{_LEDGER}{name}": value for name, value in columns.items()})


def restore_ledger(meta: dict[str, Any], arrays: Mapping[str, np.ndarray],
                   campaigns: Mapping[str, _Campaign], model_only: bool) -> Ledger:
    """The erasure ledger of a snapshot (its bound unset: ``Engine.keep_ledger``; sealed
    chunks stored apart still to be read: ``Ledger.load``). A snapshot without one (written
    before ledgers), or read ``model_only``, gives an empty ledger that is not complete: the
    model holds decisions it does not."""
    if model_only or "ledger" not in meta:
        ledger = Ledger()
        ledger.complete = False
        return ledger
    return Ledger.from_state(meta["ledger"], {k[len(_LEDGER):]: v for k, v in arrays.items()
                                              if k.startswith(_LEDGER)}, campaigns)


def add_subjects(arrays: dict[str, np.ndarray], subjects: SubjectKeys) -> None:
    """The subscribers' secrets into a snapshot's arrays."""
    arrays[f"{_SUBJECTS}index"], arrays[f"{_SUBJECTS}secret"] = subjects.state()


def restore_subjects(arrays: Mapping[str, np.ndarray], subjects: SubjectKeys) -> None:
    """The subscribers' secrets of a snapshot into ``subjects`` (none in a snapshot written
    before they were kept, or read model-only)."""
    index = arrays.get(f"{_SUBJECTS}index")
    if index is not None:
        subjects.restore(index, arrays[f"{_SUBJECTS}secret"])
