"""The stream's decoder: the msgspec mirrors (bandit.wire) against the pydantic event models on
valid and invalid input and field by field, dead-letter reasons, the joined output's bytes."""

import types
import typing

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit import models, wire
from bandit.engine.join import subject_key
from bandit.models import JoinedEvent
from bandit.wire import decisions
from streams.codec import Refused, decode, decode_many, decode_model, encode

names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.:-]{0,10}\Z")
labels = st.text(min_size=1, max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False)
epoch = st.integers(0, 2**53 - 1) | st.integers(0, 2**40).map(float)
decision_ids = st.from_regex(r"\A[0-9a-f]{32}\Z")

impressions = st.fixed_dictionaries(
    {"type": st.just("impression"), "event_id": labels, "decision_id": decision_ids,
     "campaign": names, "user_id": labels, "ts": epoch,
     "slots": st.dictionaries(names, st.fixed_dictionaries(
         {"arm": names, "propensity": st.floats(0.001, 1.0)}), min_size=1, max_size=4)},
    optional={"context": st.none() | st.dictionaries(names, finite | labels, max_size=4),
              "segments": st.dictionaries(names, labels, max_size=3),
              "holdout": st.booleans(), "model_version": st.integers(0, 2**31)})
clicks = st.fixed_dictionaries(
    {"type": st.just("click"), "event_id": labels, "decision_id": decision_ids,
     "campaign": names, "ts": epoch},
    # Rewards within models.REWARD_LIMIT (1e9): beyond it both decoders refuse them.
    optional={"reward": st.floats(-1e9, 1e9), "slot": st.none() | names})
watermarks = st.fixed_dictionaries({"type": st.just("watermark"), "ts": epoch})
events = impressions | clicks | watermarks


# -- every mirror pinned to its pydantic twin: the same fields, in order, types and defaults ----

MIRRORS = [(wire.SlotChoice, models.SlotChoice), (wire.Impression, models.Impression),
           (wire.Click, models.Click), (wire.Watermark, models.Watermark),
           (wire.Joined, models.JoinedEvent), (decisions.DecisionRequest, models.DecisionRequest),
           (wire.Send, models.Send), (wire.Open, models.Open),
           (wire.Conversion, models.Conversion), (wire.Unsubscribe, models.Unsubscribe),
           (wire.Complaint, models.Complaint), (wire.Bounce, models.Bounce),
           (wire.LoggedChoice, models.LoggedChoice), (wire.LoggedDecision, models.LoggedDecision)]


