"""Config dataclasses <-> plain trees (JSON / YAML files, saved run configs), and each field's documentation.

A field is documented once, by the comment on its line (or the comment lines right above it) in
its dataclass; `field_help` reads it back for `--help`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import re
import typing
from pathlib import Path
from typing import Any

MISSING = dataclasses.MISSING


def resolve_types(cls: type) -> type:
    """Replace string annotations (`from __future__ import annotations`) by the types, recursively."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        f.type = hints[f.name]
        if dataclasses.is_dataclass(f.type):
            resolve_types(f.type)
    return cls


def check_finite(cfg: Any) -> None:
    """Refuse a NaN or infinite float field of the config dataclass `cfg`, naming it: a NaN passes
    every `<`/`>` range check, and an infinite learning rate or weight poisons a run silently."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ValueError(f"{type(cfg).__name__}.{f.name}={value}; must be finite (no NaN or inf)")


def check_at_least(cfg: Any, low: float, *names: str, strict: bool = False) -> None:
    """Refuse each field `names` of the config dataclass `cfg` below `low` (or, `strict`, not above it), naming it."""
    for name in names:
        value = getattr(cfg, name)
        if value < low or (strict and value == low):
            raise ValueError(f"{type(cfg).__name__}.{name}={value}; must be {'>' if strict else '>='} {low}")


def config_from_dict(cls: type, tree: dict, source: str = "") -> Any:
    """`cls` built from a nested dict (a saved config, a config file merged with the defaults).

    Every value is checked against its field's type (an int where a float is due is taken, JSON lists
    become tuples); a missing field takes its default; an unknown field, a wrong type or a value the
    dataclass refuses is a ValueError naming `source` (the file) and the dotted field.
    """
    try:
        return _build(cls, tree, "")
    except ValueError as e:
        raise ValueError(f"{source}: {e}" if source else str(e)) from None


def read_config(cls: type, path: str | Path, key: str | None = None) -> Any:
    """`cls` from a saved JSON (or YAML) file, or from its object `key`; checked like `config_from_dict`, the
    errors naming the file and the field (`reward.interval`)."""
    tree = load_config_file(path)
    if key is not None:
        if key not in tree:
            raise ValueError(f"{path}: field '{key}' missing")
        tree = tree[key]
    try:
        return _build(cls, tree, f"{key}." if key else "")
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _build(cls: type, tree: Any, prefix: str) -> Any:
    resolve_types(cls)
    if not isinstance(tree, dict):
        raise ValueError(f"field '{prefix.rstrip('.') or cls.__name__}' must be an object of {cls.__name__} fields, got {tree!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(tree) - set(fields))
    if unknown:
        raise ValueError(f"unknown field '{prefix}{unknown[0]}' (of {cls.__name__})")
    kwargs = {}
    for name, f in fields.items():
        if name not in tree:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ValueError(f"field '{prefix}{name}' missing (of {cls.__name__})")
            continue
        kwargs[name] = typed_value(tree[name], f.type, prefix + name)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a dataclass refusing what it was given
        raise ValueError(f"{cls.__name__}: {e}") from None


def typed_value(value: Any, kind: Any, name: str) -> Any:
    """`value` as the field type `kind` (bool, int, float, str, tuple[X, ...], X | None, a dataclass), or a
    ValueError naming the field."""
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, name + ".")
    args = typing.get_args(kind)
    if type(None) in args:
        if value is None:
            return None
        kind = next(a for a in args if a is not type(None))
        args = typing.get_args(kind)
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"field '{name}' must be a list, got {value!r}")
        if Ellipsis not in args and len(value) != len(args):  # tuple[int, int]: exactly two
            raise ValueError(f"field '{name}' must hold {len(args)} values, got {list(value)!r}")
        return tuple(typed_value(v, args[0], f"{name}[{k}]") for k, v in enumerate(value))
    ok = {bool: lambda v: isinstance(v, bool), int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), str: lambda v: isinstance(v, str)}.get(kind)
    if ok is not None and not ok(value):
        raise ValueError(f"field '{name}' must be {kind.__name__}, got {type(value).__name__} {value!r}")
    if kind is float:
        number = float(value) if abs(value) < 1e308 else math.inf  # an int past float range is as bad as inf
        if not math.isfinite(number):
            raise ValueError(f"field '{name}' must be a finite number, got {value}")
        return number
    return value


def defaults_tree(cls: type) -> dict:
    """The defaults of `cls` as a nested dict, without building `cls` (fields with no default are left out)."""
    resolve_types(cls)
    tree: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not MISSING:
            value = f.default
        elif f.default_factory is not MISSING:
            value = f.default_factory()
        else:
            continue
        tree[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return tree


def load_config_file(path: str | Path) -> dict:
    """A JSON (or, for .yaml / .yml, YAML) object; a syntax error names the file and line."""
    path = Path(path)
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml  # noqa: PLC0415  (only for YAML files)

        try:
            tree = yaml.safe_load(text)
        except yaml.YAMLError as e:
            line = getattr(getattr(e, "problem_mark", None), "line", -1) + 1
            raise ValueError(f"{path}:{line}: not valid YAML: {getattr(e, 'problem', e)}") from e
    else:
        try:
            tree = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from e
    if not isinstance(tree, dict):
        raise ValueError(f"{path}:1: the config must be an object of fields")
    return tree


@functools.cache
def field_help(cls: type) -> dict[str, str]:
    """Field name -> the comment documenting it in `cls`'s source (its own line, else the lines above)."""
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # a subclass's comment wins
        if not dataclasses.is_dataclass(klass):
            continue
        lines, above = inspect.getsource(klass).splitlines(), []
        for line in lines:
            comment = re.match(r"^\s+#\s?(.*)$", line)
            if comment:
                above.append(comment.group(1).strip())
                continue
            decl = re.match(r"^\s+(\w+)\s*:[^#]*?(?:#\s?(.*))?$", line)
            if decl and decl.group(1) in {f.name for f in dataclasses.fields(klass)}:
                text = decl.group(2) or " ".join(above)
                if text:
                    helps[decl.group(1)] = text.strip()
            above = []
    return helps
