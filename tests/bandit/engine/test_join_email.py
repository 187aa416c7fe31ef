"""The email join: logged decisions, activation by send, outcomes by type and the campaign's
reward; machine and scanner events counted apart; batching and restarts change nothing."""

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit import wire
from bandit.engine import Engine
from bandit.engine.join import Joiner, subject_key
from bandit.models import (
    Bounce,
    CampaignSpec,
    Click,
    Complaint,
    Conversion,
    Impression,
    LoggedDecision,
    Open,
    Send,
    Unsubscribe,
)

WINDOW, WAIT, SCANNER = 1000, 300, 20
REWARD = {"outcomes": {"click": {"weight": 1, "aggregation": "first"},
                       "conversion": {"weight": 0.01},
                       "unsubscribe": {"weight": -5, "window_ms": 500}},
          "scanner_ms": SCANNER}
KINDS = {"open": Open, "click": Click, "unsubscribe": Unsubscribe, "complaint": Complaint,
         "bounce": Bounce}


def spec(activation="send", default=0.0):
    return CampaignSpec.model_validate({
        "name": "w", "attribution_window_ms": WINDOW, "activation": activation,
        "activation_window_ms": WAIT, "default_reward": default, "reward": REWARD,
        "slots": [{"name": "s", "arms": [{"id": "a"}, {"id": "b"}], "default_arm": "a"},
                  {"name": "t", "arms": [{"id": "x"}], "default_arm": "x"}]})


def did(i):
    return f"{i:031x}1"  # odd: decided with consent


def decision(i, ts, **extra):
    return LoggedDecision.model_validate({
        "decision_id": did(i), "campaign": "w", "subject": subject_key(f"u{i % 3}").hex(),
        "ts": ts, "model_version": 7, "context": {"x": i / 4}, "segments": {"region": "n"},
        "slots": {"s": {"arm": "ab"[i % 2], "propensity": 0.5,
                        "probabilities": {"a": 0.5, "b": 0.5}},
                  "t": {"arm": "x", "propensity": 1.0, "probabilities": {"x": 1.0}}}, **extra})


def send(i, ts, n=0):
    return Send(event_id=f"send{i}-{n}", decision_id=did(i), ts=ts)


def outcome(kind, i, j, ts, **extra):
    if kind == "conversion":
        return Conversion(event_id=f"{kind}{i}-{j}", decision_id=did(i), ts=ts,
                          value=extra.pop("value", 100.0), **extra)
    return KINDS[kind](event_id=f"{kind}{i}-{j}", decision_id=did(i), ts=ts, **extra)


def flush(join, ts=100_000):
    """Close every window: a decision far in event time."""
    return join.add([decision(999_999, ts)])


def test_a_sent_decision_learns_its_weighted_outcomes_and_counts_every_type():
    j = Joiner(lambda name: spec())
    j.add([decision(1, 0), send(1, 100),
           outcome("open", 1, 0, 150), outcome("click", 1, 0, 200), outcome("click", 1, 1, 180),
           outcome("conversion", 1, 0, 400, value=50.0),
           outcome("conversion", 1, 1, 500, value=30.0, slot="s"),
           outcome("unsubscribe", 1, 0, 550), outcome("complaint", 1, 0, 560)])
    out = flush(j)
    (joined,) = out.joined
    # click: the first (1); conversion: sum of values x 0.01 (0.8 on s, 0.5 on t);
    # unsubscribe: -5 within its 500 ms after the send (at 550, 450 ms after it)
    assert joined.rewards == {"s": pytest.approx(1 + 0.8 - 5), "t": pytest.approx(1 + 0.5 - 5)}
    assert joined.outcomes == {"open": 1, "click": 2, "conversion": 2, "unsubscribe": 1,
                               "complaint": 1}
    assert joined.subject == subject_key("u1").hex() and joined.model_version == 7
    assert joined.slots["s"].probabilities == {"a": 0.5, "b": 0.5}
    assert out.rejected == [] and not out.excluded


def test_an_outcome_past_its_type_window_counts_nothing():
    j = Joiner(lambda name: spec())
    out = j.add([decision(1, 0), send(1, 0), outcome("unsubscribe", 1, 0, 501)])
    assert [r.reason for r in out.rejected] == ["late: outside the attribution window"]
    assert flush(j).joined[0].rewards == {"s": 0.0, "t": 0.0}