def _model_type(annotation):
    """A pydantic annotation as a plain type tree (constraints and patterns dropped)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _model_type(args[0])
    if origin in (typing.Union, types.UnionType):
        return frozenset(_model_type(a) for a in args)
    if origin is dict:
        return ("dict", _model_type(args[0]), _model_type(args[1]))
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and issubclass(annotation, models.Strict):
        return annotation.__name__
    return annotation.__name__


def _struct_type(info):
    """A msgspec type (msgspec.inspect) as the same plain type tree."""
    if isinstance(info, msgspec.inspect.Metadata):
        return _struct_type(info.type)
    if isinstance(info, msgspec.inspect.UnionType):
        return frozenset(_struct_type(t) for t in info.types)
    if isinstance(info, msgspec.inspect.DictType):
        return ("dict", _struct_type(info.key_type), _struct_type(info.value_type))
    if isinstance(info, msgspec.inspect.StructType):
        return info.cls.__name__
    return {msgspec.inspect.StrType: "str", msgspec.inspect.FloatType: "float",
            msgspec.inspect.BoolType: "bool", msgspec.inspect.NoneType: "None",
            msgspec.inspect.IntType: "int", msgspec.inspect.LiteralType: "Literal"}[type(info)]


def _default(field):
    if field.default_factory is not None and field.default_factory is not msgspec.NODEFAULT:
        return field.default_factory()
    return field.default


@pytest.mark.parametrize(("mirror", "model"), MIRRORS, ids=lambda t: t.__name__)
def test_every_mirror_has_its_models_fields_types_and_defaults(mirror, model):
    fields = {name: f for name, f in model.model_fields.items() if name != "type"}
    info = msgspec.inspect.type_info(mirror)
    assert [f.name for f in info.fields] == list(fields)  # same fields, in the JSON's order
    for field in info.fields:
        twin = fields[field.name]
        if (mirror, field.name) == (wire.LoggedChoice, "probabilities"):
            # Kept as the raw JSON object (bandit.wire.logged says why)
            assert isinstance(field.type, msgspec.inspect.RawType)
            continue
        assert _struct_type(field.type) == _model_type(twin.annotation), field.name
        assert field.required == twin.is_required(), field.name
        if not field.required:
            assert _default(field) == twin.get_default(call_default_factory=True), field.name
    if "type" in model.model_fields:  # the tag: a ClassVar of the mirror, a Literal of the model
        assert (mirror.type,) == typing.get_args(model.model_fields["type"].annotation)


def _fast_refuses(raw):
    """Whether the fast path (msgspec, then the batch pattern check) refuses the record."""
    try:
        event = wire.EVENTS.decode(raw)
    except msgspec.ValidationError:
        return True
    return wire.misfits([event]) == [0]


@settings(max_examples=60, deadline=None)
@given(event=events)
def test_valid_events_decode_to_the_same_content_as_the_pydantic_models(event):
    raw = orjson.dumps(event)
    fast, model = wire.EVENTS.decode(raw), decode_model(raw)
    assert wire.misfits([fast]) == []
    assert fast.type == model.type
    assert encode(fast) == encode(model)  # same fields, same values, same bytes
    assert type(fast.ts) is int and fast.ts == model.ts


# One field of a valid impression made wrong in each way the models refuse.
_BASE = {"type": "impression", "event_id": "e", "decision_id": "0" * 32, "campaign": "c",
         "user_id": "u", "ts": 5, "slots": {"s": {"arm": "a", "propensity": 0.5}}}
BAD = [({"ts": 5.5}, "ts: Value error, expected a whole number, got 5.5"),
       ({"ts": -1}, "ts: Input should be greater than or equal to 0"),
       ({"ts": 2**53 + 2}, "ts: Input should be less than or equal to"),
       # float64 reads 2**53 + 1 as 2**53: the bound is below both.
       ({"ts": 2**53 + 1}, "ts: Input should be less than or equal to 9007199254740991"),
       ({"ts": 2**53}, "ts: Input should be less than or equal to 9007199254740991"),
       ({"ts": float(2**53)}, "ts: Input should be less than or equal to 9007199254740991"),
       ({"ts": True}, "ts: Input should be a valid number"),
       ({"ts": "5"}, "ts: Input should be a valid number"),
       ({"holdout": 1}, "holdout: Input should be a valid boolean"),
       ({"context": {"x": True}}, "context.x.float: Input should be a valid number"),
       ({"context": {"x": ""}}, "context.x"),
       ({"context": {"": 1.0}}, "context..[key]: String should have at least 1 character"),
       ({"model_version": 1.5}, "model_version: Value error, expected a whole number"),
       ({"model_version": -1}, "model_version: Input should be greater than or equal to 0"),
       ({"slots": {}}, "slots: Dictionary should have at least 1 item"),
       ({"slots": {"s": {"arm": "a", "propensity": 0}}}, "slots.s.propensity"),
       ({"slots": {"s": {"arm": "a", "propensity": 1.5}}}, "slots.s.propensity"),
       ({"slots": {"s": {"arm": "a"}}}, "slots.s.propensity: Field required"),
       ({"slots": {"s": {"arm": "a", "propensity": 1, "x": 1}}}, "slots.s.x: Extra inputs"),
       ({"extra": 1}, "extra: Extra inputs are not permitted"),
       ({"decision_id": "A" * 32}, "decision_id: String should match pattern"),
       ({"decision_id": "0" * 32 + "\n"}, "decision_id: String should match pattern"),
       ({"campaign": "c\n"}, "campaign: String should match pattern"),
       ({"campaign": "-c"}, "campaign: String should match pattern"),
       ({"campaign": "c" * 65}, "campaign: String should have at most 64 characters"),
       ({"user_id": "u" * 129}, "user_id: String should have at most 128 characters"),
       ({"event_id": None}, "event_id: Input should be a valid string"),
       ({"segments": {"r": 1}}, "segments.r: Input should be a valid string"),
       ({"type": "view"}, "type: expected one of 'impression', 'send', 'open', 'click', "
        "'conversion', 'unsubscribe', 'complaint', 'bounce', 'watermark', got 'view'")]


@pytest.mark.parametrize(("change", "reason"), BAD)
def test_bad_events_are_refused_by_both_with_the_pydantic_reason(change, reason):
    raw = orjson.dumps({**_BASE, **change})
    assert _fast_refuses(raw)
    with pytest.raises(Refused) as fast:
        decode(raw)
    with pytest.raises(Refused) as model:
        decode_model(raw)
    assert str(fast.value) == str(model.value)
    assert reason in str(fast.value).removeprefix("impression: ")


@settings(max_examples=100, deadline=None)
@given(event=events, key=st.sampled_from(["ts", "event_id", "decision_id", "campaign", "slots",
                                          "context", "segments", "holdout", "model_version",
                                          "reward", "slot", "type", "other"]),
       value=st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats() | st.text(
           max_size=70) | st.dictionaries(st.text(max_size=3), st.integers() | st.text(
               max_size=3), max_size=2) | st.lists(st.integers(), max_size=2))
def test_msgspec_accepts_exactly_what_the_models_accept(event, key, value):
    try:
        raw = orjson.dumps({**event, key: value})
    except orjson.JSONEncodeError:  # an integer beyond 64 bits: orjson cannot write it
        return
    try:
        model = decode_model(raw)
    except Refused:
        assert _fast_refuses(raw)
        return
    assert not _fast_refuses(raw)
    assert encode(wire.EVENTS.decode(raw)) == encode(model)


@settings(max_examples=50, deadline=None)
@given(garbage=st.binary(max_size=40) | st.text(max_size=20).map(str.encode))
def test_any_bytes_get_the_same_verdict_and_reason(garbage):
    try:
        expected = encode(decode_model(garbage))
    except Refused as exc:
        with pytest.raises(Refused, match=None) as fast:
            decode(garbage)
        assert str(fast.value) == str(exc)
    else:
        assert encode(decode(garbage)) == expected


@settings(max_examples=50, deadline=None)
@given(event=impressions, rewards=st.lists(finite, min_size=4, max_size=4))
def test_joined_structs_write_the_bytes_of_joined_event(event, rewards):
    imp = wire.EVENTS.decode(orjson.dumps(event))
    values = dict(zip(imp.slots, rewards, strict=False))
    fields = dict(decision_id=imp.decision_id, campaign=imp.campaign,
                  subject=subject_key(imp.user_id).hex(), segments=imp.segments,
                  holdout=imp.holdout, context=imp.context, rewards=values)
    model = JoinedEvent(**fields, ts=imp.ts, slots={
        s: {"arm": c.arm, "propensity": c.propensity} for s, c in imp.slots.items()})
    slots = {s: wire.LoggedChoice(arm=c.arm, propensity=c.propensity)
             for s, c in imp.slots.items()}
    assert wire.joined_json(wire.Joined(**fields, ts=float(imp.ts), slots=slots)) == (
        orjson.dumps(model.model_dump(mode="json", exclude_none=True)))


def _verdicts(values):
    """Per value: the event's bytes, or the reason it is refused (one decode per value)."""
    out = []
    for value in values:
        try:
            out.append(encode(decode(value)))
        except Refused as exc:
            out.append(str(exc))
    return out


