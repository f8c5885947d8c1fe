"""`--set key.path=value` overrides on a raw YAML mapping, checked against a pydantic schema as the
keys are walked (an unknown key is refused with the keys allowed there); values are parsed as YAML.
A list item is addressed by its ``name`` or its index."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel

from nas.errors import NasInputError, did_you_mean
from nas.userfiles import parse_yaml_value

__all__ = ["apply_key_overrides", "fields_at", "model_of"]


def model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (Optional[X], list[X], X), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) in (typing.Union, list):
        for arg in typing.get_args(annotation):
            found = model_of(arg)
            if found is not None:
                return found
    return None


def fields_at(root: type[BaseModel], path: list[str], hidden: tuple[str, ...] = ()) -> list[str]:
    """The keys allowed at ``path`` (list indices skipped) under the schema ``root``."""
    model: type[BaseModel] | None = root
    for part in path:
        if model is None:
            return []
        if part.isdigit():
            continue
        info = model.model_fields.get(part)
        model = model_of(info.annotation) if info else None
    return [f for f in (model.model_fields if model else {}) if f not in hidden or model is not root]


def apply_key_overrides(
    raw: dict[str, Any], overrides: list[str], root: type[BaseModel], hidden: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A deep copy of ``raw`` with each ``key.path=value`` of ``overrides`` applied. A key that a section lists
    among its ``ALTERNATIVES`` (a budget in tokens or in FLOPs) replaces the file's alternative to it; two
    alternatives both given by ``--set`` are refused."""
    raw = _copy(raw)
    given: dict[str, str] = {}  # the parent path and alternative group of each key set here -> that key
    for item in overrides:
        key, sep, value_text = item.partition("=")
        if not sep or not key:
            raise NasInputError("--set", f"'{item}': expected key.path=value")
        value = parse_yaml_value(value_text, f"--set {key}")
        group = _set(raw, key, value, root, hidden)
        if group:
            other = given.setdefault(group, key)
            if other != key:
                raise NasInputError("--set", f"{other} and {key}: give one of them, not both")
    return raw


def _copy(value: Any) -> Any:
    """A copy of parsed YAML in which every mapping and list is new (two aliases of one YAML node become two
    copies, so a ``--set`` changes one of them); the values themselves (a date included) are kept as they are."""
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def _set(raw: dict[str, Any], key: str, value: Any, root: type[BaseModel], hidden: tuple[str, ...]) -> str:
    """Set ``key`` in ``raw``; returns the key's parent path when the key is one of its section's
    ``ALTERNATIVES`` and the value is not null (the others are then removed), else ""."""
    parts = key.split(".")
    node: Any = raw
    model: type[BaseModel] | None = root
    for depth, part in enumerate(parts):
        where = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if last:
                raise NasInputError("--set", f"{key}: name a key inside the list item, not the item")
            node = node[_list_index(node, part, where)]
            if not isinstance(node, dict | list):
                raise NasInputError("--set", f"{where}: is a value ({node!r}), not a section")
            continue
        next_model = None
        if model is not None:
            fields = [f for f in model.model_fields if f not in hidden or depth > 0]  # hidden: the root's own
            if part not in fields:
                raise NasInputError("--set", f"{where}: unknown key '{part}'{did_you_mean(part, fields)}")
            next_model = model_of(model.model_fields[part].annotation)
        if last:
            alternatives = getattr(model, "ALTERNATIVES", ()) if value is not None else ()
            if part in alternatives:
                for other in alternatives:
                    node.pop(other, None)
            node[part] = value
            return ".".join(parts[:-1]) if part in alternatives else ""
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict | list):
            raise NasInputError("--set", f"{where}: is a value ({child!r}), not a section")
        node, model = child, next_model
    return ""  # not reached: the last part returns


def _list_index(items: list[Any], part: str, key: str) -> int:
    if part.isdigit() and int(part) < len(items):
        return int(part)
    names = [item.get("name") if isinstance(item, dict) else None for item in items]
    if part in names:
        return names.index(part)
    hint = did_you_mean(part, [str(n) for n in names if n is not None])
    if not hint and (values := [(i, item) for i, item in enumerate(items) if not isinstance(item, dict)]):
        i, item = values[0]
        hint = f" (item {i} is {item!r}, not a mapping with a name)"
    raise NasInputError("--set", f"{key}: no item '{part}'{hint}")
