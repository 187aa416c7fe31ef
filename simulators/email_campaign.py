"""The four-slot email campaign: subscribers with known traits and a known click probability
for every combination of subject line, send hour, offer and hero artwork.

This is the environment the demo plays through the real engine and HTTP API, so its API speaks
the engine's language: ``campaign_spec()`` is a :class:`bandit.models.CampaignSpec`,
``subscribers()`` gives raw contexts in the schema's names (and ready-made decision requests),
and ``click_probability()`` takes the arm ids (or indices) the engine chose. ``oracle()`` and
``uniform_value()`` are the two yardsticks of regret (of clicks). ``simulators.outcomes`` turns a
decision's email into the events of the contract (send, opens with machine ones, clicks with a
link scanner's, conversions with a value, unsubscribes, complaints, bounces) on this click
model, with the same yardsticks for any reward; ``campaign_spec(reward=email_reward(),
activation="send")`` is the campaign that learns them.

Everything is vectorised over subscribers: one NumPy expression per batch, never a loop per
subscriber (the uniform value, an average over all 2,400 combinations, goes in row chunks).

Subscriber traits (population shares; drawn independently except price sensitivity):

=================  =========================================================================
trait              values
=================  =========================================================================
engagement style   deal_seeker .30, curious .25, busy .25, loyal .20
usual open hour    morning ~8h (sd 1.5) .40, lunch ~12h (sd 1) .20, evening ~20h (sd 2) .40
price sensitivity  Beta(5, 2) for deal seekers, Beta(2, 4) for the others; +0.1 (capped at 1)
                   for 18-24
region (segment)   north .35, south .25, east .25, west .15
age band (segmt.)  18-24 .15, 25-34 .25, 35-49 .30, 50+ .30
=================  =========================================================================

Slots and arms (arm features in brackets):

- subject_line: urgency, curiosity, offer, personal, plain [tone = the framing]
- send_hour: h00 .. h23 [hour_sin, hour_cos of the hour on the 24 h circle]
- offer: off0, off10, off20, off30 [discount = 0, 10, 20, 30 (percent)]
- artwork: action, calm, family, product, lifestyle [scene = the scene type]

True click logit for style s, open hour h, price sensitivity q, region r, age band g and
the choices f (framing), t (send hour), o (offer, discount d percent) and w (scene):

    logit = -4.0 + REGION[r] + AGE[g]
            + STYLE_X_FRAMING[s, f] + PRICE_X_FRAMING[f] * (q - 0.5)      subject line
            + NIGHT[t] + 0.4 * cos(2 pi (t - h) / 24)                     send hour
            + OFFER_APPEAL[o] * q - 0.012 * d + OFFER_X_FRAMING[f, o]      offer
            + STYLE_X_SCENE[s, w]                                          artwork

STYLE_X_FRAMING (the single-slot ``Email`` table scaled by 0.7, since three more slots add
to the logit here):

===========  =======  =========  =====  ========  =====
style        urgency  curiosity  offer  personal  plain
===========  =======  =========  =====  ========  =====
deal_seeker    0.35     -0.15    0.85     0.0     -0.2
curious       -0.15      0.75   -0.05     0.2      0.0
busy           0.3      -0.3    -0.15     0.0      0.65
loyal         -0.2       0.15    0.05     0.7      0.3
===========  =======  =========  =====  ========  =====

PRICE_X_FRAMING = (0.3, 0, 0.55, 0, 0): price-sensitive readers like offers and deadlines.
NIGHT is -0.5 for send hours 0h-5h, else 0: mail sent at night sinks in the inbox; the
cosine rewards sending near the subscriber's usual open hour.

OFFER_APPEAL = (0, 0.5, 0.85, 1.05) for 0/10/20/30% off: diminishing returns in the
discount, paid for by 0.012 per percent off (it cheapens the brand), so the best discount
grows with price sensitivity (none below q = 0.24, 30% above q = 0.6).
OFFER_X_FRAMING is -0.5 for the offer-framed subject line with no discount (a promise not
kept) and 0 otherwise: an interaction between slots.

STYLE_X_SCENE:

===========  ======  =====  ======  =======  =========
style        action  calm   family  product  lifestyle
===========  ======  =====  ======  =======  =========
deal_seeker    0.0   -0.1    0.05     0.3       0.0
curious        0.2   -0.05   0.0     -0.1       0.35
busy          -0.1    0.25   0.0      0.1      -0.05
loyal         -0.05   0.05   0.3      0.0       0.2
===========  ======  =====  ======  =======  =========

REGION = (0, 0.1, -0.1, 0.05) and AGE = (0.1, 0.05, 0, -0.1) shift the base rate only, so
segments never change the best choice: a policy that allocates differently by segment does
so through the traits that come with it (price sensitivity by age). Click probabilities run
from under 1% to about 20% (99% of subscribers below 19% even with their best combination);
uniform random choice averages about 2.5%, the oracle about 9%.

With ``drift_steps`` the style rows of STYLE_X_FRAMING move (linearly in logit space) to
the next style's row, as in ``Email``. With ``new_arm_at`` the last scene, lifestyle,
arrives at that step (``eligible``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import TypeAdapter, ValidationError

from bandit.errors import InvalidInputError
from bandit.models import CampaignSpec, DecisionRequest, PolicySpec, RewardSpec

SUBJECT_LINE, SEND_HOUR, OFFER, ARTWORK = "subject_line", "send_hour", "offer", "artwork"
SLOTS = (SUBJECT_LINE, SEND_HOUR, OFFER, ARTWORK)

# Each slot's policy when campaign_spec() is not told otherwise: the mix that came closest to
# the oracle on `cmab simulate --env email4` runs among LinUCB, hybrid, LinTS and BaRT mixes;
# the shared BaRT model carries the subject line x offer and style x scene structure.
DEFAULT_POLICIES: dict[str, dict[str, Any]] = {
    SUBJECT_LINE: {"kind": "epsilon_greedy"},
    SEND_HOUR: {"kind": "epsilon_greedy"},
    OFFER: {"kind": "bart"},
    ARTWORK: {"kind": "bart"},
}

_POLICY_SPEC: TypeAdapter[Any] = TypeAdapter(PolicySpec)
_CHUNK_ROWS = 4096  # uniform_value: rows per chunk, 4096 x 2400 combinations = 79 MB


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class Subscribers:
    """A columnar population of n subscribers (arrays (n,)).

    style, region, age_band: int64 indices into EmailCampaign.STYLES / REGIONS / AGE_BANDS;
    open_hour: float64 in [0, 24), the hour they usually open mail; price_sensitivity: float64
    in [0, 1]. ``contexts()`` and ``segments()`` give what the campaign's context schema names;
    the raw open hour reaches the policies as its sine and cosine (23h and 1h are neighbours).
    """

    user_ids: tuple[str, ...]
    style: np.ndarray
    open_hour: np.ndarray
    price_sensitivity: np.ndarray
    region: np.ndarray
    age_band: np.ndarray

    def __len__(self) -> int:
        return len(self.user_ids)

    def __getitem__(self, rows: slice) -> Subscribers:
        """A contiguous part of the population (a weekly batch, a chunk of a send)."""
        if not isinstance(rows, slice):
            raise InvalidInputError(f"subscribers: index with a slice, got {type(rows).__name__}")
        return Subscribers(
            self.user_ids[rows], self.style[rows], self.open_hour[rows],
            self.price_sensitivity[rows], self.region[rows], self.age_band[rows],
        )

    def contexts(self) -> list[dict[str, float | str]]:
        """The context of every subscriber, in the schema's feature names."""
        angle = 2.0 * np.pi * self.open_hour / 24.0
        return [
            {"style": EmailCampaign.STYLES[s], "open_hour_sin": hs, "open_hour_cos": hc,
             "price_sensitivity": q}
            for s, hs, hc, q in zip(self.style.tolist(), np.sin(angle).tolist(),
                                    np.cos(angle).tolist(), self.price_sensitivity.tolist(),
                                    strict=True)
        ]

    def segments(self) -> list[dict[str, str]]:
        """The bias-audit segments of every subscriber: region and age band."""
        return [
            {"region": EmailCampaign.REGIONS[r], "age_band": EmailCampaign.AGE_BANDS[a]}
            for r, a in zip(self.region.tolist(), self.age_band.tolist(), strict=True)
        ]

    def payloads(self, campaign: str) -> list[dict[str, Any]]:
        """JSON-ready DecisionRequest bodies, for ``POST /v1/decisions/batch`` (as its
        ``requests``) or one per line for the NDJSON form."""
        return [
            {"campaign": campaign, "user_id": u, "context": c, "segments": s}
            for u, c, s in zip(self.user_ids, self.contexts(), self.segments(), strict=True)
        ]

    def requests(self, campaign: str) -> list[DecisionRequest]:
        """DecisionRequest models for ``Engine.decide_batch``."""
        return [DecisionRequest(**payload) for payload in self.payloads(campaign)]


