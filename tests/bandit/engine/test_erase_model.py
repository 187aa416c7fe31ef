"""Erasure from the model (``bandit.engine.erase.forget_joined``): an engine that learned a
joined stream and then forgot a subject's closed decisions holds, in every slot with sums, the
policies of an engine that learned the stream without them."""

from typing import Any

import numpy as np
import pytest

from bandit.engine import Engine
from bandit.engine.erase import forget_joined
from bandit.engine.randomness import subject_key
from bandit.errors import InvalidInputError
from bandit.models import CampaignSpec, JoinedEvent

KINDS = ["lin_ucb", "lin_ts", "epsilon_greedy", "hybrid_lin_ucb", "beta_ts", "bart"]
STYLES = ["deal", "busy"]
HOUR_MS = 3_600_000
# A whole-number half-life and one that is not (see bandit.kernels.decay).
HALF_LIVES = [None, 2 * HOUR_MS, 1e9 / 3]


def spec(half_life_ms: float | None, kinds: list[str] = KINDS) -> CampaignSpec:
    """A slot of every kind; each over arm features, each but the first conditioned on the
    one before it (its input is the context and a one-hot of that slot's choice)."""
    slots: list[dict[str, Any]] = []
    for i, kind in enumerate(kinds):
        policy: dict[str, Any] = {"kind": kind}
        if half_life_ms is not None and kind != "vw":
            policy["half_life_ms"] = half_life_ms
        slots.append({
            "name": kind, "default_arm": f"{kind}-0", "policy": policy,
            "arms": [{"id": f"{kind}-{j}", "features": {"f": float(j) - 1.0}} for j in range(3)],
            "arm_features": [{"kind": "numeric", "name": "f"}],
            "condition_on": [kinds[i - 1]] if i else []})
    return CampaignSpec.model_validate({
        "name": "weekly", "holdout": 0.1, "attribution_window_ms": 1000,
        "context": {"features": [{"kind": "numeric", "name": "engagement"},
                                 {"kind": "categorical", "name": "style", "values": STYLES}],
                    "segments": ["region"]},
        "slots": slots})


def stream(seed: int, n: int, users: int, kinds: list[str] = KINDS) -> list[JoinedEvent]:
    """n closed decisions of ``users`` subscribers over some ten hours, out of order by up to
    an hour: some without consent (no context), some without every slot, rewards from the
    slot's arm and the context (sums of clicks too, which Beta TS clips to one)."""
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.uniform(0, 10 * HOUR_MS, n)) + rng.uniform(0, HOUR_MS, n)
    events = []
    for i in range(n):
        user = f"user-{rng.integers(users)}"
        named = [k for k in kinds if rng.random() < 0.85] or kinds[:1]
        choices = {k: int(rng.integers(3)) for k in named}
        engagement = float(rng.normal())
        consent = rng.random() < 0.8
        events.append(JoinedEvent(
            decision_id=f"{i:032x}", campaign="weekly", subject=subject_key(user).hex(),
            ts=int(1.8e12 + ts[i]), holdout=bool(rng.random() < 0.1),
            context={"engagement": engagement, "style": STYLES[i % 2]} if consent else None,
            segments={"region": ["eu", "us"][i % 2]},
            slots={k: {"arm": f"{k}-{a}", "propensity": 1 / 3} for k, a in choices.items()},
            rewards={k: float(rng.random() < 0.2 + 0.2 * a + 0.1 * engagement)
                     * (2.0 if rng.random() < 0.1 else 1.0) for k, a in choices.items()}))
    return events


def _engine(half_life_ms, events, kinds=KINDS):
    engine = Engine(seed=3)
    engine.create_campaign(spec(half_life_ms, kinds))
    if events:
        engine.learn(events)
    return engine


def _policies(engine, kind):
    s = engine._get("weekly").slot(kind)
    return [("policy", s.policy)] + ([] if s.fallback is s.policy else [("fallback", s.fallback)])


