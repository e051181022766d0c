"""Nested config dataclasses from plain dicts (JSON files, saved run configs)."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any


def resolve_types(cls: type) -> type:
    """Replace string annotations (`from __future__ import annotations`) by the types, recursively."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        f.type = hints[f.name]
        if dataclasses.is_dataclass(f.type):
            resolve_types(f.type)
    return cls


def config_from_dict(cls: type, tree: dict) -> Any:
    """`cls(**tree)` with nested dataclasses built from nested dicts and JSON lists turned into tuples.

    Every field must be present (e.g. a `dataclasses.asdict` of the same class).
    """
    resolve_types(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in tree:
            raise ValueError(f"{cls.__name__}: field '{f.name}' missing")
        v = tree[f.name]
        kwargs[f.name] = config_from_dict(f.type, v) if dataclasses.is_dataclass(f.type) else (tuple(v) if isinstance(v, list) else v)
    return cls(**kwargs)