class EmailCampaign:
    """Four email slots for subscribers with known traits, and the true click probability of
    every combination of choices.

    The traits, the slots and the true click logit are the module docstring's.

    >>> env = EmailCampaign()
    >>> subs = env.subscribers(3, np.random.default_rng(0))
    >>> choices = {"subject_line": ["offer"] * 3, "send_hour": [8, 12, 20],
    ...            "offer": ["off10"] * 3, "artwork": ["calm"] * 3}
    >>> env.click_probability(subs, choices).shape
    (3,)
    """

    name = "email4"
    STYLES = ("deal_seeker", "curious", "busy", "loyal")
    FRAMINGS = ("urgency", "curiosity", "offer", "personal", "plain")
    HOURS = tuple(range(24))
    DISCOUNTS = (0, 10, 20, 30)
    SCENES = ("action", "calm", "family", "product", "lifestyle")
    REGIONS = ("north", "south", "east", "west")
    AGE_BANDS = ("18-24", "25-34", "35-49", "50+")

    STYLE_SHARE = (0.30, 0.25, 0.25, 0.20)
    REGION_SHARE = (0.35, 0.25, 0.25, 0.15)
    AGE_SHARE = (0.15, 0.25, 0.30, 0.30)
    # Open-hour habits: (share, mean hour, sd in hours).
    OPEN_HABITS = ((0.40, 8.0, 1.5), (0.20, 12.0, 1.0), (0.40, 20.0, 2.0))
    YOUNG_PRICE_BUMP = 0.1

    BASE_LOGIT = -4.0
    REGION_EFFECT = np.array([0.0, 0.1, -0.1, 0.05])
    AGE_EFFECT = np.array([0.1, 0.05, 0.0, -0.1])
    STYLE_X_FRAMING = np.array(
        [
            [0.35, -0.15, 0.85, 0.0, -0.2],
            [-0.15, 0.75, -0.05, 0.2, 0.0],
            [0.3, -0.3, -0.15, 0.0, 0.65],
            [-0.2, 0.15, 0.05, 0.7, 0.3],
        ]
    )
    PRICE_X_FRAMING = np.array([0.3, 0.0, 0.55, 0.0, 0.0])
    NIGHT_HOURS, NIGHT_EFFECT, HOUR_GAIN = 6, -0.5, 0.4
    OFFER_APPEAL = np.array([0.0, 0.5, 0.85, 1.05])
    OFFER_COST_PER_PERCENT = 0.012
    OFFER_X_FRAMING = np.zeros((5, 4))
    OFFER_X_FRAMING[2, 0] = -0.5
    STYLE_X_SCENE = np.array(
        [
            [0.0, -0.1, 0.05, 0.3, 0.0],
            [0.2, -0.05, 0.0, -0.1, 0.35],
            [-0.1, 0.25, 0.0, 0.1, -0.05],
            [-0.05, 0.05, 0.3, 0.0, 0.2],
        ]
    )

    def __init__(self, *, drift_steps: int | None = None, new_arm_at: int | None = None) -> None:
        if drift_steps is not None and drift_steps <= 0:
            raise InvalidInputError(f"drift_steps must be a positive step count, got {drift_steps}")
        if new_arm_at is not None and new_arm_at < 0:
            raise InvalidInputError(f"new_arm_at must be a step >= 0, got {new_arm_at}")
        self.drift_steps, self.new_arm_at = drift_steps, new_arm_at
        self.arm_ids: dict[str, tuple[str, ...]] = {
            SUBJECT_LINE: self.FRAMINGS,
            SEND_HOUR: tuple(f"h{h:02d}" for h in self.HOURS),
            OFFER: tuple(f"off{d}" for d in self.DISCOUNTS),
            ARTWORK: self.SCENES,
        }
        self._arm_index = {
            slot: {arm: a for a, arm in enumerate(arms)} for slot, arms in self.arm_ids.items()
        }

    # -- the campaign the engine runs ------------------------------------------------------

    def campaign_spec(
        self,
        name: str = "weekly-newsletter",
        policies: Mapping[str, Any] | None = None,
        *,
        holdout: float = 0.05,
        attribution_window_ms: int = 3 * 24 * 3600 * 1000,
        reward: RewardSpec | Mapping[str, Any] | None = None,
        activation: Literal["decision", "send"] = "decision",
        activation_window_ms: int | None = None,
    ) -> CampaignSpec:
        """The campaign: context schema (style, open-hour sine and cosine, price sensitivity;
        segments region and age band), the four slots with their arm features, and the
        offer slot conditioned on the subject line (their interaction). ``policies`` maps a slot
        to a policy spec (a model, a dict or a kind such as ``"lin_ts"``); slots left out get
        DEFAULT_POLICIES. Default arms (what the holdout gets): plain, h09, off0, product.
        Without ``new_arm_at`` every arm is in; with it, the late scene is added with
        ``late_arms()`` when it arrives. ``reward`` (a RewardSpec or its dict; none: clicks,
        the spec's default) is what the policies learn, ``email_reward()`` the email preset;
        ``activation`` ``"send"`` learns a decision only once its send is posted, if it comes
        within ``activation_window_ms`` of the decision (none: the spec's default)."""
        policies = dict(policies or {})
        unknown = set(policies) - set(SLOTS)
        if unknown:
            raise InvalidInputError(f"policies: unknown slot {sorted(unknown)[0]!r}; "
                                    f"expected some of {', '.join(SLOTS)}")
        specs = {}
        for slot in SLOTS:
            given = policies.get(slot, DEFAULT_POLICIES[slot])
            if isinstance(given, str):
                given = {"kind": given}
            try:
                specs[slot] = _POLICY_SPEC.validate_python(given)
            except ValidationError as error:
                problem = error.errors(include_url=False)[0]
                raise InvalidInputError(f"policies[{slot!r}]: {problem['msg']}") from None
        extra: dict[str, Any] = {"activation": activation}
        if activation_window_ms is not None:
            extra["activation_window_ms"] = activation_window_ms
        if reward is not None:
            extra["reward"] = (reward.model_dump() if isinstance(reward, RewardSpec)
                               else dict(reward))
        try:
            return self._spec(name, specs, holdout, attribution_window_ms, extra)
        except ValidationError as error:
            problem = error.errors(include_url=False)[0]
            where = ".".join(str(part) for part in problem["loc"])
            where = f"{where}: " if where else ""
            raise InvalidInputError(f"campaign_spec: {where}{problem['msg']}") from None

    @staticmethod
    def email_reward(*, scanner_ms: int = 30_000) -> RewardSpec:
        """The email preset of ``reward``: a click 1 (within 2 days of the send), a conversion
        0.01 per unit of value and an unsubscribe -5 (within the attribution window); clicks
        within ``scanner_ms`` of the send are a link scanner's. Opens, complaints and bounces
        are counted, not weighted (opens are machine-polluted, see ``simulators.outcomes``)."""
        return RewardSpec.model_validate({
            "outcomes": {"click": {"weight": 1.0, "window_ms": 2 * 24 * 3600 * 1000},
                         "conversion": {"weight": 0.01},
                         "unsubscribe": {"weight": -5.0}},
            "scanner_ms": scanner_ms})

    def _spec(self, name: str, specs: dict[str, Any], holdout: float,
              attribution_window_ms: int, extra: dict[str, Any]) -> CampaignSpec:
        artwork = self.SCENES if self.new_arm_at is None else self.SCENES[:-1]
        hour_arms = []
        for h in self.HOURS:
            angle = 2.0 * np.pi * h / 24.0
            hour_arms.append({"id": f"h{h:02d}", "features": {
                "hour_sin": round(float(np.sin(angle)), 12),
                "hour_cos": round(float(np.cos(angle)), 12)}})
        return CampaignSpec.model_validate({
            "name": name,
            "holdout": holdout,
            "attribution_window_ms": attribution_window_ms,
            **extra,
            "context": {
                "features": [
                    {"kind": "categorical", "name": "style", "values": list(self.STYLES)},
                    {"kind": "numeric", "name": "open_hour_sin"},
                    {"kind": "numeric", "name": "open_hour_cos"},
                    {"kind": "numeric", "name": "price_sensitivity"},
                ],
                "segments": ["region", "age_band"],
            },
            "slots": [
                {"name": SUBJECT_LINE, "default_arm": "plain", "policy": specs[SUBJECT_LINE],
                 "arms": [{"id": f, "features": {"tone": f}} for f in self.FRAMINGS],
                 "arm_features": [{"kind": "categorical", "name": "tone",
                                   "values": list(self.FRAMINGS)}]},
                {"name": SEND_HOUR, "default_arm": "h09", "policy": specs[SEND_HOUR],
                 "arms": hour_arms,
                 "arm_features": [{"kind": "numeric", "name": "hour_sin"},
                                  {"kind": "numeric", "name": "hour_cos"}]},
                {"name": OFFER, "default_arm": "off0", "policy": specs[OFFER],
                 "arms": [{"id": f"off{d}", "features": {"discount": d}}
                          for d in self.DISCOUNTS],
                 "arm_features": [{"kind": "numeric", "name": "discount"}],
                 "condition_on": [SUBJECT_LINE]},
                {"name": ARTWORK, "default_arm": "product", "policy": specs[ARTWORK],
                 "arms": [{"id": s, "features": {"scene": s}} for s in artwork],
                 "arm_features": [{"kind": "categorical", "name": "scene",
                                   "values": list(self.SCENES)}]},
            ],
        })

    def late_arms(self) -> list[tuple[str, dict[str, Any]]]:
        """(slot, Arm as a dict) for ``Engine.add_arm`` once ``new_arm_at`` is reached."""
        if self.new_arm_at is None:
            return []
        scene = self.SCENES[-1]
        return [(ARTWORK, {"id": scene, "features": {"scene": scene}})]

    def eligible(self, step: int | np.ndarray) -> dict[str, np.ndarray]:
        """Per slot, which arms may be chosen: step int -> (k,) bool, steps (n,) -> (n, k)."""
        step = np.asarray(step)
        out = {slot: np.ones((*step.shape, len(arms)), dtype=bool)
               for slot, arms in self.arm_ids.items()}
        if self.new_arm_at is not None:
            out[ARTWORK][..., -1] = step >= self.new_arm_at
        return out

    # -- subscribers -----------------------------------------------------------------------

    def subscribers(self, n: int, rng: np.random.Generator, *, first_id: int = 0) -> Subscribers:
        """Draw n subscribers with ids s{first_id:07d}, s{first_id + 1:07d}, ..."""
        if n < 0:
            raise InvalidInputError(f"n must be >= 0, got {n}")
        style = rng.choice(len(self.STYLES), size=n, p=self.STYLE_SHARE)
        region = rng.choice(len(self.REGIONS), size=n, p=self.REGION_SHARE)
        age = rng.choice(len(self.AGE_BANDS), size=n, p=self.AGE_SHARE)
        share, mean, sd = (np.array(column) for column in zip(*self.OPEN_HABITS, strict=True))
        habit = rng.choice(len(share), size=n, p=share)
        hour = np.mod(rng.normal(mean[habit], sd[habit]), 24.0)
        deal_seeker = style == self.STYLES.index("deal_seeker")
        price = np.where(deal_seeker, rng.beta(5.0, 2.0, size=n), rng.beta(2.0, 4.0, size=n))
        price = np.minimum(price + self.YOUNG_PRICE_BUMP * (age == 0), 1.0)
        return Subscribers(
            user_ids=tuple(f"s{i:07d}" for i in range(first_id, first_id + n)),
            style=style.astype(np.int64), open_hour=hour, price_sensitivity=price,
            region=region.astype(np.int64), age_band=age.astype(np.int64),
        )

    # -- the truth -------------------------------------------------------------------------

    def drift_fraction(self, step: int | np.ndarray) -> np.ndarray:
        """How far the subject-line preferences have moved (0 at the start, 1 at the end)."""
        step = np.asarray(step, dtype=np.float64)
        if self.drift_steps is None:
            return np.zeros_like(step)
        return np.clip(step / self.drift_steps, 0.0, 1.0)

    def slot_logits(
        self, subscribers: Subscribers, step: int | np.ndarray = 0
    ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
        """The logit in parts: base (n,), per slot (n, k_slot) terms, and the subject line x
        offer interaction (5, 4); a combination's logit is base + the chosen terms + the
        interaction of its framing and offer."""
        s, q = subscribers.style, subscribers.price_sensitivity
        n = len(subscribers)
        base = (self.BASE_LOGIT + self.REGION_EFFECT[subscribers.region]
                + self.AGE_EFFECT[subscribers.age_band])
        framing = self.STYLE_X_FRAMING[s]
        if self.drift_steps is not None:
            d = np.broadcast_to(self.drift_fraction(step), (n,))[:, None]
            framing = (1.0 - d) * framing + d * np.roll(self.STYLE_X_FRAMING, 1, axis=0)[s]
        hours = np.array(self.HOURS, dtype=np.float64)
        night = np.where(hours < self.NIGHT_HOURS, self.NIGHT_EFFECT, 0.0)
        discounts = np.array(self.DISCOUNTS, dtype=np.float64)
        terms = {
            SUBJECT_LINE: framing + np.outer(q - 0.5, self.PRICE_X_FRAMING),
            SEND_HOUR: night + self.HOUR_GAIN * np.cos(
                2.0 * np.pi * (hours[None, :] - subscribers.open_hour[:, None]) / 24.0),
            OFFER: np.outer(q, self.OFFER_APPEAL) - self.OFFER_COST_PER_PERCENT * discounts,
            ARTWORK: self.STYLE_X_SCENE[s],
        }
        return base, terms, self.OFFER_X_FRAMING

    def indices(self, choices: Mapping[str, Any], n: int) -> dict[str, np.ndarray]:
        """Choices per slot as arm ids or indices (n,) -> int64 indices (n,), checked."""
        missing = [slot for slot in SLOTS if slot not in choices]
        if missing:
            raise InvalidInputError(f"choices: missing slot {missing[0]!r}")
        extra = set(choices) - set(SLOTS)
        if extra:
            raise InvalidInputError(f"choices: unknown slot {sorted(extra)[0]!r}")
        out = {}
        for slot in SLOTS:
            values = np.asarray(choices[slot])
            if values.shape != (n,):
                raise InvalidInputError(
                    f"choices[{slot!r}]: expected {n} arms, got shape {values.shape}")
            k = len(self.arm_ids[slot])
            if values.dtype.kind in "iu":
                if n and (values.min() < 0 or values.max() >= k):
                    bad = values[(values < 0) | (values >= k)][0]
                    raise InvalidInputError(
                        f"choices[{slot!r}]: arm index {bad} outside 0..{k - 1}")
                out[slot] = values.astype(np.int64)
            elif values.dtype.kind in "UO":
                index = self._arm_index[slot]
                try:
                    out[slot] = np.array([index[a] for a in values.tolist()], dtype=np.int64)
                except (KeyError, TypeError):
                    bad = next(a for a in values.tolist() if a not in index)
                    raise InvalidInputError(f"choices[{slot!r}]: no arm {bad!r}") from None
            else:
                raise InvalidInputError(
                    f"choices[{slot!r}]: expected arm ids or indices, got dtype {values.dtype}")
        return out

    def click_probability(
        self, subscribers: Subscribers, choices: Mapping[str, Any], step: int | np.ndarray = 0
    ) -> np.ndarray:
        """True click probability (n,) of each subscriber's combination; choices maps every slot
        to arm ids or indices (n,); step (int or (n,)) matters only with drift."""
        n = len(subscribers)
        idx = self.indices(choices, n)
        base, terms, inter = self.slot_logits(subscribers, step)
        rows = np.arange(n)
        logit = base + inter[idx[SUBJECT_LINE], idx[OFFER]]
        for slot in SLOTS:
            logit = logit + terms[slot][rows, idx[slot]]
        return _sigmoid(logit)

    def sample_clicks(
        self,
        subscribers: Subscribers,
        choices: Mapping[str, Any],
        rng: np.random.Generator,
        step: int | np.ndarray = 0,
    ) -> np.ndarray:
        """Bernoulli clicks (n,) float64 0/1 for the chosen combinations."""
        p = self.click_probability(subscribers, choices, step)
        return (rng.random(len(subscribers)) < p).astype(np.float64)

    def oracle(
        self, subscribers: Subscribers, step: int | np.ndarray = 0
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The best combination of eligible arms for every subscriber: arm indices per slot
        (n,) and its click probability (n,). Exact: the logit is additive except for the
        subject x offer pair, which is searched jointly (20 pairs)."""
        n = len(subscribers)
        base, terms, inter = self.slot_logits(subscribers, step)
        eligible = self.eligible(np.broadcast_to(np.asarray(step), (n,)))
        masked = {slot: np.where(eligible[slot], terms[slot], -np.inf) for slot in SLOTS}
        pair = masked[SUBJECT_LINE][:, :, None] + masked[OFFER][:, None, :] + inter
        best_pair = pair.reshape(n, -1).argmax(axis=1)
        choice = {
            SUBJECT_LINE: best_pair // len(self.DISCOUNTS),
            OFFER: best_pair % len(self.DISCOUNTS),
            SEND_HOUR: masked[SEND_HOUR].argmax(axis=1),
            ARTWORK: masked[ARTWORK].argmax(axis=1),
        }
        logit = (base + pair.reshape(n, -1).max(axis=1) + masked[SEND_HOUR].max(axis=1)
                 + masked[ARTWORK].max(axis=1))
        return {slot: choice[slot].astype(np.int64) for slot in SLOTS}, _sigmoid(logit)

    def uniform_value(
        self, subscribers: Subscribers, step: int | np.ndarray = 0
    ) -> np.ndarray:
        """Expected click probability (n,) of choosing every slot uniformly at random among its
        eligible arms: the average over all combinations (2,400 with every arm in)."""
        n = len(subscribers)
        base, terms, inter = self.slot_logits(subscribers, step)
        eligible = self.eligible(np.broadcast_to(np.asarray(step), (n,)))
        out = np.empty(n)
        for start in range(0, n, _CHUNK_ROWS):
            rows = slice(start, min(start + _CHUNK_ROWS, n))
            pair = (terms[SUBJECT_LINE][rows, :, None] + terms[OFFER][rows, None, :]
                    + inter).reshape(rows.stop - rows.start, -1)
            rest = (terms[SEND_HOUR][rows, :, None] + terms[ARTWORK][rows, None, :])
            # Ineligible arms get weight 0 and the weights of each row sum to 1.
            weight = (eligible[SEND_HOUR][rows, :, None] & eligible[ARTWORK][rows, None, :])
            weight = weight.reshape(rows.stop - rows.start, -1).astype(np.float64)
            weight /= weight.sum(axis=1, keepdims=True)
            rest = rest.reshape(rows.stop - rows.start, -1)
            p = _sigmoid(base[rows, None, None] + pair[:, :, None] + rest[:, None, :])
            out[rows] = np.einsum("npr,nr->n", p, weight) / pair.shape[1]
        return out

    def slot_losses(
        self, subscribers: Subscribers, choices: Mapping[str, Any], step: int | np.ndarray = 0
    ) -> dict[str, np.ndarray]:
        """Per slot, what its choice cost (n,): the click probability with the slot's best
        eligible arm given the other slots' choices, minus that of the chosen combination."""
        n = len(subscribers)
        idx = self.indices(choices, n)
        base, terms, inter = self.slot_logits(subscribers, step)
        eligible = self.eligible(np.broadcast_to(np.asarray(step), (n,)))
        rows = np.arange(n)
        chosen = {slot: terms[slot][rows, idx[slot]] for slot in SLOTS}
        total = base + sum(chosen.values()) + inter[idx[SUBJECT_LINE], idx[OFFER]]
        p = _sigmoid(total)
        out = {}
        for slot in SLOTS:
            # Every arm of this slot with the others held: (n, k) logits.
            held = total - chosen[slot] - inter[idx[SUBJECT_LINE], idx[OFFER]]
            alt = held[:, None] + terms[slot]
            if slot == SUBJECT_LINE:
                alt = alt + inter[:, idx[OFFER]].T
            elif slot == OFFER:
                alt = alt + inter[idx[SUBJECT_LINE]]
            else:
                alt = alt + inter[idx[SUBJECT_LINE], idx[OFFER]][:, None]
            best = np.where(eligible[slot], alt, -np.inf).max(axis=1)
            # The chosen arm is among the alternatives: below 0 only by rounding.
            out[slot] = np.maximum(_sigmoid(best) - p, 0.0)
        return out
