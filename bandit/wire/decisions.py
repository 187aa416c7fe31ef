"""The msgspec mirror of ``models.DecisionRequest``, for the service's single-decision fast
path (``bandit.service.fast_path``), and what the two kinds of request both have.

The mirror has the model's fields, defaults and constraints but the pattern of names, which
its reader checks with ``names_fit`` (``bandit.wire.names``); pinned field by field to the
model by tests/streams/test_codec.py. Defaults are omitted when a request is written back, for
``keys_unique``.

>>> import msgspec
>>> from bandit.models import DecisionRequest as Model
>>> def consented(request: DecisionRequestLike) -> bool:
...     return request.consent
>>> body = b'{"campaign": "weekly", "user_id": "u1", "context": {"tenure": 3.0}}'
>>> mirror = msgspec.json.decode(body, type=DecisionRequest)
>>> mirror.context, consented(mirror) == consented(Model.model_validate_json(body))
({'tenure': 3.0}, True)
>>> msgspec.json.encode(mirror)
b'{"campaign":"weekly","user_id":"u1","context":{"tenure":3.0}}'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Protocol

import msgspec

from bandit.wire.names import Label, Name

__all__ = ["DecisionRequest", "DecisionRequestLike"]


class DecisionRequest(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True, gc=False):
    """``models.DecisionRequest`` as msgspec reads it."""

    campaign: Name
    user_id: Label
    context: Annotated[dict[Name, float | Label], msgspec.Meta(max_length=512)] = {}
    segments: Annotated[dict[Name, Label], msgspec.Meta(max_length=16)] = {}
    consent: bool = True
    explain: bool = False


class DecisionRequestLike(Protocol):
    """``models.DecisionRequest`` or ``wire.decisions.DecisionRequest``: the engine reads a
    request by attribute."""

    @property
    def campaign(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def context(self) -> Mapping[str, float | str]: ...
    @property
    def segments(self) -> Mapping[str, str]: ...
    @property
    def consent(self) -> bool: ...
    @property
    def explain(self) -> bool: ...
