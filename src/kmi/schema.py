"""Turn plain YAML data into frozen dataclasses, reporting every problem with its path.

The dataclasses in catalogue.py are the schema: their type hints say what each key holds,
their defaults say what is optional, and `field(metadata={"check": f})` adds a check that
returns an error message (or None). One declaration, so the docs, the model and the
validation cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, TypeVar, get_args, get_origin

T = TypeVar("T")
Check = Callable[[Any], str | None]


class _Invalid:
    """Marks a value that failed validation, so parents skip building on it."""


INVALID: Any = _Invalid()


def build(cls: type[T], data: object, path: str, problems: list[str]) -> T:
    """Validate `data` against dataclass `cls`; append `path: message` lines to problems."""
    value = _convert(cls, data, path, problems)
    return typing.cast(T, value)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return _type_name(inner[0])
    if origin is tuple:
        return f"a list of {_plural(get_args(tp)[0])}"
    if origin is dict:
        key, value = get_args(tp)
        return f"a mapping of {_plural(key)} to {_plural(value)}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    names = {str: "a string", int: "an integer", bool: "true or false", float: "a number"}
    return names.get(tp, str(tp))


def _convert(tp: Any, data: object, path: str, problems: list[str]) -> Any:
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return None if data is None else _convert(inner[0], data, path, problems)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _struct(tp, data, path, problems)
    if origin is tuple:
        return _sequence(get_args(tp)[0], data, path, problems)
    if origin is dict:
        return _mapping(get_args(tp), data, path, problems)
    if origin is Literal:
        if data in get_args(tp):
            return data
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        if any(data == m.value for m in tp):
            return tp(data)
    elif tp is float and isinstance(data, int | float) and not isinstance(data, bool):
        return float(data)
    elif tp is str and isinstance(data, str) and "\x00" in data:
        problems.append(f"{path or '.'}: contains a NUL character")
        return INVALID
    elif isinstance(data, tp) and not (tp is int and isinstance(data, bool)):
        return data
    hint = ""
    if tp is str and isinstance(data, int | float) and not isinstance(data, bool):
        hint = f" (quote it: '{data}')"
    problems.append(f"{path or '.'}: expected {_type_name(tp)}, got {_show(data)}{hint}")
    return INVALID


def _plural(tp: Any) -> str:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "/".join(m.value for m in tp)
    if get_origin(tp) is Literal:
        return "/".join(str(a) for a in get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "mappings"
    return {str: "strings", int: "integers"}.get(tp, _type_name(tp))


def _show(data: object) -> str:
    if isinstance(data, dict):
        return "a mapping"
    if isinstance(data, list):
        return "a list"
    if data is None:
        return "nothing"
    text = repr(data)
    return text if len(text) <= 40 else text[:37] + "..."


def _sequence(item: Any, data: object, path: str, problems: list[str]) -> Any:
    if not isinstance(data, list):
        problems.append(f"{path}: expected a list, got {_show(data)}")
        return INVALID
    values = [_convert(item, v, f"{path}[{i}]", problems) for i, v in enumerate(data)]
    return INVALID if any(v is INVALID for v in values) else tuple(values)


def _mapping(args: tuple[Any, ...], data: object, path: str, problems: list[str]) -> Any:
    if not isinstance(data, dict):
        problems.append(f"{path}: expected a mapping, got {_show(data)}")
        return INVALID
    key_type, value_type = args
    out = {}
    for key, value in data.items():
        k = _convert(key_type, key, f"{path}.{key}", problems)
        out[k] = _convert(value_type, value, f"{path}.{key}", problems)
    return INVALID if INVALID in out or INVALID in out.values() else out


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    """Resolved type hints of a dataclass; cached, resolving them is slow."""
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _struct(cls: type[Any], data: object, path: str, problems: list[str]) -> Any:
    if not isinstance(data, dict):
        problems.append(f"{path or '.'}: expected a mapping, got {_show(data)}")
        return INVALID
    hints = _hints(cls)
    fields = {
        f.name: f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")
    }
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            problems.append(f"{path}.{key}: unknown key (known keys: {known})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        sub = f"{path}.{name}"
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{sub}: required key is missing")
                kwargs[name] = INVALID
            continue
        value = _convert(hints[name], data[name], sub, problems)
        check: Check | None = f.metadata.get("check")
        if value is not INVALID and check is not None:
            message = check(value)
            if message:
                problems.append(f"{sub}: {message}")
                value = INVALID
        kwargs[name] = value
    if INVALID in kwargs.values():
        return INVALID
    return cls(**kwargs)


def doc_of(cls: type[Any]) -> list[tuple[str, str, str]]:
    """(key, type, doc) rows for docs/catalogue.md, read from field metadata."""
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        rows.append((f.name, _type_name(hints[f.name]), str(f.metadata.get("doc", ""))))
    return rows