def test_a_decision_never_sent_is_not_learned_and_is_counted():
    j = Joiner(lambda name: spec())
    j.add([decision(1, 0), decision(2, 0), send(2, 10)])
    out = j.add([decision(3, WAIT + 1)])  # past decision 1's activation window
    assert out.excluded == Counter(unsent=1) and out.joined == []
    late = j.add([send(1, WAIT + 2)])
    assert [r.reason for r in late.rejected] == [
        "late: the decision's activation window had passed"]
    assert [e.decision_id for e in flush(j).joined] == [did(2)]  # and decision 3, unsent


def test_outcomes_before_the_send_wait_for_it_and_a_send_may_come_before_its_decision():
    j = Joiner(lambda name: spec())
    # The stream worker reads two topics: a send may overtake its logged decision.
    j.add([send(1, 50), outcome("open", 1, 0, 60), outcome("click", 2, 0, 70)])
    j.add([decision(1, 40), decision(2, 40)])
    out = j.add([send(2, 65)])  # decision 2's click at 70 waited for its send at 65
    assert out.rejected == []
    joined = {e.decision_id: e for e in flush(j).joined}
    assert joined[did(1)].outcomes == {"open": 1}
    # 5 ms after the send: a link scanner's click is not learned
    assert joined[did(2)].outcomes == {} and joined[did(2)].rewards["s"] == 0.0


def test_machine_opens_and_scanner_clicks_are_counted_apart_and_never_learned():
    j = Joiner(lambda name: spec())
    out = j.add([decision(1, 0), send(1, 100), outcome("open", 1, 0, 101, machine=True),
                 outcome("click", 1, 0, 100 + SCANNER - 1),
                 outcome("click", 1, 1, 100 + SCANNER + 50, machine=True),
                 outcome("click", 1, 2, 100 + SCANNER)])  # the scanner time itself: a person
    assert out.excluded == Counter(machine=2, scanner=1)
    (joined,) = flush(j).joined
    assert joined.outcomes == {"click": 1} and joined.rewards["s"] == 1.0


def test_activation_by_decision_learns_without_a_send_and_a_send_times_the_scanner():
    j = Joiner(lambda name: spec("decision"))
    j.add([decision(1, 0), decision(2, 0), send(2, 500),
           outcome("click", 1, 0, 30), outcome("click", 2, 0, 510)])
    joined = {e.decision_id: e for e in flush(j).joined}
    assert joined[did(1)].outcomes == {"click": 1}  # 30 ms after the decision, no send known
    assert joined[did(2)].outcomes == {}  # 10 ms after its send: the scanner's


def test_a_legacy_impression_is_the_send_of_a_logged_decision_or_a_decision_and_its_send():
    j = Joiner(lambda name: spec())
    imp = Impression(event_id="imp1", decision_id=did(1), campaign="w", user_id="ignored",
                     ts=100, slots={"s": {"arm": "b", "propensity": 0.9}})
    alone = Impression(event_id="imp2", decision_id=did(2), campaign="w", user_id="u2", ts=100,
                       slots={"s": {"arm": "b", "propensity": 0.9}})
    out = j.add([decision(1, 0), imp, alone, outcome("open", 1, 0, 150),
                 outcome("open", 2, 0, 150)])
    assert out.rejected == []
    joined = {e.decision_id: e for e in flush(j).joined}
    assert joined[did(1)].slots["s"].arm == "b" and joined[did(1)].subject == (
        subject_key("u1").hex())  # the logged decision's, not the impression's
    assert joined[did(2)].slots["s"].propensity == 0.9
    assert joined[did(2)].subject == subject_key("u2").hex()
    assert joined[did(2)].slots["s"].probabilities == {}
    assert all(e.outcomes == {"open": 1} for e in joined.values())


def test_repeats_are_rejected_and_an_outcome_names_its_decision_campaign():
    j = Joiner(lambda name: spec())
    out = j.add([decision(1, 0), decision(1, 0), send(1, 5), send(1, 6, n=1),
                 outcome("open", 1, 0, 10, campaign="other"), outcome("open", 1, 1, 10,
                                                                     slot="nope")])
    assert [r.reason for r in out.rejected] == [
        "duplicate decision: the decision is logged already", "duplicate send for the decision",
        "the decision is of campaign 'w'", "the decision has no slot 'nope'"]


