"""Experiment configs are dataclasses; this module turns them into CLI help and parses overrides.

Each field carries an attribute docstring (a string literal on the line after it), read here with
``ast`` so the help text lives next to the field it describes, with no duplication.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap
import types
import typing
from typing import Any


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field name: attribute docstring}`` for a dataclass and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:], strict=False):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def field_types(cls: type) -> dict[str, Any]:
    """Resolved type hints of a dataclass's fields."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def type_name(tp: Any) -> str:
    """Readable name of a type hint, for error messages (``tuple[int, ...]``, ``float``)."""
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def parse_value(text: str, tp: Any) -> Any:
    """Parse ``text`` as a value of type ``tp`` (bool, int, float, str, tuples/lists, Optional,
    Literal). Raise ``ValueError`` when it does not fit."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return parse_value(text, arg)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError("; ".join(errors))
    if origin is typing.Literal:
        for choice in args:
            if str(choice) == text:
                return choice
        raise ValueError(f"expected one of {', '.join(map(str, args))}")
    if origin in (tuple, list):
        items = [t for t in text.strip("()[] ").split(",") if t.strip()]
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(items) != len(args):
                raise ValueError(f"expected {len(args)} comma-separated values")
            return tuple(parse_value(t.strip(), a) for t, a in zip(items, args, strict=True))
        elem = args[0] if args else str
        values = [parse_value(t.strip(), elem) for t in items]
        return tuple(values) if origin is tuple else values
    if tp is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if tp is int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            as_float = float(text)  # accept 1e6 when it is integral
            if as_float.is_integer():
                return int(as_float)
            raise ValueError("expected an integer") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError("expected a number") from None
    if tp is str:
        return text
    raise ValueError(f"fields of type {type_name(tp)} cannot be set from the command line")


def apply_overrides(config: Any, assignments: list[str]) -> Any:
    """Return a copy of ``config`` with ``key=value`` assignments applied.

    Raises ``ValueError`` naming the field and its type when a key is unknown or a value does not
    parse.
    """
    types_ = field_types(type(config))
    changes: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ValueError(f"--set expects key=value, got {item!r}")
        if key not in types_:
            known = ", ".join(f"{k} ({type_name(t)})" for k, t in types_.items())
            raise ValueError(f"unknown config field {key!r}; fields are: {known}")
        try:
            changes[key] = parse_value(raw.strip(), types_[key])
        except ValueError as exc:
            raise ValueError(
                f"bad value {raw!r} for field {key!r} of type {type_name(types_[key])}: {exc}"
            ) from None
    return dataclasses.replace(config, **changes)


#: Fields every experiment shares, checked by :func:`validate_config` itself.
_BASE_FIELDS = ("seed", "device", "out", "preset")
_DEVICE = __import__("re").compile(r"^(auto|cpu|cuda(:\d+)?)$")


def _numbers(value: Any) -> list[float] | None:
    """The numbers of an int/float value or of a tuple of them (``None`` for anything else)."""
    items = value if isinstance(value, tuple | list) else (value,)
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
        return [float(v) for v in items]
    return None


def inferred_limits(cls: type, presets: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Rules read off the presets: ``{field: rules}`` with rules among ``"positive"``,
    ``"non-negative"`` and ``"non-empty"``.

    A number (or every number of a tuple) that is positive in the default and in every preset
    must stay positive, and likewise non-negative; a tuple that is never empty must not become
    empty. This catches the zeros, negatives and empty lists that a run would otherwise meet
    deep inside (a ZeroDivisionError, ``max()`` of an empty sequence) with no field named.
    """
    configs = [cls(), *presets.values()]
    rules: dict[str, tuple[str, ...]] = {}
    for f in dataclasses.fields(cls):
        if f.name in _BASE_FIELDS:
            continue
        values = [getattr(c, f.name) for c in configs]
        found: list[str] = []
        if all(isinstance(v, tuple | list) for v in values) and all(len(v) for v in values):
            found.append("non-empty")
        numbers = [_numbers(v) for v in values]
        if all(n is not None for n in numbers) and any(numbers):
            flat = [x for n in numbers for x in n]
            if all(x > 0 for x in flat):
                found.append("positive")
            elif all(x >= 0 for x in flat):
                found.append("non-negative")
        if found:
            rules[f.name] = tuple(found)
    return rules


def _check_type(value: Any, tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_check_type(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if origin in (tuple, list):
        if not isinstance(value, tuple | list):
            return False
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(
                _check_type(v, a) for v, a in zip(value, args, strict=True))
        return all(_check_type(v, args[0]) for v in value) if args else True
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def validate_config(config: Any, presets: dict[str, Any] | None = None) -> None:
    """Check every field of ``config`` before a run starts; ``ValueError`` names the field, its
    type and the allowed values.

    Checks: each value has its field's type; ``seed`` is a non-negative int; ``device`` reads
    auto, cpu, cuda or cuda:N; the class's ``LIMITS`` (``{field: (low, high)}``, inclusive,
    ``None`` for open) hold; and the rules :func:`inferred_limits` reads off ``presets``.
    """
    cls = type(config)
    types_ = field_types(cls)
    for name, tp in types_.items():
        value = getattr(config, name)
        if not _check_type(value, tp):
            raise ValueError(f"field {name!r} must be of type {type_name(tp)}, got {value!r}")
    if getattr(config, "seed", 0) < 0:
        raise ValueError(f"field 'seed' must be a non-negative int, got {config.seed}")
    device = getattr(config, "device", "auto")
    if not _DEVICE.match(str(device)):
        raise ValueError(f"field 'device' must be auto, cpu, cuda or cuda:N (N an integer), "
                         f"got {device!r}")
    limits = dict(getattr(cls, "LIMITS", {}) or {})
    for name, (low, high) in limits.items():
        numbers = _numbers(getattr(config, name))
        if numbers is None:
            continue
        for x in numbers:
            if (low is not None and x < low) or (high is not None and x > high):
                span = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
                raise ValueError(f"field {name!r} ({type_name(types_[name])}) must lie in {span}, "
                                 f"got {getattr(config, name)!r}")
    for name, rules in inferred_limits(cls, presets or {}).items():
        if name in limits:
            continue
        value, tp = getattr(config, name), type_name(types_[name])
        if "non-empty" in rules and isinstance(value, tuple | list) and not value:
            raise ValueError(f"field {name!r} ({tp}) must not be empty")
        numbers = _numbers(value)
        if numbers is None:
            continue
        if "positive" in rules and any(x <= 0 for x in numbers):
            raise ValueError(f"field {name!r} ({tp}) must be > 0, got {value!r}")
        if "non-negative" in rules and any(x < 0 for x in numbers):
            raise ValueError(f"field {name!r} ({tp}) must be >= 0, got {value!r}")


def describe(config: Any) -> list[tuple[str, str, Any, str]]:
    """Rows ``(name, type, value, help)`` for every field of a config, for ``--help`` listings."""
    docs = field_docs(type(config))
    return [
        (name, type_name(tp), getattr(config, name), docs.get(name, ""))
        for name, tp in field_types(type(config)).items()
    ]
