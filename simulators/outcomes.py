"""The simulated subscriber of the email contract: what follows a decision's email once it is
sent (``bandit.models`` ``Send``, then ``Open``, ``Click``, ``Conversion``, ``Unsubscribe``,
``Complaint``, ``Bounce``), with the truth to test a join against and to measure regret by.

It extends :class:`simulators.email_campaign.EmailCampaign` without changing it: the click
probability of a combination is exactly ``EmailCampaign.click_probability``, split into an open
(driven by the subject line and the send hour) and a click given the open, so the click oracle
and every click-based report stay as they are. Everything is vectorised over subscribers: one
NumPy expression per batch, never a loop per subscriber (events become Python objects only
when asked for, in ``OutcomeColumns.payloads`` and ``OutcomeColumns.events``).

Addresses (``Inboxes``, drawn once per population): .35 sit behind a mail-privacy proxy that
fetches every email's images at delivery, .04 behind a corporate link scanner that follows
every link of every email, the rest are plain (never both).

Outcomes of one email (L is ``EmailCampaign``'s click logit, ``Lo`` the open logit, f the
framing of the subject line, t the send hour, d the discount in percent, q the price
sensitivity; A the subscriber's attention delay, below):

===========  ==========================================  ==============================
outcome      happens (probability)                       when (after the send)
===========  ==========================================  ==============================
bounce       every email, .005, whatever the arms        U(1 s, 2 min)
open         delivered, plain or scanner address:        A
             sigma(Lo)
open         delivered, proxy address: 1, the proxy's;   U(1 s, 5 min)
(machine)    flagged ``machine`` on .6 of them (the
             tracker knows the proxy), .4 unflagged
click        opened: sigma(L) / sigma(Lo), so that       open + Exp(4 min)
             P(click) = sigma(L)
click        delivered, scanner address: one per link    U(0.5 s, 15 s)
(scanner)    (2 links), never flagged
conversion   human click: sigma(-2.5 + 0.04 d q);        click + Exp(3 h)
             value LogNormal, mean 60 (1 - d / 100)
unsubscribe  delivered: sigma(-6 + 1.0 [f = urgency]     A' + Exp(2 min)
             + 0.8 [t < 6h])
complaint    unsubscribed: .1                            unsubscribe + Exp(20 min)
===========  ==========================================  ==============================

``Lo = -1.0 + REGION[r] + AGE[g] + subject-line terms + send-hour terms``: the part of L that
the subject line and the send hour own, on an open base rate (about a third open). Then
``L - Lo = -3.0 + offer terms + artwork terms + subject x offer`` is below -2.3 for everyone,
so P(click) <= P(open) always holds and the click given an open is driven by the offer and
the artwork (and, mildly, by how likely the open was). A proxy's image fetch hides its
subscriber's own open (the tracker saw the image once), but not their clicks. The unsubscribe
button of mail clients needs no open, so unsubscribes are drawn on their own. A bigger discount
converts more and each conversion is worth less: the best offer under a revenue reward grows
with price sensitivity. Urgency and night sends cost unsubscribes (odds times e^1.0 and
e^0.8): the guardrail an email reward must weigh against their clicks.

Attention A (and an independent A' for unsubscribes) is a mixture, the wait W being the hours
from the send hour to the subscriber's usual open hour (``(open_hour - t) mod 24``):
.35 a glance on arrival, Exp(30 min); .5 at their usual hour, W + Exp(1 h); .15 a day later,
W + 24 h + Exp(8 h). Every delay is a shift plus a sum of exponentials of distinct means (or a
uniform), so the chance that an event lands in a window has a closed form: the truth below is
exact. Event times are whole ms: ``ts = send + floor(delay)``.

"Learned" (what a campaign's ``reward`` counts, the design of issue 16): an event with
``0 <= ts - send <= window_ms`` of its type (the attribution window when the type has none),
not flagged ``machine``, and for clicks ``ts - send >= scanner_ms``. All outcomes name no
slot, so they are about every slot and the reward is the same for each.

>>> env = EmailCampaign()
>>> model = EmailOutcomes(env)
>>> rng = np.random.default_rng(0)
>>> subs = env.subscribers(4, rng)
>>> choices = {"subject_line": ["offer"] * 4, "send_hour": [8, 9, 12, 20],
...            "offer": ["off10"] * 4, "artwork": ["calm"] * 4}
>>> ids = [f"{i:032x}" for i in range(4)]
>>> out = model.sample(ids, choices, 1_767_225_600_000, subs, model.inboxes(4, rng), rng)
>>> [e.type for e in out.events()][:4]
['send', 'send', 'send', 'send']
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bandit.errors import InvalidInputError
from bandit.models import (
    OUTCOME_TYPES,
    Bounce,
    Click,
    Complaint,
    Conversion,
    Open,
    Outcome,
    RewardSpec,
    Send,
    Unsubscribe,
)
from simulators.email_campaign import (
    ARTWORK,
    OFFER,
    SEND_HOUR,
    SLOTS,
    SUBJECT_LINE,
    EmailCampaign,
    Subscribers,
    _sigmoid,
)

SECOND_MS, MINUTE_MS, HOUR_MS, DAY_MS = 1000, 60_000, 3_600_000, 86_400_000
# The codes of OutcomeColumns.kind: the send, then the outcome types in the contract's order.
EVENT_TYPES: tuple[str, ...] = ("send", *OUTCOME_TYPES)
SEND, OPEN, CLICK, CONVERSION, UNSUBSCRIBE, COMPLAINT, BOUNCE = range(len(EVENT_TYPES))
_MODELS: tuple[type[Send | Outcome], ...] = (
    Send, Open, Click, Conversion, Unsubscribe, Complaint, Bounce)
_CHUNK_ROWS = 1024  # oracle / uniform_value: rows per chunk, 1024 x 2400 combinations


def _sum_of_exponentials_cdf(x: np.ndarray | float, means: Sequence[float]) -> np.ndarray:
    """P(E_1 + ... + E_k <= x) for independent exponentials of distinct means (ms), any shape
    of x (the hypoexponential distribution)."""
    x = np.maximum(x, 0.0)
    out = np.ones_like(x)
    for i, mi in enumerate(means):
        weight = float(np.prod([mi / (mi - mj) for j, mj in enumerate(means) if j != i]))
        out = out - weight * np.exp(-x / mi)
    return np.clip(out, 0.0, 1.0)  # rounding near 0 and 1


def _uniform_cdf(x: np.ndarray | float, low: float, high: float) -> np.ndarray:
    return np.clip((np.asarray(x, dtype=np.float64) - low) / (high - low), 0.0, 1.0)


@dataclass(frozen=True)
class Inboxes:
    """Where each of n subscribers' mail lands, (n,) bool each: behind a mail-privacy proxy
    (``proxy``), behind a corporate link scanner (``scanner``); never both."""

    proxy: np.ndarray
    scanner: np.ndarray

    def __len__(self) -> int:
        return len(self.proxy)

    def __getitem__(self, rows: slice) -> Inboxes:
        """The inboxes of a contiguous part of the population."""
        if not isinstance(rows, slice):
            raise InvalidInputError(f"inboxes: index with a slice, got {type(rows).__name__}")
        return Inboxes(self.proxy[rows], self.scanner[rows])


@dataclass(frozen=True)
class OutcomeColumns:
    """The events of one batch of n decisions, as m columns in time order (ties: the send
    first, then the contract's order of types, then the decision's row).

    decision_ids (n,) and send_ts (n,) int64 are the batch's; per event: row (m,) int64 (the
    decision's index in the batch), kind (m,) int8 (a code into EVENT_TYPES), ts (m,) int64 ms,
    machine (m,) bool, value (m,) float64 (a conversion's value, else 0), link (m,) int8 (a
    scanner click's link number 1.., else 0). Event ids are ``{type}-{decision id}`` and
    ``click-{decision id}-{link}`` for a scanner's clicks.
    """

    decision_ids: tuple[str, ...]
    send_ts: np.ndarray
    campaign: str | None
    row: np.ndarray
    kind: np.ndarray
    ts: np.ndarray
    machine: np.ndarray
    value: np.ndarray
    link: np.ndarray

    def __len__(self) -> int:
        return len(self.row)

    def counts(self) -> dict[str, np.ndarray]:
        """Per event type, the events of each decision (n,) int64, machine-made ones included."""
        n = len(self.decision_ids)
        return {name: np.bincount(self.row[self.kind == k], minlength=n)
                for k, name in enumerate(EVENT_TYPES)}

    def learned(self, reward: RewardSpec, attribution_window_ms: int) -> np.ndarray:
        """Which events a campaign with this reward learns (m,) bool: outcomes within their
        type's window, not machine-flagged, clicks not within ``scanner_ms`` of the send (the
        module docstring's rule). Sends are not outcomes: never learned."""
        delay = self.ts - self.send_ts[self.row]
        window = np.array([0.0, *(_window(reward, t, attribution_window_ms)
                                  for t in OUTCOME_TYPES)])
        keep = (self.kind != SEND) & (delay >= 0) & (delay <= window[self.kind]) & ~self.machine
        return keep & ~((self.kind == CLICK) & (delay < reward.scanner_ms))

    def realized(
        self, reward: RewardSpec, attribution_window_ms: int, default_reward: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """What the campaign learns from each decision: learned events per outcome type
        (n, len(OUTCOME_TYPES)) int64, in the contract's order, and the reward (n,): the sum
        over weighted types of weight x the aggregation of their amounts (1, a conversion's
        value), ``default_reward`` where no weighted outcome was learned."""
        n = len(self.decision_ids)
        keep = self.learned(reward, attribution_window_ms)
        rows, kinds = self.row[keep], self.kind[keep]
        amounts = np.where(kinds == CONVERSION, self.value[keep], 1.0)
        counts = np.zeros((n, len(OUTCOME_TYPES)), dtype=np.int64)
        np.add.at(counts, (rows, kinds - 1), 1)
        total, counted = np.zeros(n), np.zeros(n, dtype=bool)
        for name, rule in reward.outcomes.items():
            mine = kinds == EVENT_TYPES.index(name)
            r, a = rows[mine], amounts[mine]
            part: np.ndarray
            if rule.aggregation == "sum":
                part = np.bincount(r, weights=a, minlength=n)
            elif rule.aggregation == "max":
                part = np.full(n, -np.inf)
                np.maximum.at(part, r, a)
            else:  # first: the columns are in time order, so a row's first is its earliest
                part = np.zeros(n)
                first_rows, at = np.unique(r, return_index=True)
                part[first_rows] = a[at]
            has = np.bincount(r, minlength=n) > 0
            total += rule.weight * np.where(has, part, 0.0)
            counted |= has
        return counts, np.where(counted, total, default_reward)

    def event_ids(self) -> list[str]:
        """The event id of every event, in column order."""
        ids = self.decision_ids
        return [f"{EVENT_TYPES[k]}-{ids[r]}-{link}" if link else f"{EVENT_TYPES[k]}-{ids[r]}"
                for k, r, link in zip(self.kind.tolist(), self.row.tolist(), self.link.tolist(),
                                      strict=True)]

    def payloads(self) -> list[dict[str, Any]]:
        """The events as JSON-ready dicts of the contract (what a sender and a tracker write):
        ``machine`` only where true, ``value`` on conversions, ``campaign`` when given."""
        ids, campaign = self.decision_ids, self.campaign
        out = []
        for event_id, k, r, ts, machine, value in zip(
                self.event_ids(), self.kind.tolist(), self.row.tolist(), self.ts.tolist(),
                self.machine.tolist(), self.value.tolist(), strict=True):
            event: dict[str, Any] = {"type": EVENT_TYPES[k], "event_id": event_id,
                                     "decision_id": ids[r], "ts": ts}
            if campaign is not None:
                event["campaign"] = campaign
            if machine:
                event["machine"] = True
            if k == CONVERSION:
                event["value"] = value
            out.append(event)
        return out

    def events(self) -> list[Send | Outcome]:
        """The events as validated ``bandit.models`` (Send, Open, Click, ...), in time order."""
        return [_MODELS[EVENT_TYPES.index(p["type"])].model_validate(p) for p in self.payloads()]


def _window(reward: RewardSpec, kind: str, attribution_window_ms: int) -> float:
    rule = reward.outcomes.get(kind)  # type: ignore[call-overload]  # a str, an OutcomeType
    return float(rule.window_ms if rule is not None and rule.window_ms is not None
                 else attribution_window_ms)


@dataclass(frozen=True)
class _Truth:
    """Per subscriber, what the expected outcomes of any combination are made of (n rows):
    the click logit's parts (base (n,), per slot (n, k), subject x offer (5, 4)), the
    conversion probability (n, 4), the chance each human outcome lands learned, by send hour
    (n, 24) per type, the machine events' (scalars) and the inbox shares (n,)."""

    base: np.ndarray
    subject: np.ndarray
    hour: np.ndarray
    offer: np.ndarray
    art: np.ndarray
    inter: np.ndarray
    convert: np.ndarray
    timing: dict[str, np.ndarray]
    machine_open: float
    scanner_click: float
    bounce: float
    proxy: np.ndarray
    scanner: np.ndarray


class EmailOutcomes:
    """The subscriber's response to an email of :class:`EmailCampaign`: the module docstring's
    model, its sampler (``sample``) and its truth (``rates``, ``expected_events``,
    ``expected_reward``, ``oracle``, ``uniform_value``)."""

    OPEN_BASE = -1.0
    BOUNCE_RATE = 0.005
    PROXY_SHARE, SCANNER_SHARE = 0.35, 0.04
    PROXY_FLAGGED = 0.6
    SCANNER_LINKS = 2
    CONVERSION_BASE, CONVERSION_PER_PERCENT = -2.5, 0.04
    BASKET_MEAN, BASKET_SIGMA = 60.0, 0.5
    UNSUBSCRIBE_BASE = -6.0
    UNSUBSCRIBE_X_FRAMING = np.array([1.0, 0.0, 0.0, 0.0, 0.0])
    UNSUBSCRIBE_NIGHT = 0.8
    COMPLAINT_SHARE = 0.1
    # Attention: (share, days after the usual open hour, or None: on arrival; mean delay ms).
    ATTENTION = ((0.35, None, 30 * MINUTE_MS), (0.5, 0, HOUR_MS), (0.15, 1, 8 * HOUR_MS))
    CLICK_LAG_MS, CONVERSION_LAG_MS = 4 * MINUTE_MS, 3 * HOUR_MS
    UNSUBSCRIBE_LAG_MS, COMPLAINT_LAG_MS = 2 * MINUTE_MS, 20 * MINUTE_MS
    # Machine events: uniform between these delays (ms).
    MACHINE_OPEN_MS = (1 * SECOND_MS, 5 * MINUTE_MS)
    SCANNER_CLICK_MS = (SECOND_MS // 2, 15 * SECOND_MS)
    BOUNCE_MS = (1 * SECOND_MS, 2 * MINUTE_MS)

    def __init__(self, env: EmailCampaign | None = None) -> None:
        self.env = env if env is not None else EmailCampaign()
        self._open_shift = self.OPEN_BASE - self.env.BASE_LOGIT
        hours = np.array(self.env.HOURS)
        self._unsubscribe = (self.UNSUBSCRIBE_BASE + self.UNSUBSCRIBE_X_FRAMING[:, None]
                             + np.where(hours < self.env.NIGHT_HOURS,
                                        self.UNSUBSCRIBE_NIGHT, 0.0)[None, :])  # (5, 24) logit
        self._discount = np.array(self.env.DISCOUNTS, dtype=np.float64)
        self._value = self.BASKET_MEAN * (1.0 - self._discount / 100.0)  # (4,) mean value

    # -- addresses -------------------------------------------------------------------------

    def inboxes(self, n: int, rng: np.random.Generator) -> Inboxes:
        """Draw the inboxes of n subscribers (proxy, scanner or plain, at the set shares)."""
        if n < 0:
            raise InvalidInputError(f"n must be >= 0, got {n}")
        kind = rng.choice(3, size=n, p=(self.PROXY_SHARE, self.SCANNER_SHARE,
                                        1.0 - self.PROXY_SHARE - self.SCANNER_SHARE))
        return Inboxes(proxy=kind == 0, scanner=kind == 1)

    @staticmethod
    def send_times(day_ms: int, choices: Mapping[str, Any], env: EmailCampaign) -> np.ndarray:
        """When each email goes out (n,) int64 ms: ``day_ms`` (a day's 0h) plus its send-hour
        arm, the time a sender would write on each ``Send``."""
        hours = env.indices({slot: choices[slot] for slot in SLOTS},
                            len(np.asarray(choices[SEND_HOUR])))[SEND_HOUR]
        return day_ms + hours * HOUR_MS

    # -- the response of one batch ---------------------------------------------------------

    def probabilities(
        self, subscribers: Subscribers, choices: Mapping[str, Any], step: int | np.ndarray = 0
    ) -> dict[str, np.ndarray]:
        """The model's probabilities for each subscriber's combination (n,) each: ``open``
        (a human open), ``click`` (= ``EmailCampaign.click_probability``), ``conversion``
        (given a human click), ``value`` (a conversion's mean value), ``unsubscribe`` (given
        delivery)."""
        n = len(subscribers)
        idx = self.env.indices(choices, n)
        base, terms, _ = self.env.slot_logits(subscribers, step)
        rows = np.arange(n)
        open_logit = (base + self._open_shift + terms[SUBJECT_LINE][rows, idx[SUBJECT_LINE]]
                      + terms[SEND_HOUR][rows, idx[SEND_HOUR]])
        return {
            "open": _sigmoid(open_logit),
            "click": self.env.click_probability(subscribers, idx, step),
            "conversion": self._convert(subscribers)[rows, idx[OFFER]],
            "value": self._value[idx[OFFER]],
            "unsubscribe": _sigmoid(self._unsubscribe[idx[SUBJECT_LINE], idx[SEND_HOUR]]),
        }

    def sample(
        self,
        decision_ids: Sequence[str],
        choices: Mapping[str, Any],
        send_ts: int | np.ndarray,
        subscribers: Subscribers,
        inboxes: Inboxes,
        rng: np.random.Generator,
        *,
        campaign: str | None = None,
        step: int | np.ndarray = 0,
    ) -> OutcomeColumns:
        """Every event of a batch of n decisions: one send each at ``send_ts`` (int or (n,)
        ms), then the outcomes the model draws. choices maps every slot to arm ids or indices
        (n,); decision_ids, subscribers and inboxes are (n,) and aligned; step matters only
        with drift. The same rng state gives the same columns."""
        n = len(subscribers)
        if len(decision_ids) != n or len(inboxes) != n:
            raise InvalidInputError(f"sample: {len(decision_ids)} decision ids and "
                                    f"{len(inboxes)} inboxes for {n} subscribers; expected "
                                    "one of each per subscriber")
        sent = np.asarray(send_ts)
        if sent.dtype.kind not in "iu" or sent.shape not in ((), (n,)) or (n and sent.min() < 0):
            raise InvalidInputError(f"send_ts: expected ms >= 0 as an int or {n} ints, got "
                                    f"{sent.dtype} of shape {sent.shape}")
        sent = np.broadcast_to(sent.astype(np.int64), (n,)).copy()
        p = self.probabilities(subscribers, choices, step)
        hour = self.env.indices(choices, n)[SEND_HOUR]
        wait = np.mod(subscribers.open_hour - hour, 24.0) * HOUR_MS
        u = rng.random((7, n))
        bounced = u[0] < self.BOUNCE_RATE
        delivered = ~bounced
        opened = delivered & (u[1] < p["open"])
        clicked = opened & (u[2] * p["open"] < p["click"])  # P(click | open) = click / open
        converted = clicked & (u[3] < p["conversion"])
        unsubscribed = delivered & (u[4] < p["unsubscribe"])
        complained = unsubscribed & (u[5] < self.COMPLAINT_SHARE)
        flagged = u[6] < self.PROXY_FLAGGED
        attention = self._attention(wait, rng, 2)
        lags = rng.exponential(size=(4, n)) * np.array(
            [self.CLICK_LAG_MS, self.CONVERSION_LAG_MS, self.UNSUBSCRIBE_LAG_MS,
             self.COMPLAINT_LAG_MS])[:, None]
        machine_open = rng.uniform(*self.MACHINE_OPEN_MS, size=n)
        scanner_clicks = rng.uniform(*self.SCANNER_CLICK_MS, size=(self.SCANNER_LINKS, n))
        bounce = rng.uniform(*self.BOUNCE_MS, size=n)
        basket = rng.lognormal(np.log(self.BASKET_MEAN) - self.BASKET_SIGMA**2 / 2,
                               self.BASKET_SIGMA, size=n)
        value = basket * p["value"] / self.BASKET_MEAN

        click_at = attention[0] + lags[0]
        unsubscribe_at = attention[1] + lags[2]
        parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray | bool, int]] = [
            (SEND, np.ones(n, dtype=bool), np.zeros(n), False, 0),
            (OPEN, opened & ~inboxes.proxy, attention[0], False, 0),
            (OPEN, delivered & inboxes.proxy, machine_open, flagged, 0),
            (CLICK, clicked, click_at, False, 0),
            *((CLICK, delivered & inboxes.scanner, scanner_clicks[j], False, j + 1)
              for j in range(self.SCANNER_LINKS)),
            (CONVERSION, converted, click_at + lags[1], False, 0),
            (UNSUBSCRIBE, unsubscribed, unsubscribe_at, False, 0),
            (COMPLAINT, complained, unsubscribe_at + lags[3], False, 0),
            (BOUNCE, bounced, bounce, False, 0),
        ]
        rows, kinds, ts, machine, values, links = [], [], [], [], [], []
        for code, mask, delay, flag, number in parts:
            r = np.flatnonzero(mask)
            rows.append(r)
            kinds.append(np.full(len(r), code, dtype=np.int8))
            ts.append(sent[r] + np.floor(delay[r]).astype(np.int64))
            machine.append(flag[r] if isinstance(flag, np.ndarray)
                           else np.zeros(len(r), dtype=bool))
            values.append(value[r] if code == CONVERSION else np.zeros(len(r)))
            links.append(np.full(len(r), number, dtype=np.int8))
        row, kind, when = np.concatenate(rows), np.concatenate(kinds), np.concatenate(ts)
        link = np.concatenate(links)
        order = np.lexsort((link, row, kind, when))
        return OutcomeColumns(
            decision_ids=tuple(decision_ids), send_ts=sent, campaign=campaign,
            row=row[order], kind=kind[order], ts=when[order],
            machine=np.concatenate(machine)[order], value=np.concatenate(values)[order],
            link=link[order])

    def _attention(self, wait: np.ndarray, rng: np.random.Generator, k: int) -> np.ndarray:
        """k independent attention delays (k, n) ms for subscribers whose usual open hour is
        ``wait`` (n,) ms after the send."""
        shares = [share for share, _, _ in self.ATTENTION]
        component = rng.choice(len(shares), size=(k, len(wait)), p=shares)
        means = np.array([mean for _, _, mean in self.ATTENTION])
        shift = np.stack([np.zeros_like(wait) if days is None else wait + days * DAY_MS
                          for _, days, _ in self.ATTENTION])  # (components, n)
        draw = rng.exponential(size=(k, len(wait)))
        return np.take_along_axis(shift, component, axis=0) + draw * means[component]

    def _convert(self, subscribers: Subscribers) -> np.ndarray:
        """P(conversion | human click) (n, 4) by offer."""
        return _sigmoid(self.CONVERSION_BASE + self.CONVERSION_PER_PERCENT
                        * np.outer(subscribers.price_sensitivity, self._discount))

    # -- the truth -------------------------------------------------------------------------

    def _attention_cdf(self, x: np.ndarray | float, wait: np.ndarray, lags: Sequence[float]
                       ) -> np.ndarray:
        """P(A + sum of exponentials with means ``lags`` <= x), wait and x broadcast."""
        out = np.zeros(np.broadcast_shapes(np.shape(x), wait.shape))
        for share, days, mean in self.ATTENTION:
            shift = 0.0 if days is None else wait + days * DAY_MS
            out = out + share * _sum_of_exponentials_cdf(x - shift, (mean, *lags))
        return out

    def _truth(self, subscribers: Subscribers, reward: RewardSpec, attribution_window_ms: int,
               inboxes: Inboxes | None, step: int | np.ndarray) -> _Truth:
        n = len(subscribers)
        if inboxes is not None and len(inboxes) != n:
            raise InvalidInputError(f"inboxes: {len(inboxes)} for {n} subscribers")
        if attribution_window_ms <= 0:
            raise InvalidInputError(f"attribution_window_ms must be > 0, got "
                                    f"{attribution_window_ms}")
        base, terms, inter = self.env.slot_logits(subscribers, step)
        wait = np.mod(subscribers.open_hour[:, None] - np.array(self.env.HOURS)[None, :],
                      24.0) * HOUR_MS  # (n, 24)
        # Whole ms: learned when lo <= floor(delay) <= hi, i.e. lo <= delay < hi + 1.
        end = {t: _window(reward, t, attribution_window_ms) + 1.0 for t in OUTCOME_TYPES}
        scan = float(reward.scanner_ms)
        chain = {"open": (), "click": (self.CLICK_LAG_MS,),
                 "conversion": (self.CLICK_LAG_MS, self.CONVERSION_LAG_MS),
                 "unsubscribe": (self.UNSUBSCRIBE_LAG_MS,),
                 "complaint": (self.UNSUBSCRIBE_LAG_MS, self.COMPLAINT_LAG_MS)}
        timing = {t: self._attention_cdf(np.float64(end[t]), wait, lags)
                  for t, lags in chain.items()}
        timing["click"] = timing["click"] - self._attention_cdf(np.float64(scan), wait,
                                                                chain["click"])
        scanner = (_uniform_cdf(end["click"], *self.SCANNER_CLICK_MS)
                   - _uniform_cdf(scan, *self.SCANNER_CLICK_MS))
        proxy = (np.full(n, self.PROXY_SHARE) if inboxes is None
                 else inboxes.proxy.astype(np.float64))
        scanners = (np.full(n, self.SCANNER_SHARE) if inboxes is None
                    else inboxes.scanner.astype(np.float64))
        return _Truth(
            base=base, subject=terms[SUBJECT_LINE], hour=terms[SEND_HOUR], offer=terms[OFFER],
            art=terms[ARTWORK], inter=inter, convert=self._convert(subscribers), timing=timing,
            machine_open=float(_uniform_cdf(end["open"], *self.MACHINE_OPEN_MS)),
            scanner_click=float(scanner),
            bounce=float(_uniform_cdf(end["bounce"], *self.BOUNCE_MS)),
            proxy=proxy, scanner=scanners)

    def _expected(self, truth: _Truth, reward: RewardSpec, rows: np.ndarray, f: np.ndarray,
                  h: np.ndarray, o: np.ndarray, w: np.ndarray, types: Sequence[str]
                  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Expected learned events of the outcome ``types`` (the reward's weighted ones at
        least) and the expected reward (without a default reward) of the combinations
        (f, h, o, w) for the rows, all index arrays broadcast together (a batch's choices
        (n,), or every combination of a chunk)."""
        delivered = 1.0 - self.BOUNCE_RATE
        open_logit = (truth.base[rows] + self._open_shift + truth.subject[rows, f]
                      + truth.hour[rows, h])
        p_click = _sigmoid(open_logit - self._open_shift + truth.offer[rows, o]
                           + truth.art[rows, w] + truth.inter[f, o])
        proxy, scanner = truth.proxy[rows], truth.scanner[rows]
        human_click = p_click * truth.timing["click"][rows, h]
        unsubscribe = delivered * _sigmoid(self._unsubscribe[f, h])
        learned = {  # each type's expected learned events, computed only when asked for
            "open": lambda: delivered * (
                (1.0 - proxy) * _sigmoid(open_logit) * truth.timing["open"][rows, h]
                + proxy * (1.0 - self.PROXY_FLAGGED) * truth.machine_open),
            "click": lambda: delivered * (
                human_click + scanner * self.SCANNER_LINKS * truth.scanner_click),
            "conversion": lambda: delivered * p_click * truth.convert[rows, o]
            * truth.timing["conversion"][rows, h],
            "unsubscribe": lambda: unsubscribe * truth.timing["unsubscribe"][rows, h],
            "complaint": lambda: unsubscribe * self.COMPLAINT_SHARE
            * truth.timing["complaint"][rows, h],
            "bounce": lambda: np.broadcast_to(self.BOUNCE_RATE * truth.bounce,
                                              np.shape(p_click)),
        }
        events = {name: learned[name]() for name in OUTCOME_TYPES
                  if name in types or name in reward.outcomes}
        value = np.zeros(np.shape(p_click))
        for name, rule in reward.outcomes.items():
            if name == "conversion":
                amount = events[name] * self._value[o]
            elif name == "click" and rule.aggregation != "sum":
                # Unit amounts: max and first are 1 when any click was learned. The scanner's
                # links land independently of each other and of the human click.
                amount = delivered * (1.0 - (1.0 - human_click) * (
                    1.0 - scanner + scanner * (1.0 - truth.scanner_click) ** self.SCANNER_LINKS))
            else:  # at most one event of the type per email: every aggregation is its amount
                amount = events[name]
            value = value + rule.weight * amount
        return {name: events[name] for name in types}, value

    def rates(
        self, subscribers: Subscribers, choices: Mapping[str, Any],
        inboxes: Inboxes | None = None, step: int | np.ndarray = 0,
    ) -> dict[str, np.ndarray]:
        """Expected events of each outcome type per decision (n,), whenever they come and
        machine-made ones included (what ``OutcomeColumns.counts`` counts), and ``machine``:
        the expected machine-flagged opens. Without inboxes: averaged over the address shares."""
        n = len(subscribers)
        p = self.probabilities(subscribers, choices, step)
        if inboxes is not None and len(inboxes) != n:
            raise InvalidInputError(f"inboxes: {len(inboxes)} for {n} subscribers")
        proxy = (np.full(n, self.PROXY_SHARE) if inboxes is None
                 else inboxes.proxy.astype(np.float64))
        scanner = (np.full(n, self.SCANNER_SHARE) if inboxes is None
                   else inboxes.scanner.astype(np.float64))
        delivered = 1.0 - self.BOUNCE_RATE
        return {
            "open": delivered * ((1.0 - proxy) * p["open"] + proxy),
            "click": delivered * (p["click"] + scanner * self.SCANNER_LINKS),
            "conversion": delivered * p["click"] * p["conversion"],
            "unsubscribe": delivered * p["unsubscribe"],
            "complaint": delivered * p["unsubscribe"] * self.COMPLAINT_SHARE,
            "bounce": np.full(n, self.BOUNCE_RATE),
            "machine": delivered * proxy * self.PROXY_FLAGGED,
        }

    def expected_events(
        self, subscribers: Subscribers, choices: Mapping[str, Any], reward: RewardSpec,
        attribution_window_ms: int, inboxes: Inboxes | None = None,
        step: int | np.ndarray = 0,
    ) -> dict[str, np.ndarray]:
        """Expected learned events of each outcome type per decision (n,) under ``reward``'s
        windows and ``scanner_ms`` (what ``OutcomeColumns.realized`` counts). Without
        inboxes: averaged over the address shares."""
        return self._chosen(subscribers, choices, reward, attribution_window_ms, inboxes,
                            step)[0]

    def expected_reward(
        self, subscribers: Subscribers, choices: Mapping[str, Any], reward: RewardSpec,
        attribution_window_ms: int, inboxes: Inboxes | None = None,
        step: int | np.ndarray = 0,
    ) -> np.ndarray:
        """The expected reward (n,) of each subscriber's combination under ``reward``: the
        campaign's reward with a default reward of 0 (the presets'; any other adds itself
        times the chance that nothing weighted is learned, which this does not compute)."""
        return self._chosen(subscribers, choices, reward, attribution_window_ms, inboxes,
                            step)[1]

    def _chosen(self, subscribers: Subscribers, choices: Mapping[str, Any], reward: RewardSpec,
                attribution_window_ms: int, inboxes: Inboxes | None, step: int | np.ndarray
                ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        n = len(subscribers)
        idx = self.env.indices(choices, n)
        truth = self._truth(subscribers, reward, attribution_window_ms, inboxes, step)
        return self._expected(truth, reward, np.arange(n), idx[SUBJECT_LINE], idx[SEND_HOUR],
                              idx[OFFER], idx[ARTWORK], OUTCOME_TYPES)

    def _grid(self, subscribers: Subscribers, reward: RewardSpec, attribution_window_ms: int,
              inboxes: Inboxes | None, step: int | np.ndarray
              ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Per chunk of rows: the rows and the expected reward of every combination
        (rows, 5, 24, 4, 5), ineligible combinations at -inf."""
        n = len(subscribers)
        truth = self._truth(subscribers, reward, attribution_window_ms, inboxes, step)
        eligible = self.env.eligible(np.broadcast_to(np.asarray(step), (n,)))
        sizes = [len(self.env.arm_ids[slot]) for slot in SLOTS]
        f, h, o, w = (np.arange(k).reshape([1] + [k if i == j else 1 for j in range(4)])
                      for i, k in enumerate(sizes))
        for start in range(0, n, _CHUNK_ROWS):
            rows = np.arange(start, min(start + _CHUNK_ROWS, n))
            r = rows.reshape(-1, 1, 1, 1, 1)
            _, value = self._expected(truth, reward, r, f, h, o, w, ())
            ok = (eligible[SUBJECT_LINE][r, f] & eligible[SEND_HOUR][r, h]
                  & eligible[OFFER][r, o] & eligible[ARTWORK][r, w])
            yield rows, np.where(ok, value, -np.inf)

    def oracle(
        self, subscribers: Subscribers, reward: RewardSpec, attribution_window_ms: int,
        inboxes: Inboxes | None = None, step: int | np.ndarray = 0,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The best combination of eligible arms for every subscriber under ``reward``: arm
        indices per slot (n,) and its expected reward (n,), by search over every combination
        (the reward is not additive in the slots)."""
        n = len(subscribers)
        sizes = tuple(len(self.env.arm_ids[slot]) for slot in SLOTS)
        best, value = np.zeros((4, n), dtype=np.int64), np.empty(n)
        for rows, grid in self._grid(subscribers, reward, attribution_window_ms, inboxes,
                                     step):
            flat = grid.reshape(len(rows), -1)
            at = flat.argmax(axis=1)
            value[rows] = flat[np.arange(len(rows)), at]
            best[:, rows] = np.unravel_index(at, sizes)
        return {slot: best[i] for i, slot in enumerate(SLOTS)}, value

    def uniform_value(
        self, subscribers: Subscribers, reward: RewardSpec, attribution_window_ms: int,
        inboxes: Inboxes | None = None, step: int | np.ndarray = 0,
    ) -> np.ndarray:
        """The expected reward (n,) of choosing every slot uniformly among its eligible arms."""
        out = np.empty(len(subscribers))
        for rows, grid in self._grid(subscribers, reward, attribution_window_ms, inboxes,
                                     step):
            flat = grid.reshape(len(rows), -1)
            ok = np.isfinite(flat)
            out[rows] = np.where(ok, flat, 0.0).sum(axis=1) / ok.sum(axis=1)
        return out