def _many(values):
    return [str(e) if isinstance(e, Refused) else encode(e) for e in decode_many(values)]


_WM = b'{"type":"watermark","ts":1}'
# Records bad alone that a naive "[" + b",".join(values) + "]" would read as good events: a
# string or an object running from one record into the next, two events in one record.
SPLICED = [
    [b'{"type":"click","event_id":"a},{', b'","decision_id":"' + b"0" * 32
     + b'","campaign":"c","ts":1}', _WM + b"," + _WM],
    [_WM + b',{"type":"impression","context":{"a":1', b'"b":2},"event_id":"e","decision_id":"'
     + b"0" * 32 + b'","campaign":"c","user_id":"u","ts":5,"slots":{"s":{"arm":"a",'
     b'"propensity":0.5}}}'],
    [_WM + b"\n," + _WM, _WM[:-1], b"}"],
    [None, _WM, b"", b" " + _WM, _WM + b" "],
]


@pytest.mark.parametrize("values", SPLICED)
def test_a_batch_decodes_record_by_record_even_where_records_splice(values):
    assert _many(values) == _verdicts(values)
    assert _many(values * 5) == _verdicts(values * 5)  # above the one-by-one size: halves


@settings(max_examples=60, deadline=None)
@given(parts=st.lists(events.map(orjson.dumps) | st.binary(max_size=30) | st.none()
                      | st.sampled_from([b"{", b"}", b",", b'"', b"{}", b'{"a":1', b"\n"]),
                      max_size=40))
