"""Config dataclasses <-> plain trees (JSON / YAML files, saved run configs), and each field's documentation.

A field is documented once, by the comment on its line (or the comment lines right above it) in
its dataclass; `field_help` reads it back for `--help`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
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
