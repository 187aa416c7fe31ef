"""Batch decision bodies (NDJSON or JSON) decoded by msgspec straight into request columns.

The service's batch route takes many requests in one body (``Settings.max_batch_rows``).
Validating each with the pydantic ``DecisionRequest`` and encoding its context dict row by row
would take longer than deciding them. Here one msgspec call decodes the whole body into
Structs typed after the campaign's context schema (a field per feature: a number for a numeric
feature, a string for a categorical one), so that the decoder also does the engine's context
checks, and the engine takes the values as columns (``Engine.request_columns``).

This is only the fast path for good bodies: ``ndjson_columns`` and ``json_columns`` return None
for anything they do not fully accept, and the route then takes the pydantic path, whose 4xx
answers (line or index, field, reason) stay what they were. So the Structs may be stricter
than the models (a consent-less request is not checked against the schema by the engine, but
is here), never laxer. What msgspec does not check is checked after decoding: the name pattern
of segment keys, that every request names the batch's campaign (a campaign the engine holds
has a valid name), and that no key is repeated (``keys_unique``: every optional field is
UNSET when omitted, so that the requests written back have exactly the members of the body).

The engine is passed in (``Engine.campaign``, ``Engine.request_columns``): this module sits
below it, so it names only what it calls (``EngineLike``) and never imports it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Protocol, TypeVar, cast

import msgspec
import numpy as np

from bandit.errors import BanditError
from bandit.models.specs import CampaignSpec
from bandit.wire.names import Label, Name, names_fit
from bandit.wire.strict import keys_unique

Columns = TypeVar("Columns", covariant=True)


class EngineLike(Protocol[Columns]):
    """What the decoders call of an ``Engine``; ``Columns`` is its ``RequestColumns``."""

    def campaign(self, name: str) -> CampaignSpec: ...

    def request_columns(self, campaign: str, user_ids: list[str], consent: np.ndarray,
                        explain: np.ndarray, contexts: Sequence[Any],
                        values: Callable[[Any], tuple], segments: Sequence[Mapping[str, str]],
                        absent: object) -> Columns: ...


Segments = Annotated[dict[Name, Label], msgspec.Meta(max_length=16)]
_BLANK = re.compile(rb"\s*").match
MAX_JSON_REQUESTS = 100_000  # BatchDecisionRequest's limit


class _Head(msgspec.Struct):
    """The campaign a JSON batch body names (its other fields are skipped)."""

    campaign: str


class _Decoders(msgspec.Struct, frozen=True):
    ndjson: msgspec.json.Decoder
    json: msgspec.json.Decoder
    empty: Any  # the context of a request without one


_HEAD = msgspec.json.Decoder(_Head)
_ENCODE = msgspec.json.Encoder().encode
_cache: dict[str, _Decoders] = {}  # context schema (JSON) -> its decoders
_CACHE_MAX = 256


def _decoders(spec: CampaignSpec) -> _Decoders:
    """Decoders of a request of a campaign with this context schema, one per line (NDJSON) or
    in a BatchDecisionRequest (JSON)."""
    key = spec.context.model_dump_json()
    found = _cache.get(key)
    if found is not None:
        return found
    # Every feature may be omitted (UNSET): a numeric feature's default, or its absence for a
    # request without consent, is the engine's business, as is the 'unknown' bucket.
    Context = msgspec.defstruct(
        "Context", [(f.name, (float if f.kind == "numeric" else Label) | msgspec.UnsetType,
                     msgspec.UNSET) for f in spec.context.features],
        forbid_unknown_fields=True, gc=False)
    # Made at run time, its fields the campaign's: no static type describes it, so it is Any
    # to mypy, which then reads list[Request] below as list[Any].
    Request: Any = msgspec.defstruct(
        "Request", [("campaign", Name), ("user_id", Label),
                    ("context", Context | msgspec.UnsetType, msgspec.UNSET),
                    ("segments", Segments | msgspec.UnsetType, msgspec.UNSET),
                    ("consent", bool | msgspec.UnsetType, msgspec.UNSET),
                    ("explain", bool | msgspec.UnsetType, msgspec.UNSET)],
        forbid_unknown_fields=True, gc=False)
    Batch = msgspec.defstruct(
        "Batch", [("campaign", Name), ("requests", Annotated[
            list[Request], msgspec.Meta(min_length=1, max_length=MAX_JSON_REQUESTS)])],
        forbid_unknown_fields=True, gc=False)
    found = _Decoders(msgspec.json.Decoder(Request), msgspec.json.Decoder(Batch), Context())
    if len(_cache) < _CACHE_MAX:
        _cache[key] = found
    return found


def ndjson_columns(body: bytes, engine: EngineLike[Columns]) -> Columns | None:
    """The requests of an NDJSON batch body (one per non-blank line, all of the first line's
    campaign) as columns, or None when the body is not plainly good."""
    # The first line's campaign picks the decoder. "\s*" matches every body (if only its empty
    # start): the match is never None.
    start = cast(re.Match[bytes], _BLANK(body)).end()
    end = body.find(b"\n", start)
    try:
        campaign = _HEAD.decode(body[start:end if end >= 0 else len(body)]).campaign
        decoders = _decoders(engine.campaign(campaign))
        requests = decoders.ndjson.decode_lines(body)
    except (ValueError, BanditError):  # DecodeError, or not UTF-8
        return None
    # One request per non-blank line: msgspec reads two objects on one line as two requests.
    lines = body.split(b"\n")
    if len(requests) != sum(map(bool, lines)) - sum(map(bytes.isspace, lines)):
        return None
    if not keys_unique(body, _ENCODE(requests)):
        return None
    return _columns(engine, campaign, requests, decoders.empty)


def json_columns(body: bytes, engine: EngineLike[Columns]) -> Columns | None:
    """The requests of a JSON batch body (a BatchDecisionRequest) as columns, or None when the
    body is not plainly good."""
    try:
        campaign = _HEAD.decode(body).campaign
        decoders = _decoders(engine.campaign(campaign))
        batch = decoders.json.decode(body)
    except (ValueError, BanditError):  # DecodeError, or not UTF-8
        return None
    if not keys_unique(body, _ENCODE(batch)):
        return None
    return _columns(engine, campaign, batch.requests, decoders.empty)


def _columns(engine: EngineLike[Columns], campaign: str, requests: list[Any],
             empty: Any) -> Columns | None:
    n = len(requests)
    if not n or any(r.campaign != campaign for r in requests):
        return None
    # An omitted field stays UNSET rather than a default object per request.
    segments = [{} if r.segments is msgspec.UNSET else r.segments for r in requests]
    if not names_fit(list(set().union(*segments))):
        return None
    try:
        return engine.request_columns(
            campaign, [r.user_id for r in requests],
            np.fromiter((r.consent is not False for r in requests), dtype=bool, count=n),
            np.fromiter((r.explain is True for r in requests), dtype=bool, count=n),
            [empty if r.context is msgspec.UNSET else r.context for r in requests],
            msgspec.structs.astuple, segments, msgspec.UNSET)
    except BanditError:
        return None
