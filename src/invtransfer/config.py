"""Typed job configurations: dataclasses, YAML files, ``key=value`` overrides, validation.

Every job (dataset building, classifier training, generator training, ...) has one dataclass
whose fields carry their defaults, help text and allowed values (:func:`option`). A config is
built from, in order: the dataclass defaults, a YAML file (which may name a ``base:`` YAML to
extend, relative to itself), and command-line overrides such as ``optim.lr=0.05`` (dotted keys
for nested dataclasses; values are parsed as YAML scalars, so ``epochs=50``, ``resume=true``,
``counts=[10,5]`` and ``data_root=null`` do what they say).

Validation happens on load: unknown keys (with a suggestion), values of the wrong type,
out-of-range values and values outside the allowed choices are :class:`InvTransferError` naming
the dotted key and what is allowed. A dataclass may define ``validate(self)`` for checks that
involve several fields; it is called after its fields are set.

Shorthand: a nested dataclass with a class attribute ``shorthand = "field"`` also accepts a plain
value for itself, meaning that one field (``augment: crop_flip`` is ``augment: {crop: crop_flip}``;
this is how a key that was once a value grew sub-keys without breaking old configs, checkpoints
and command lines). Shorthands are expanded in every YAML file and in the overrides before they
are merged, so ``augment: none`` in a base file and ``augment.policy=randaugment`` on the command
line combine to both.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Sequence
from typing import Any, TypeVar

import yaml

from invtransfer.errors import InvTransferError, suggest

T = TypeVar("T")


def option(default: Any = dataclasses.MISSING, help: str = "", *, choices: Sequence[Any] | None = None,
           ge: float | None = None, gt: float | None = None, le: float | None = None,
           lt: float | None = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with help text and validation bounds (checked by :func:`from_dict`)."""
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None,
            "ge": ge, "gt": gt, "le": le, "lt": lt}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return f"a list of {_describe(inner)}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert one value against a type annotation; raise naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except InvTransferError as e:
                errors.append(e)
        raise InvTransferError(f"config key '{key}': got {value!r}, expected {_describe(tp)}.")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict) and getattr(tp, "shorthand", None):
            value = {tp.shorthand: value}
        if not isinstance(value, dict):
            raise InvTransferError(f"config key '{key}': got {value!r}, expected a mapping of the "
                                   f"fields of {tp.__name__}.")
        return from_dict(tp, value, prefix=key + ".")
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise InvTransferError(f"config key '{key}': got {value!r}, expected {_describe(tp)} "
                                   f"such as [1, 2, 3].")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise InvTransferError(f"config key '{key}': got {value!r}, expected true or false.")
    if tp in (int, float) and isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 4e-4 or 1e5 (no dot) as strings
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not value.is_integer()):
            raise InvTransferError(f"config key '{key}': got {value!r}, expected an integer.")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvTransferError(f"config key '{key}': got {value!r}, expected a number.")
        return float(value)
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise InvTransferError(f"config key '{key}': got {value!r}, expected a string.")
        return str(value)
    raise InvTransferError(f"config key '{key}': unsupported type {tp!r}.")  # pragma: no cover


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _check_bounds(value: Any, meta: dict, key: str) -> None:
    choices = meta.get("choices")
    if choices is not None and value is not None:
        values = value if isinstance(value, list) else [value]
        for v in values:
            if v not in choices:
                raise InvTransferError(
                    f"config key '{key}': {v!r} is not allowed; allowed values: "
                    f"{', '.join(repr(c) for c in choices)}.{suggest(str(v), [str(c) for c in choices])}")
    if value is None or isinstance(value, (str, bool, dict)) or dataclasses.is_dataclass(value):
        return
    values = value if isinstance(value, list) else [value]
    for v in values:
        if not isinstance(v, (int, float)):
            continue
        for name, ok, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                               ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
            bound = meta.get(name)
            if bound is not None and not ok(v, bound):
                raise InvTransferError(f"config key '{key}': {v!r} is out of range; expected a value "
                                       f"{word} {bound}.")


