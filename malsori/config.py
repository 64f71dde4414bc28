"""Typed configs: YAML recipes and `key=value` overrides mapped onto nested dataclasses; unknown keys are errors, and
numeric fields declare their range beside their comment (`lr: float = bounded(2e-3, gt=0)  # peak learning rate`),
checked by `from_dict` for every config read from a recipe, an override or a model folder."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from malsori.errors import ConfigError

T = TypeVar("T")
RANGE = "range"  # the metadata key of a field's Range


@dataclass(frozen=True)
class Range:
    """The values a numeric field (or each item of a numeric list/tuple field) may take; floats must also be finite."""

    ge: float | None = None  # >=
    gt: float | None = None  # >
    le: float | None = None  # <=
    lt: float | None = None  # <
    odd: bool = False  # integers only: odd (a centred convolution kernel)
    one_of: tuple = ()  # or: exactly one of these values (when not empty)

    def describe(self) -> str:
        if self.one_of:
            return f"one of {', '.join(map(str, self.one_of))}"
        lo = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else None
        hi = f"{_num(self.le)}]" if self.le is not None else f"{_num(self.lt)})" if self.lt is not None else None
        if lo and hi:
            bounds = f"in {lo}, {hi}"
        elif lo:
            bounds = f"{'>=' if lo[0] == '[' else '>'} {lo[1:]}"
        elif hi:
            bounds = f"{'<=' if hi[-1] == ']' else '<'} {hi[:-1]}"
        else:
            bounds = "finite"
        return f"an odd integer {bounds}" if self.odd else bounds

    def problem(self, value: Any) -> str | None:
        """None when `value` (a number; None passes) is allowed, else `must be ..., got ...`."""
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        ok = (value in self.one_of) if self.one_of else (
            math.isfinite(value) and (self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt)
            and not (self.odd and value % 2 != 1))
        return None if ok else f"must be {self.describe()}, got {value!r}"


def _num(x: float) -> str:
    return f"{x:g}"


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, odd: bool = False, one_of: tuple = ()) -> Any:
    """A dataclass field with `default` whose value (each item, for a list or tuple) must lie in the range given;
    with no bounds, a float must just be finite. Checked by `from_dict` (and by `check_ranges`)."""
    meta = {RANGE: Range(ge, gt, le, lt, odd, tuple(one_of))}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _check_value(rng: Range, value: Any, where: str) -> None:
    for i, v in enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)]:
        problem = rng.problem(v)
        if problem:
            raise ConfigError(f"{where}{'' if i is None else f'[{i}]'} {problem}")


def check_ranges(obj: Any, values: dict | None = None, where: str = "") -> None:
    """ConfigError naming `where.field` for the first field of dataclass `obj` (a class or an instance) whose value
    (from `values`, else the instance) lies outside its declared range. Python-API configs call it in __post_init__."""
    for f in dataclasses.fields(obj):
        if RANGE in f.metadata and (values is None or f.name in values):
            value = values[f.name] if values is not None else getattr(obj, f.name)
            _check_value(f.metadata[RANGE], value, f"{where}.{f.name}" if where else f.name)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert one value to the field's annotated type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return out if origin is list else tuple(out)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: must be one of {list(typing.get_args(tp))}, got {value!r}")
        return value
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `2e-3` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError naming the key. A class with
    a `from_mapping(data, where)` classmethod (a tagged config, `malsori.tagged`) parses itself."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    if hasattr(cls, "from_mapping"):
        return cls.from_mapping(data, where)
    return build_fields(cls, data, where)


def build_fields(cls: type[T], data: dict, where: str = "") -> T:
    """`from_dict`'s own work, without the `from_mapping` hook: each key a field of dataclass `cls`, ranges checked."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"unknown config key '{key}' (known: {', '.join(sorted(fields))})")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    check_ranges(cls, kwargs, where)
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a cross-field check in __post_init__: its message starts with the field's own name
        raise ConfigError(f"{where}.{e}" if where and not str(e).startswith(where) else str(e)) from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def to_dict(obj: Any) -> Any:
    """A dataclass config as plain JSON/YAML-ready data (a config with a `to_mapping()` method writes itself)."""
    if hasattr(obj, "to_mapping"):
        return obj.to_mapping()
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `a.b.c=value` strings (value parsed as YAML) onto nested dict `data`."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{key}': '{p}' is not a section")
        node[parts[-1]] = value
    return data


def load_yaml(path: str | Path) -> dict:
    """Read a YAML file into a dict, with one-line errors for missing or malformed files."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    return data


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] = ()) -> T:
    """Recipe file + overrides → typed config `cls`."""
    data = load_yaml(path) if path else {}
    return from_dict(cls, apply_overrides(data, list(overrides)))
