"""Policies with settings on the command line: ``lin_ucb:alpha=0.3,lin_ts,vw:exploration=bag``.

A list is comma-separated; each item is a policy name, optionally followed by ``:key=value``
settings (``lin_ucb:alpha=0.3:l2=2``; ``lin_ucb:alpha=0.3,l2=2`` says the same, a ``key=value``
item continuing the policy before it). Values are typed as they read (integer, number,
``true``/``false``, ``none``, else a word; a list setting such as VW's ``interactions`` takes
``+``-separated words, ``interactions=ca+cc``) and validated by the policy's own campaign spec
(``bandit.models.PolicySpec``), the same bounds a campaign's slot accepts. Anything wrong is an
InvalidInputError naming the policy and the setting.
"""

from __future__ import annotations

import typing
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from bandit.errors import InvalidInputError
from bandit.models import PolicySpec

__all__ = ["PolicyArg", "as_policy_args", "parse_policy_args"]

_SPEC: TypeAdapter[Any] = TypeAdapter(PolicySpec)
# Settings that are whole numbers in the policy objects (floats in the spec, for JSON's 5.0).
_WHOLE = frozenset({"bag", "cover"})


@dataclass(frozen=True)
class PolicyArg:
    """One policy of a list: ``label`` as given (``lin_ucb:alpha=0.3``, the name its results
    carry), its ``name`` and its validated ``settings`` as constructor arguments."""

    label: str
    name: str
    settings: dict[str, Any] = field(default_factory=dict)


def parse_policy_args(text: str, known: Collection[str]) -> list[PolicyArg]:
    """The policies of a comma-separated list, each a name in ``known`` with its settings.
    A name that is not a policy kind (``uniform``, ``default``, a logged table) takes none."""
    items: list[list[str]] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        if "=" in item.split(":", 1)[0]:  # key=value: a setting of the policy before it
            if not items:
                raise InvalidInputError(f"policy list: setting {item!r} comes before any policy")
            items[-1].append(item)
        else:
            items.append([p.strip() for p in item.split(":")])
    return _distinct([_policy_arg(parts, known) for parts in items])


def as_policy_args(names: Sequence[str | PolicyArg], known: Collection[str]) -> list[PolicyArg]:
    """``names`` as PolicyArgs: each string one policy with its settings (``lin_ucb:alpha=0.3``),
    each PolicyArg checked against ``known``; distinct, at least one."""
    out = []
    for item in names:
        if isinstance(item, PolicyArg):
            if item.name not in known:
                raise InvalidInputError(f"unknown policy {item.name!r}; expected some of "
                                        f"{', '.join(known)}")
            out.append(item)
        else:
            out.append(_policy_arg([p.strip() for p in item.split(":")], known))
    return _distinct(out)


def _distinct(out: list[PolicyArg]) -> list[PolicyArg]:
    if not out:
        raise InvalidInputError("policy list: expected at least one policy name")
    labels = [p.label for p in out]
    if len(set(labels)) != len(labels):
        raise InvalidInputError(f"policies must be distinct, got {', '.join(labels)}")
    return out


def _policy_arg(parts: list[str], known: Collection[str]) -> PolicyArg:
    name, given = parts[0], parts[1:]
    if name not in known:
        raise InvalidInputError(f"unknown policy {name!r}; expected some of {', '.join(known)}")
    label = ":".join(parts)
    if not given:
        return PolicyArg(label, name)
    model = _spec_model(name)
    if model is None:
        raise InvalidInputError(f"policy {name}: takes no settings, got {':'.join(given)!r}")
    raw: dict[str, Any] = {}
    for setting in given:
        key, sep, value = setting.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidInputError(f"policy {name}: setting {setting!r}: expected key=value")
        if key == "kind" or key not in model.model_fields:
            allowed = ", ".join(k for k in model.model_fields if k != "kind")
            raise InvalidInputError(f"policy {name}: {key}: unknown setting; expected one of "
                                    f"{allowed}")
        if key in raw:
            raise InvalidInputError(f"policy {name}: {key}: given twice")
        is_list = typing.get_origin(model.model_fields[key].annotation) is list
        raw[key] = ([_typed(v) for v in value.split("+")] if is_list and value.strip()
                    else [] if is_list else _typed(value))
    try:
        spec = _SPEC.validate_python({"kind": name, **raw})
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        key = next((str(k) for k in first["loc"] if k in raw), "settings")
        message = first["msg"]
        if "got" not in message:
            message += f", got {first.get('input')!r}"
        raise InvalidInputError(f"policy {name}: {key}: {message}") from None
    settings = {k: int(getattr(spec, k)) if k in _WHOLE else getattr(spec, k) for k in raw}
    return PolicyArg(label, name, settings)


def _spec_model(name: str) -> type[BaseModel] | None:
    """The spec model of policy kind ``name``, or None for a name that is not a kind."""
    for model in typing.get_args(typing.get_args(PolicySpec)[0]):
        if model.model_fields["kind"].default == name:
            return typing.cast(type[BaseModel], model)
    return None


def _typed(value: str) -> Any:
    """A setting's value as it reads: int, float, bool, None, or the word itself."""
    word = value.strip()
    lowered = word.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(word)
        except ValueError:
            continue
    return word