def from_dict(cls: type[T], data: dict | None, prefix: str = "") -> T:
    """Build and validate dataclass ``cls`` from a (possibly partial) mapping."""
    data = dict(data or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in fields]
    if unknown:
        k = unknown[0]
        raise InvTransferError(
            f"unknown config key '{prefix}{k}'.{suggest(k, fields)} Known keys at this level: "
            f"{', '.join(prefix + f for f in fields)}.")
    kwargs = {}
    for name, f in fields.items():
        key = prefix + name
        if name in data:
            value = _coerce(data[name], hints[name], key)
        elif f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            value = f.default_factory()  # type: ignore[misc]
        else:
            raise InvTransferError(f"config key '{key}' is required ({f.metadata.get('help', '')}).")
        _check_bounds(value, dict(f.metadata), key)
        kwargs[name] = value
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(cfg: Any) -> dict:
    """The config as plain YAML/JSON-able data."""
    return dataclasses.asdict(cfg)


def parse_overrides(overrides: Sequence[str]) -> dict:
    """Turn ``["a.b=1", "c=x"]`` into ``{"a": {"b": 1}, "c": "x"}``."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise InvTransferError(f"override {item!r} is not of the form key=value "
                                   f"(for example optim.lr=0.05).")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise InvTransferError(f"override {item!r} has an empty key.")
        try:
            value = yaml.safe_load(raw) if raw.strip() != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise InvTransferError(f"override {item!r}: '{p}' was given both a value and sub-keys.")
        node[parts[-1]] = value
    return out


def deep_merge(base: dict, update: dict) -> dict:
    """Recursively merge ``update`` into a copy of ``base``."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def expand_shorthands(cls: type, data: dict) -> dict:
    """``data`` (a mapping for ``cls``) with the plain values of shorthand dataclass fields turned
    into ``{shorthand: value}``, at any depth (see the module docstring)."""
    if not isinstance(data, dict) or not dataclasses.is_dataclass(cls):
        return data
    hints = typing.get_type_hints(cls)
    out = dict(data)
    for f in dataclasses.fields(cls):
        tp = hints.get(f.name)
        if f.name not in out or not dataclasses.is_dataclass(tp):
            continue
        value = out[f.name]
        if not isinstance(value, dict) and getattr(tp, "shorthand", None) and not isinstance(value, tp):
            value = {tp.shorthand: value}
        out[f.name] = expand_shorthands(tp, value)
    return out


def read_yaml(path: str | os.PathLike, _seen: tuple = (), cls: type | None = None) -> dict:
    """Read a config YAML, following its optional ``base:`` key (relative to the file); with
    ``cls``, each file's shorthands are expanded before it is merged with its base."""
    path = os.path.abspath(os.fspath(path))
    if path in _seen:
        raise InvTransferError(f"config file {path}: 'base' chain loops back to itself.")
    if not os.path.isfile(path):
        raise InvTransferError(f"config file {path} does not exist (expected a YAML file, for "
                               f"example one of those under configs/).")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InvTransferError(f"config file {path} is not valid YAML: {e}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvTransferError(f"config file {path} must hold a mapping of keys to values, "
                               f"got {type(data).__name__}.")
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise InvTransferError(f"config file {path}: 'base' must be a path to another YAML file.")
        data = deep_merge(read_yaml(os.path.join(os.path.dirname(path), base), _seen + (path,), cls),
                          expand_shorthands(cls, data) if cls is not None else data)
    return expand_shorthands(cls, data) if cls is not None else data


def load_config(cls: type[T], path: str | os.PathLike | None = None,
                overrides: Sequence[str] | dict = ()) -> T:
    """Dataclass defaults <- YAML file (if any) <- overrides, validated."""
    data = read_yaml(path, cls=cls) if path else {}
    over = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    return from_dict(cls, deep_merge(data, expand_shorthands(cls, over)))


def dump_yaml(cfg: Any) -> str:
    """The resolved config as YAML text."""
    data = cfg if isinstance(cfg, dict) else to_dict(cfg)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def diff_configs(a: dict, b: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    keys = sorted(set(a) | set(b))
    out = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_configs(va, vb, prefix + k + ".")
        elif va != vb:
            out.append(prefix + k)
    return out
