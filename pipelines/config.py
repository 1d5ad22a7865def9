"""The one config system: typed dataclasses, filled from a YAML file and ``key=value`` overrides.

Library code defines its own config dataclasses, with defaults that follow the recipe and a
comment giving each number's source. This module only fills them: YAML is parsed with
``yaml.safe_load`` (no code execution), unknown keys are errors that name the key, and values
are checked against the field types.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

import yaml

from storage.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A setting that is unknown, of the wrong type or impossible (named, with the fix)."""


def load(
    cls: type[T], path: str | None = None, overrides: list[str] | dict[str, Any] | None = None,
    defaults: dict[str, Any] | None = None,
) -> T:
    """Build ``cls`` from its defaults, then ``defaults`` (``{"a.b": value}``: e.g. a preset's
    settings), then a YAML file, then overrides (``a.b=value``)."""
    data: dict[str, Any] = {}
    for key, value in (defaults or {}).items():
        _set_dotted(data, key, value)
    if path:
        from storage import io

        with io.open_input(path) as f:
            loaded = yaml.safe_load(f.read().decode("utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config file must hold a mapping, not {type(loaded).__name__}")
        for key, value in loaded.items():
            _merge(data, key, value)
    for key, value in parse_overrides(overrides).items():
        _set_dotted(data, key, value)
    return build(cls, data)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {part} is not a mapping")
    node[parts[-1]] = value


def _merge(data: dict[str, Any], key: str, value: Any) -> None:
    """A file's mapping over what is there: nested mappings merge, anything else replaces."""
    if isinstance(value, dict) and isinstance(data.get(key), dict):
        for k, v in value.items():
            _merge(data[key], k, v)
    else:
        data[key] = value


def parse_overrides(overrides: list[str] | dict[str, Any] | None) -> dict[str, Any]:
    """``--set key=value`` items as {key: value}, values read as YAML scalars (safe_load)."""
    if not overrides:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    out = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw)
    return out


def build(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(where + k for k in unknown)}; known: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], value, where + name) for name, value in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping")
        return build(tp, value, where + ".")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = (typing.get_args(tp) or (Any, Any))
        return {_coerce(kt, k, where): _coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {typing.get_args(tp)}")
        return value
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def changed(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """The settings of ``cfg`` that differ from its class's defaults, as ``{"a.b": value}`` (what a
    run log or a plan shows: the same keys ``--set`` takes)."""
    out: dict[str, Any] = {}
    default = type(cfg)()
    for f in dataclasses.fields(cfg):
        value, base = getattr(cfg, f.name), getattr(default, f.name)
        if dataclasses.is_dataclass(value) and type(value) is type(base):
            out.update(changed(value, f"{prefix}{f.name}."))
        elif value != base:
            out[prefix + f.name] = value
    return out


def settings_line(cfg: Any) -> str:
    """:func:`changed` as ``key=value`` items on one line (``the defaults`` when none)."""
    items = changed(cfg)
    return " ".join(f"{k}={_flat(v)}" for k, v in items.items()) or "the defaults"


def _flat(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_flat(v) for v in value) + "]"
    if isinstance(value, bool) or value is None:
        return yaml.safe_dump(value).split("\n")[0]
    return str(value)