def test_the_engine_strips_a_consentless_logged_decision_and_counts_exclusions():
    engine = Engine()
    engine.create_campaign(spec())
    consentless = decision(1, 0, decision_id=f"{1:031x}0")
    assert engine.record([consentless, Send(event_id="s", decision_id=consentless.decision_id,
                                            ts=1), Open(event_id="o", machine=True,
                                                        decision_id=consentless.decision_id,
                                                        ts=2)]) == 3
    assert engine.stripped_impressions == 1 and engine.excluded == Counter(machine=1)
    (joined,) = engine.ingest([decision(999_999, 100_000, context=None)]).joined  # closes it
    assert joined.context is None and joined.segments == {}


@st.composite
def email_streams(draw):
    """A time-ordered stream of logged decisions (some never sent), legacy impressions, sends,
    outcomes of every type (machine ones, scanner clicks, outside their windows, on a slot or
    all), duplicates; then a decision far ahead that closes every window."""
    events = []
    for i in range(draw(st.integers(1, 10))):
        t0 = draw(st.integers(0, 2000))
        if draw(st.booleans()):
            events.append((t0, decision(i, t0)))
            sent = draw(st.none() | st.integers(0, WAIT + 50))
            if sent is not None:
                events.append((t0 + sent, send(i, t0 + sent)))
        else:
            sent = 0
            events.append((t0, Impression(event_id=f"imp{i}", decision_id=did(i), campaign="w",
                                          user_id=f"u{i}", ts=t0,
                                          slots={"s": {"arm": "a", "propensity": 0.5}})))
        for j in range(draw(st.integers(0, 4))):
            kind = draw(st.sampled_from([*KINDS, "conversion"]))
            ts = t0 + (sent or 0) + draw(st.integers(0, WINDOW + 100))
            extra = {"machine": draw(st.booleans()), "slot": draw(st.sampled_from([None, "s"]))}
            if kind == "conversion":
                extra["value"] = draw(st.sampled_from([1.0, 20.0, 35.5]))
            events.append((ts, outcome(kind, i, j, ts, **extra)))
    if draw(st.booleans()):
        events.append(events[-1])  # a duplicate delivery
    events.sort(key=lambda e: e[0])
    return [e for _, e in events] + [decision(999_999, 100_000)]


def _run(events, cuts, restore):
    j = Joiner(lambda name: spec())
    joined, rejected, excluded = [], [], Counter()
    bounds = [0, *sorted(cuts), len(events)]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        out = j.add(events[lo:hi])
        joined += [e.model_dump() for e in out.joined]
        rejected += [(getattr(r.event, "event_id", r.event.decision_id), r.reason)
                     for r in out.rejected]
        excluded += out.excluded
        if restore:
            j = Joiner.from_state(*j.state(), lambda name: spec())
    return joined, sorted(rejected), excluded, j.open_count


@settings(max_examples=80, deadline=None)
@given(events=email_streams(), data=st.data())
def test_any_batching_and_any_restarts_give_the_same_email_joins(events, data):
    cuts = data.draw(st.lists(st.integers(0, len(events)), max_size=6))
    whole = _run(events, [], False)
    assert _run(events, cuts, False) == whole
    assert _run(events, cuts, True) == whole
    assert len({e["decision_id"] for e in whole[0]}) == len(whole[0])


def test_the_wire_mirrors_join_as_the_models_do():
    models = [decision(1, 0), send(1, 10), outcome("conversion", 1, 0, 40, value=3.0),
              outcome("open", 1, 1, 20, machine=True)]
    mirrors = [wire.DECISIONS.decode(models[0].model_dump_json()),
               *(wire.EVENTS.decode(e.model_dump_json()) for e in models[1:])]
    a, b = Joiner(lambda name: spec()), Joiner(lambda name: spec())
    a.add(models)
    b.add(mirrors)
    (mine,), (theirs,) = flush(a).joined, flush(b).joined
    assert type(theirs) is wire.Joined
    assert wire.joined_json(theirs) == mine.model_dump_json(exclude_none=True).encode()