def test_decode_many_gives_each_record_the_verdict_and_reason_of_decode(parts):
    assert _many(parts) == _verdicts(parts)


# Records that msgspec's Structs accept and only a pattern refuses: the batch check must find
# them wherever they sit, whatever names the cache holds by then.
_IMP = {**_BASE, "context": {"k": 1.0, "tone": "warm"}, "segments": {"region": "north"}}
_CLICK = {"type": "click", "event_id": "c", "decision_id": "1" * 32, "campaign": "c", "ts": 6,
          "slot": "s"}
_NAMES = ["-c", "c\n", "c d", "\u00e9", "c/", "_", "\uff41", "c" * 63 + "!"]
PATTERN_ONLY = (
    [{**_IMP, "campaign": n} for n in _NAMES]
    + [{**_IMP, "slots": {"s": {"arm": "a", "propensity": 0.5}, n: {"arm": "a",
                                                                    "propensity": 0.5}}}
       for n in _NAMES[:3]]
    + [{**_IMP, "slots": {"s": {"arm": n, "propensity": 0.5}}} for n in _NAMES[:3]]
    + [{**_IMP, "context": {"k": 1.0, n: "x"}} for n in _NAMES[:3]]
    + [{**_IMP, "segments": {n: "x"}} for n in _NAMES[:3]]
    + [{**_CLICK, "slot": n} for n in _NAMES[:3]] + [{**_CLICK, "campaign": n} for n in _NAMES]
    + [{**e, "decision_id": d} for e in (_IMP, _CLICK) for d in (
        "A" * 32, "g" * 32, "0" * 31 + "\n", "0" * 31 + "\u0660", "\uff10" * 32, " " * 32)])


@pytest.mark.parametrize("bad", PATTERN_ONLY)
def test_records_bad_only_by_a_pattern_are_refused_with_the_models_reason(bad):
    raw = orjson.dumps(bad)
    wire.EVENTS.decode(raw)  # the Structs alone accept it
    with pytest.raises(Refused) as fast:
        decode(raw)
    with pytest.raises(Refused) as model:
        decode_model(raw)
    assert str(fast.value) == str(model.value)
    assert "pattern" in str(fast.value)


@pytest.mark.parametrize("at", ["start", "middle", "end"])
def test_a_batch_finds_every_record_bad_only_by_a_pattern_wherever_it_is(at):
    good = [orjson.dumps({**e, "event_id": f"e{i}"}) for i, e in enumerate([_IMP, _CLICK] * 20)]
    for bad in PATTERN_ONLY:
        where = {"start": 0, "middle": len(good) // 2, "end": len(good)}[at]
        values = good[:where] + [orjson.dumps(bad)] + good[where:]
        got = _many(values)
        assert got == _verdicts(values)
        assert "pattern" in got[where] and sum("pattern" in str(g) for g in got) == 1


def test_a_bad_name_is_refused_again_after_good_ones_filled_the_cache():
    good = [orjson.dumps(_IMP), orjson.dumps(_CLICK)]
    bad = orjson.dumps({**_IMP, "slots": {"s": {"arm": "a", "propensity": 0.5},
                                          "x y": {"arm": "a", "propensity": 0.5}}})
    for _ in range(2):
        assert _many(good + [bad] + good) == _verdicts(good + [bad] + good)
        assert "pattern" in _many(good + [bad])[-1]