def assert_same_policies(forgot: Engine, never: Engine, kinds=KINDS) -> None:
    """Every slot's policy and fallback: the sums agree to 1e-9 seen from a common time, and
    so do the decisions once ``never``'s clock is advanced to ``forgot``'s (forgetting leaves
    the clock where the forgotten rows moved it: ``Policy.forget_many``)."""
    for kind in kinds:
        for (role, mine), (_, theirs) in zip(_policies(forgot, kind), _policies(never, kind),
                                               strict=True):
            refs = [t for t in (mine.state()["t_ref_ms"], theirs.state()["t_ref_ms"])
                    if t is not None]
            common = max(refs) if refs else None
            ours, others = mine.sums_at(common), theirs.sums_at(common)
            for name, value in ours.items():
                np.testing.assert_allclose(value, others[name], rtol=0, atol=1e-9,
                                           err_msg=f"{kind} {role} {name}")
            state = theirs.state()
            advanced = type(theirs).from_state(dict(
                state, t_ref_ms=mine.state()["t_ref_ms"], t_newest_ms=mine.state()["t_newest_ms"],
                arrays={**theirs.sums_at(mine.state()["t_ref_ms"]),
                        "active": state["arrays"]["active"]}))
            Q = np.random.default_rng(1).normal(size=(5, mine.dim))
            draws = np.random.default_rng(2).random((5, 2 + mine.n_arms))
            np.testing.assert_allclose(mine.propensities(Q), advanced.propensities(Q),
                                       atol=1e-8, err_msg=f"{kind} {role}")
            np.testing.assert_array_equal(mine.choose_many(Q, draws=draws),
                                          advanced.choose_many(Q, draws=draws))


@pytest.mark.parametrize("half_life_ms", HALF_LIVES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forgetting_a_subjects_decisions_gives_the_engine_that_never_learned_them(
        half_life_ms, seed):
    events = stream(seed, 160, 7)
    erased = {subject_key("user-3").hex(), subject_key(f"user-{4 + seed}").hex()}
    forgot = _engine(half_life_ms, events)
    never = _engine(half_life_ms, [e for e in events if e.subject not in erased])
    mine = [e for e in events if e.subject in erased]
    version = forgot.model_version("weekly")
    # One subject at a time, the later decisions first, in two calls each.
    for subject in sorted(erased):
        theirs = [e for e in mine if e.subject == subject][::-1]
        half = len(theirs) // 2
        for part in (theirs[:half], theirs[half:]):
            assert forget_joined(forgot._get("weekly"), part) == []
    assert forgot.model_version("weekly") == version + 4
    assert_same_policies(forgot, never)


@pytest.mark.parametrize("half_life_ms", [None, 2 * HOUR_MS])
def test_forgetting_every_subject_gives_the_untrained_engine(half_life_ms):
    events = stream(5, 80, 3)
    forgot, untrained = _engine(half_life_ms, events), _engine(half_life_ms, [])
    forget_joined(forgot._get("weekly"), events)
    for kind in KINDS:
        for (_, mine), (_, fresh) in zip(_policies(forgot, kind), _policies(untrained, kind),
                                         strict=True):
            for name, value in mine.sums_at(None).items():
                np.testing.assert_array_equal(value, fresh.sums_at(None)[name], err_msg=name)


def test_decisions_a_slot_never_learned_refuse_the_erasure_and_change_nothing():
    # Bart's arm 1 learned nothing; the slots before it learned the decision.
    events = [e for e in stream(6, 60, 4) if "bart" not in e.slots
              or e.slots["bart"].arm != "bart-1"]
    engine = _engine(None, events)
    c = engine._get("weekly")
    before, version = engine.to_bytes(), c.version
    objects = [p for kind in KINDS for _, p in _policies(engine, kind)]
    known = next(e for e in events if "bart" in e.slots)
    dumped = known.model_dump()
    unknown = JoinedEvent.model_validate({**dumped, "slots": {
        **dumped["slots"], "bart": {"arm": "bart-1", "propensity": 0.5}}})
    with pytest.raises(InvalidInputError, match=r"counts at \(1,\) would fall from 0"):
        forget_joined(c, [known, unknown])
    with pytest.raises(InvalidInputError, match="no campaign 'monthly'"):
        forget_joined(c, [known.model_copy(update={"campaign": "monthly"})])
    assert engine.to_bytes() == before
    assert c.version == version
    assert [p for kind in KINDS for _, p in _policies(engine, kind)] == objects


def test_a_vw_slot_is_named_for_retraining_and_left_as_it_is():
    kinds = ["lin_ucb", "vw"]
    events = stream(7, 60, 4, kinds)
    erased = subject_key("user-1").hex()
    forgot = _engine(None, events, kinds)
    never = _engine(None, [e for e in events if e.subject != erased], kinds)
    vw = forgot._get("weekly").slot("vw")
    model = vw.policy.model_bytes()
    assert forget_joined(forgot._get("weekly"),
                         [e for e in events if e.subject == erased]) == ["vw"]
    assert vw.policy.model_bytes() == model
    assert_same_policies(forgot, never, ["lin_ucb"])
