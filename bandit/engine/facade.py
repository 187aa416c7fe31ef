"""The Engine: a facade of short methods over the campaigns (``campaign``), the decision
paths (``decide``, ``output``, ``randomness``), learning (``learn``, ``join``), partition
states (``merge``), snapshots (``snapshot``) and reports (``report``).

Requests arrive validated by their pydantic models; the engine checks once what only it knows
(the campaign exists, the context fits its schema, the arms exist) and turns contexts into one
float64 matrix per slot so that the policies' batch kernels do the work. Decision ids, the
consent bit and the replayable draws are described in ``bandit.engine.randomness``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from bandit.engine import campaign as _campaign
from bandit.engine import decide as _decide
from bandit.engine import erase as _erase
from bandit.engine import guardrails as _guardrails
from bandit.engine import learn as _learn
from bandit.engine import merge as _merge
from bandit.engine import report as _report
from bandit.engine import snapshot as _snapshot
from bandit.engine.campaign import Checkable, _Campaign
from bandit.engine.decide import RequestColumns, ValueColumns
from bandit.engine.decisionlog import DecisionLog
from bandit.engine.join import Closed, Joinable, Joiner, JoinResult
from bandit.engine.ledger import Ledger
from bandit.engine.output import DecisionBatch, OneDecision
from bandit.engine.pseudonyms import SubjectKeys
from bandit.engine.randomness import _in_holdout, id_words, strip_consentless
from bandit.errors import (
    ConflictError,
    IncompatibleStateError,
    InvalidInputError,
    NotFoundError,
    OverCapacityError,
)
from bandit.models import (
    Arm,
    CampaignReport,
    CampaignSpec,
    Click,
    Decision,
    DecisionRequest,
)
from bandit.policies import Policy
from bandit.wire.decisions import DecisionRequestLike
from bandit.wire.protocols import JoinedLike

log = logging.getLogger(__name__)

_SECRETS_STREAM = 0x5EC  # with id_seed: the subscribers' secrets' generator, apart from the ids'


class Engine:
    """Campaigns and their policies, in one process; thread-safe (one lock).

    >>> from bandit.models import CampaignSpec
    >>> engine = Engine(seed=1)
    >>> _ = engine.create_campaign(CampaignSpec.model_validate({"name": "weekly", "holdout": 0.0,
    ...     "slots": [{"name": "subject", "arms": [{"id": "a"}, {"id": "b"}],
    ...                "default_arm": "a"}]}))
    >>> d = engine.decide(DecisionRequest(campaign="weekly", user_id="u1"))
    >>> d.slots[0].arm in {"a", "b"}, 0 < d.slots[0].propensity <= 1
    (True, True)
    """

    def __init__(self, *, seed: int = 0, id_seed: int | None = None) -> None:
        """``seed``: the policies' generators (and merges). ``id_seed``: for reproducible runs
        only, decision ids from a generator with this seed instead of the operating system
        (see the module docstring): two engines with the same ``id_seed`` issue the same ids."""
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._id_rng = None if id_seed is None else np.random.default_rng(id_seed)
        # Subscribers' secrets, whose keyed hashes the decision log names them by
        # (``bandit.engine.pseudonyms``); seeded apart from the ids, which stay as they were.
        self.subjects = SubjectKeys(None if id_seed is None
                                    else np.random.default_rng((id_seed, _SECRETS_STREAM)))
        self.stripped_impressions = 0  # impressions ``ingest`` took context or segments from
        self._campaigns: dict[str, _Campaign] = {}
        self._lock = threading.RLock()
        self._joiner = Joiner(self.campaign)
        self._ledger = Ledger()  # off until keep_ledger
        self.rejected_events = 0
        # Counted by the join, never learned: machine and scanner outcomes, unsent decisions.
        self.excluded: Counter[str] = Counter()
        self.ready = False
        # Called once per decide call with what it decided (outside the lock, unless the
        # caller holds it); it must not block: the service's queues and never raises.
        self.decision_sink: Callable[[DecisionLog], object] | None = None
        # Called under the lock before anything reads or changes the join or what it learned
        # (ingest and record, erase, report, snapshot, open windows, the cap): a sink that
        # queues decisions (the service's in-process ``JoinLog``) hands them to the join here,
        # so that they are in it before any event that names them.
        self.before_join: Callable[[], object] | None = None
        self.clock: Callable[[], int] = _now_ms  # the decision log's ts (ms), breaches' at_ms
        # Guardrail breaches per (campaign, outcome type): each paused its campaign.
        self.breaches: Counter[tuple[str, str]] = Counter()
        # Whether learning (and ``guard``) evaluates guardrails. A stream worker's partition
        # engines do not: each sees one partition, and the service evaluates the merged model.
        self.guarding = True

    # -- campaigns ----------------------------------------------------------------------

    def create_campaign(self, spec: CampaignSpec) -> CampaignSpec:
        with self._lock:
            if spec.name in self._campaigns:
                raise ConflictError(f"campaign {spec.name!r} already exists")
            self._campaigns[spec.name] = _campaign.build_campaign(spec, self._rng)
            return spec

    def campaigns(self) -> list[CampaignSpec]:
        with self._lock:
            return [c.spec for c in self._campaigns.values()]

    def campaign(self, name: str) -> CampaignSpec:
        return self._get(name).spec

    def _get(self, name: str) -> _Campaign:
        try:
            return self._campaigns[name]
        except KeyError:
            raise NotFoundError(f"no campaign {name!r}") from None

    def add_arm(self, campaign: str, slot: str, arm: Arm) -> CampaignSpec:
        """Add an arm to a running slot; it starts from the prior (hybrid: from its features)."""
        with self._lock:
            return _campaign.add_arm(self._get(campaign), slot, arm)

    def retire_arm(self, campaign: str, slot: str, arm_id: str) -> CampaignSpec:
        """Never choose ``arm_id`` again; decisions already made keep their propensities."""
        with self._lock:
            return _campaign.retire_arm(self._get(campaign), slot, arm_id)

    def pause(self, campaign: str, paused: bool = True) -> CampaignSpec:
        """The kill switch: while paused every subscriber gets each slot's default arm.
        Resuming a campaign that a guardrail paused clears the reason and restarts its
        guardrails' test from the sums now (``bandit.engine.guardrails``)."""
        with self._lock:
            c = self._get(campaign)
            if paused:
                c.paused = True
            else:
                _guardrails.resume(c)
            return c.spec

    def is_paused(self, campaign: str) -> bool:
        return self._get(campaign).paused

    def model_version(self, campaign: str) -> int:
        return self._get(campaign).version

    def slot_policy(self, campaign: str, slot: str) -> tuple[Policy, list[str], list[str]]:
        """A slot's policy (not a copy), the names of its input columns and its arm ids."""
        s = self._get(campaign).slot(slot)
        return s.policy, list(s.columns), list(s.arm_ids)

    def active_arms(self, campaign: str, slot: str) -> list[str]:
        s = self._get(campaign).slot(slot)
        return [a for a, on in zip(s.arm_ids, s.policy.active, strict=True) if on]

    # -- decisions ----------------------------------------------------------------------

    def in_holdout(self, campaign: str, user_id: str) -> bool:
        """Stable per (campaign, user): the same subscribers stay out for the whole campaign."""
        return _in_holdout(campaign, user_id, self._get(campaign).spec.holdout)

    def decide(self, request: DecisionRequest) -> Decision:
        """One subscriber's decision: ``decide_batch(request.campaign, [request])``'s, by the
        single-row path of ``decide_one``."""
        return Decision.model_validate_json(self.decide_one(request).json)

    def decide_one(self, request: Any) -> OneDecision:
        """One subscriber's decision as its JSON text, the same (decision id, arms,
        propensities, explanations, holdout, bytes) as ``decide_batch(request.campaign,
        [request]).ndjson()`` (without its newline) from the same engine state, and the same
        errors; but without the batch machinery, which costs more than deciding for one row.

        ``request`` is a ``DecisionRequest`` or anything with its attributes (the service's
        msgspec mirror). An event loop that must not wait takes ``lock`` without blocking
        first (recording a large batch of events holds it for a while).
        """
        with self._lock:
            one = _decide.decide_one(self._get(request.campaign), request, self._id_rng,
                                     self.subjects, self._log_ts(), self._log_vectors())
        self.log_decisions(one.log)
        return one

    @property
    def lock(self) -> threading.RLock:
        """The engine's (reentrant) lock: a caller can try it without blocking, then decide
        while holding it."""
        return self._lock

    def decide_many(self, campaign: str, requests: Sequence[DecisionRequest]) -> list[Decision]:
        return self.decide_batch(campaign, requests).decisions()

    def decide_batch(self, campaign: str, requests: Sequence[DecisionRequestLike], *,
                     logged: bool = True) -> DecisionBatch:
        """Decide every slot for every request, slot by slot, each slot in one batch call.
        ``logged=False``: the call's decision log is kept in ``batch.log`` instead of going
        to the sink (a caller that may still refuse the whole request logs it later with
        ``log_decisions``, or never)."""
        with self._lock:
            c = self._get(campaign)
            for i, r in enumerate(requests):
                if r.campaign != campaign:
                    raise InvalidInputError(f"request {i}: campaign {r.campaign!r} differs "
                                            f"from the batch's {campaign!r}")
            # Ids are drawn before the contexts are read: a refused batch uses up its ids.
            words = id_words(self._id_rng, len(requests))
            batch = _decide.decide_columns(c, _decide.batch_columns(c, requests), words,
                                           self.subjects, self._log_ts(),
                                           self._log_vectors())
        if logged:
            self.log_decisions(batch.log)
        return batch

    def request_columns(self, campaign: str, user_ids: list[str], consent: np.ndarray,
                        explain: np.ndarray, contexts: Sequence[Any],
                        values: Callable[[Any], tuple], segments: Sequence[Mapping[str, str]],
                        absent: object) -> RequestColumns:
        """The columns of requests whose contexts a decoder already checked against the
        campaign's schema (``bandit.wire.batch``): ``values(contexts[i])`` are request i's
        values in the order of the schema's features, numbers for numeric ones and strings for
        categorical ones, ``absent`` where the request omits the feature. A numeric feature
        without a default that a consenting request omits raises InvalidInputError (without
        naming the row: the caller asks ``decide_batch`` for the error it would give)."""
        with self._lock:
            c = self._get(campaign)
        return _decide.request_columns(c, user_ids, consent, explain, contexts, values,
                                      segments, absent)

    def value_columns(self, campaign: str, user_ids: list[str], consent: np.ndarray,
                      explain: np.ndarray, contexts: ValueColumns, segments: ValueColumns
                      ) -> RequestColumns:
        """``request_columns`` of requests whose contexts and segments are columns
        (``ValueColumns``: a file's, already checked), with no Python object per row."""
        with self._lock:
            c = self._get(campaign)
        return _decide.value_columns(c, user_ids, consent, explain, contexts, segments)

    def decide_columns(self, columns: RequestColumns) -> DecisionBatch:
        """``decide_batch`` of requests given as columns (``request_columns``): the same
        decisions, ids drawn alike."""
        with self._lock:
            c = self._get(columns.campaign)
            batch = _decide.decide_columns(c, columns, id_words(self._id_rng, len(columns)),
                                           self.subjects, self._log_ts(),
                                           self._log_vectors())
        self.log_decisions(batch.log)
        return batch

    def _log_ts(self) -> int | None:
        """The decision log's time for this call, None without a sink (nothing logged)."""
        return None if self.decision_sink is None else self.clock()

    def _log_vectors(self) -> bool:
        """Whether the sink reads every arm's probability (a sink whose ``probabilities``
        attribute is False, the in-process join, does not: they are not computed)."""
        return bool(getattr(self.decision_sink, "probabilities", True))

    def log_decisions(self, log: DecisionLog | None) -> None:
        """Hand a decide call's log to the sink (nothing without one, or without a log)."""
        sink = self.decision_sink
        if log is not None and sink is not None:
            sink(log)

    # -- learning -----------------------------------------------------------------------

    def learn(self, joined: Sequence[JoinedLike]) -> None:
        """Learn closed attribution windows, batched per campaign and slot. Events of unknown
        campaigns, slots or arms are refused before anything is learned."""
        with self._lock:
            for name, events in _learn.by_campaign(self._campaigns, self._get, joined).items():
                c = self._campaigns[name]
                cols = _learn.event_columns(c, events)
                _learn.learn_columns(c, cols)
                self._ledger.add(c, cols, [e.subject for e in events])
                self._guard(c)

    def learn_closed(self, closed: Closed) -> None:
        """``learn(closed.events())`` straight from the join's columns, without an event per
        decision (the campaigns, slots and arms were checked when the impressions came in).
        The same model, bit for bit (tests/bandit/engine/test_engine.py)."""
        with self._lock:
            for name, rows in _learn.closed_campaigns(closed):
                c = self._get(name)
                cols = _learn.closed_columns(c, closed, rows)
                _learn.learn_columns(c, cols)
                self._ledger.add(c, cols, [closed.subjects[i] for i in rows.tolist()])
                self._guard(c)

    def guard(self) -> list[str]:
        """Evaluate every running campaign's guardrails (``bandit.engine.guardrails``); a
        breach pauses its campaign with the reason. Learning does it for the campaigns it
        learns; the stream service calls it after absorbing the workers' states. Returns the
        campaigns paused now (none while not ``guarding``)."""
        with self._lock:
            return [c.spec.name for c in self._campaigns.values() if self._guard(c)]

    def _guard(self, c: _Campaign) -> bool:
        """``guardrails.check`` of one campaign, counted in ``breaches``: whether it tripped
        (never while not ``guarding``)."""
        if not self.guarding:
            return False
        reason = _guardrails.check(c, self.clock())
        if reason is None:
            return False
        self.breaches[(c.spec.name, reason.outcome)] += 1
        log.warning("campaign %r paused by its %s guardrail: lift in [%.6f, %.6f] (always-"
                    "valid 95%%), beyond %s %g", c.spec.name, reason.outcome,
                    reason.interval.low, reason.interval.high, reason.bound, reason.limit)
        return True

    def record(self, events: Sequence[Joinable]) -> int:
        """The in-process event path: logged decisions, sends, outcomes and legacy impressions
        through the attribution join (``bandit.engine.join``); closed windows are learned; a
        consent-less decision loses its context and segments (``ingest``). Unknown campaigns,
        slots, arms or context features refuse the whole batch before anything changes, and
        so does a decision over the join's cap (``limit_pending``: OverCapacityError). Returns
        how many of ``events`` the join accepted (duplicates, late and orphan events are
        counted in ``rejected_events``; machine and scanner outcomes and unsent decisions in
        ``excluded``); events of earlier calls that this call's time turns into orphans do
        not count against it."""
        # Stripped here, not in ingest, so that the rejected events are the ones given to it.
        events, stripped = strip_consentless(events)
        mine = {id(e) for e in events}  # alive until the return: ids stay theirs
        rejected = self.ingest(events, whole=True).rejected
        with self._lock:
            self.stripped_impressions += stripped
        return len(events) - sum(id(r.event) in mine for r in rejected)

    def keep_ledger(self, max_decisions: int) -> None:
        """Keep the decisions learned from now on, at most ``max_decisions`` (0: none), in the
        erasure ledger (``bandit.engine.ledger``), so that ``erase`` takes a subject's out of
        the model; the oldest beyond the bound are dropped now. Not part of a snapshot (the
        ledger is), so set again after loading one."""
        with self._lock:
            self._ledger.limit(max_decisions)

    @property
    def ledger(self) -> Ledger:
        """The erasure ledger itself, for the stream worker, which stores its sealed chunks
        apart from the checkpoints (``Ledger.apart``); not for use while others call."""
        return self._ledger

    def limit_pending(self, max_pending: int) -> None:
        """Keep at most ``max_pending`` decisions of a campaign open in the attribution join
        (``bandit.engine.join``); not part of a snapshot, so set again after loading one."""
        with self._lock:
            self._join_ready()
            self._joiner.max_pending = max_pending

    def ingest(self, events: Sequence[Joinable],
               watermark: float | None = None, *, checked: bool = False,
               lap: Callable[[str | None], None] | None = None,
               whole: bool = False) -> JoinResult:
        """``record`` with the join's whole result: the closed decisions it learned and the
        events it rejected (duplicate, late, orphan) with reasons. ``watermark`` (event time)
        closes windows instead of the newest event time seen; the stream worker passes the
        slowest of its input streams. A bad event refuses the batch (see ``check_event``),
        unless ``checked`` says the caller already passed each through ``check_event`` and
        ``strip_consentless`` (the stream worker does both as it decodes).
        Events may also be ``bandit.wire`` Structs (the stream worker's decoder). ``lap``
        (a timing hook, ``streams.worker.Stages.lap``) is called with "join" and "learn".
        ``whole``: an impression over the join's cap refuses the batch (OverCapacityError)
        instead of being rejected alone. Impressions of decisions made without consent lose
        their context and segments first (``strip_consentless``; counted in
        ``stripped_impressions``), so theirs is never checked, kept or learned."""
        events, stripped = (events, 0) if checked else strip_consentless(events)
        with self._lock:
            self._join_ready()
            self.stripped_impressions += stripped
            for i, e in enumerate([] if checked else events):
                try:
                    self.check_event(e)
                except InvalidInputError as exc:
                    raise InvalidInputError(f"event {i} ({_name(e)}): {exc}") from None
            if whole and (over := self._joiner.over_cap(events, watermark)):
                refused = Counter(cast(str, events[i].campaign) for i in over)
                raise OverCapacityError(
                    f"{len(over)} of the decisions would leave more than "
                    f"{self._joiner.max_pending} decisions waiting for their attribution "
                    f"windows (campaign {', '.join(map(repr, sorted(refused)))}; setting "
                    "max_pending): nothing was recorded; retry once windows have closed",
                    dict(refused))
            result = self._joiner.add(events, watermark)
            if lap is not None:
                lap("join")
            if result.closed is not None and len(result.closed):
                self.learn_closed(result.closed)
                if lap is not None:
                    lap("learn")
            self.rejected_events += len(result.rejected)
            self.excluded.update(result.excluded)
            return result

    def check_event(self, e: Checkable) -> None:
        """InvalidInputError if the event does not fit the engine's campaigns: unknown campaign,
        slot or arm, or a context outside the campaign's schema."""
        _campaign.check_event(self._campaigns, e)

    def event_checker(self) -> _campaign.EventChecker:
        """``check_event`` for a batch of events during which the campaigns do not change (the
        stream worker's): each campaign's slots are looked up once."""
        return _campaign.event_checker(self._campaigns)

    # -- partition states (the stream worker) --------------------------------------------

    def campaign_record(self, name: str) -> dict[str, Any]:
        """What another process needs to hold the same campaign: the spec, the retired arms per
        slot, the pause flag and the guardrails' state (why a guardrail paused it, the
        baseline of a resume), JSON-ready (the stream's campaigns topic carries it)."""
        with self._lock:
            return _campaign.campaign_record(self._get(name))

    def sync_campaign(self, record: dict[str, Any]) -> None:
        """Bring a campaign to ``campaign_record``'s content: create it, add the arms it lacks,
        retire arms, set the pause flag and the guardrails' state. Idempotent; a record that
        changes anything but arms (slots, schema, policies) is refused with
        IncompatibleStateError."""
        try:
            spec = CampaignSpec.model_validate(record["spec"])
            retired, paused = dict(record["retired"]), bool(record["paused"])
            paused_by, baseline = _campaign.read_guard(record)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"campaign record: {exc}") from None
        with self._lock:
            if spec.name not in self._campaigns:
                self.create_campaign(spec)
            c = self._campaigns[spec.name]
            mine = [x.model_dump(exclude={"arms"}) for x in c.spec.slots]
            if (mine != [x.model_dump(exclude={"arms"}) for x in spec.slots]
                    or c.spec.model_dump(exclude={"slots"}) != spec.model_dump(exclude={"slots"})):
                raise IncompatibleStateError(
                    f"campaign {spec.name!r}: the record changes more than its arms")
            for slot in spec.slots:
                s = c.slot(slot.name)
                for arm in slot.arms:
                    if arm.id not in s.arm_index:
                        self.add_arm(spec.name, slot.name, arm)
                for arm_id in retired.get(slot.name, []):
                    self.retire_arm(spec.name, slot.name, arm_id)
            c.paused, c.paused_by, c.baseline = paused, paused_by, baseline

    def absorb(self, partials: Sequence[Engine]) -> int:
        """Make this engine's model the sum of partition engines' models (the stream worker's
        partial states): policy sums, report tallies and versions of every campaign that this
        engine holds. Partials lacking a campaign or holding arms this engine does not know
        are left out of that campaign. VW slots keep this engine's models: VW learns in order,
        so its model comes from the single VW learner (``absorb_vw``), never from partitions.
        Everything is built aside and swapped in under the lock, so a decision sees the old
        model or the new one. Returns the campaigns updated."""
        with self._lock:
            names = list(self._campaigns)
        built = _merge.merged(self._campaigns, names, [p._campaigns for p in partials],
                             self._seed)
        with self._lock:
            _merge.swap_in(self._campaigns, built)
            if built:  # sums the erasure ledger never saw
                self._ledger.complete = False
            return len(built)

    def absorb_vw(self, learned: Engine) -> int:
        """Take the VW slots' models (context and context-free) from ``learned``, the VW
        learner's engine, which is handed over (its policies are used, not copied). A slot is
        taken only where ``learned`` holds the same arms (a learner behind an arm addition
        leaves the slot alone until it catches up); arms retired here stay retired. Swapped in
        under the lock like ``absorb``. Returns the slots updated."""
        with self._lock:
            names = [n for n in self._campaigns if n in learned._campaigns]
        taken = _merge.vw_models(self._campaigns, learned._campaigns, names)
        with self._lock:
            for s, policy, fallback in taken:
                s.policy, s.fallback = policy, fallback
            return len(taken)

    def erase(self, user_id: str, at_ms: float) -> _erase.Erasure:
        """Erasure at ``at_ms`` (event time): the subject's decisions with an impression at or
        before it leave the join and are refused if they come again, and those learned that
        the erasure ledger holds (``keep_ledger``) are taken out of every summed slot policy
        (``bandit.engine.erase``) and out of the ledger; their user id and string values leave
        the snapshot. The report tallies keep them (their erasure is the next step).
        Decisions are found by every pseudonym of the subscriber and by the legacy
        impressions' ``subject_key`` (``subjects.erase_keys``); then the subscriber's secrets
        are destroyed (``bandit.engine.pseudonyms``): the pseudonyms logged can no longer be
        computed from the user id, and the next decision gets a new one.
        All or nothing, under the engine's lock. Returns what was done (``Erasure``): pending
        decisions dropped, learned ones forgotten, the VW slots to retrain from the log, and
        whether the ledger is complete (else older contributions may remain)."""
        with self._lock:
            erasure = self._erase_subjects(dict.fromkeys(self.subjects.erase_keys(user_id),
                                                         at_ms))
            self.subjects.destroy(user_id)
            return erasure

    def erase_subjects(self, subjects: Mapping[bytes, float]) -> tuple[int, bool]:
        """``erase`` by subject keys (the stream worker's erase records): how many pending
        decisions were dropped and whether anything changed (see ``Joiner.erase``; learned
        decisions forgotten count as a change)."""
        erasure = self._erase_subjects(subjects)
        return erasure.dropped, erasure.changed

    def _erase_subjects(self, subjects: Mapping[bytes, float]) -> _erase.Erasure:
        with self._lock:
            self._join_ready()
            found = self._ledger.find(subjects)
            # Every campaign's policies forget aside first: a refusal changes nothing.
            forgetting = [_erase.forget_columns(self._campaigns[name], cols)
                          for name, cols in found.by_campaign()]
            dropped, changed = self._joiner.erase(subjects)
            for f in forgetting:
                f.apply()
            self._ledger.remove(found)
            return _erase.Erasure(
                dropped=dropped, forgotten=len(found), changed=changed or bool(len(found)),
                retrain={f.campaign.spec.name: f.retrain for f in forgetting if f.retrain},
                complete=self._ledger.complete)

    def open_windows(self) -> int:
        """How many decisions wait in the attribution join for their window to close."""
        with self._lock:
            self._join_ready()
            return self._joiner.open_count

    def _join_ready(self) -> None:
        """``before_join``, with the lock held: the join holds every decision logged."""
        if self.before_join is not None:
            self.before_join()

    def warm_up(self) -> None:
        """Compile (or load from the cache) every kernel a decision or a learn can reach, so
        the first request does not pay for it; then the engine is ready."""
        probe = Engine(seed=0)
        probe.create_campaign(_campaign.warm_up_spec())
        requests = [DecisionRequest(campaign="warm-up", user_id=f"u{i}", explain=True,
                                    consent=i % 2 == 0) for i in range(4)]
        batch = probe.decide_batch("warm-up", requests)
        probe.record(batch.impressions(requests, ts_ms=0))
        probe.record([Click(event_id="c", decision_id=batch.decision_ids[0], campaign="warm-up",
                            ts=0), Click(event_id="late", decision_id="f" * 32,
                                         campaign="warm-up", ts=10**10)])
        probe.decide_batch("warm-up", requests)
        probe.decide_one(requests[0])  # the single-row path's own kernel
        probe.decision_sink = DecisionLog.lines  # and what logging decisions compiles
        probe.decide_batch("warm-up", requests)
        probe.decide_one(requests[0])
        self.ready = True

    # -- snapshots ----------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Campaigns, policy sums, report tallies and open attribution windows, in one file,
        written atomically (a crash leaves the old file or the new one, never half of one)."""
        _snapshot.write_atomic(path, self.to_bytes())

    def to_bytes(self, extra: dict[str, Any] | None = None) -> bytes:
        """The snapshot ``save`` writes, as bytes; ``extra`` (JSON-ready) rides along and comes
        back from ``from_bytes`` (the stream worker keeps its offsets there)."""
        with self._lock:
            self._join_ready()
            meta, arrays = _snapshot.snapshot(self._campaigns, self._joiner, self.rejected_events)
            _snapshot.add_ledger(meta, arrays, self._ledger)
            _snapshot.add_subjects(arrays, self.subjects)
        meta["extra"] = extra
        return _snapshot.to_bytes(meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike, *, seed: int = 0,
             id_seed: int | None = None) -> Engine:
        """An engine from ``save``; a corrupt or foreign file gets IncompatibleStateError.
        ``seed`` and ``id_seed`` as for ``Engine``: a snapshot holds no id generator, so a
        loaded engine issues fresh ids unless ``id_seed`` is given."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise IncompatibleStateError(f"{path}: not an engine snapshot ({exc})") from None
        return cls.from_bytes(data, seed=seed, id_seed=id_seed, what=str(path))[0]

    @classmethod
    def from_bytes(cls, data: bytes, *, seed: int = 0, id_seed: int | None = None,
                   what: str = "snapshot",
                   model_only: bool = False) -> tuple[Engine, dict[str, Any] | None]:
        """The engine of ``to_bytes`` and its ``extra``; damaged data gets
        IncompatibleStateError naming ``what``. ``model_only`` leaves the attribution join
        empty without reading it (the decision service needs the model, not the windows)."""
        meta, arrays = _snapshot.read(data, what, model_only)
        engine = cls(seed=seed, id_seed=id_seed)
        try:
            for ci, item in enumerate(meta["campaigns"]):
                c = _snapshot.restore_campaign(item, ci, arrays, engine._rng)
                engine._campaigns[c.spec.name] = c
            if not model_only:
                engine._joiner = _snapshot.restore_joiner(meta, arrays, engine.campaign)
            engine._ledger = _snapshot.restore_ledger(meta, arrays, engine._campaigns, model_only)
            _snapshot.restore_subjects(arrays, engine.subjects)
            engine.rejected_events = int(meta["rejected_events"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IncompatibleStateError(f"{what}: damaged snapshot ({exc})") from None
        return engine, meta.get("extra")

    # -- reporting ----------------------------------------------------------------------

    def report(self, campaign: str) -> CampaignReport:
        """Per slot and arm (retired ones too): impressions, reward, CTR with a 95% interval,
        share of traffic; holdout lift with its interval; the bias audit by segment value: arm
        allocation and reward rate, each flagged on a large disparity (``_AUDIT_*``,
        ``_ctr_gap``), never on fewer than ``_AUDIT_MIN`` impressions."""
        with self._lock:
            self._join_ready()
            return _report.report(self._get(campaign))


def _name(event: Joinable) -> str:
    """How an error names an event: its event id, or a logged decision's id."""
    return event.decision_id if event.type == "decision" else cast(Any, event).event_id


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
