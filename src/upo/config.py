"""Strict YAML -> dataclass loading: unknown keys, wrong types and impossible values are UpoErrors."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from pathlib import Path

import yaml

from .errors import UpoError

_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check_type(name: str, value, annotation, where: str):
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _check_type(name, value, opt, where)
            except UpoError:
                continue
        raise UpoError(f"{where}: {name} must be {annotation}, got {value!r}")
    if annotation is dict or origin is dict:
        if not isinstance(value, dict):
            raise UpoError(f"{where}: {name} must be a mapping of settings, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise UpoError(f"{where}: {name} must be a list, got {value!r}")
        (inner, *_) = typing.get_args(annotation) or (object,)
        return [_check_type(name, v, inner, where) for v in value]
    if annotation is float and isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        # YAML 1.1 reads `1e-3` (no dot) as a string; it is what people write for a rate.
        value = float(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, float) and not math.isfinite(value):
        raise UpoError(f"{where}: {name} must be a finite number, got {value!r}")
    if annotation in (int, float, str, bool):
        if isinstance(value, bool) and annotation is not bool:
            raise UpoError(f"{where}: {name} must be {annotation.__name__}, got {value!r}")
        if not isinstance(value, annotation):
            raise UpoError(f"{where}: {name} must be {annotation.__name__}, got {value!r}")
    return value


def from_dict(cls, data: dict, where: str):
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrongly typed values."""
    if not isinstance(data, dict):
        raise UpoError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UpoError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
    for f in dataclasses.fields(cls):
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if no_default and f.name not in data:
            raise UpoError(f"{where}: missing required key {f.name!r}")
    values = {k: _check_type(k, v, hints[k], where) for k, v in data.items()}
    obj = cls(**values)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as err:
            raise UpoError(f"{where}: {err}") from None
    return obj


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UpoError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UpoError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UpoError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def load_config(cls, path: str | Path, overrides: dict | None = None):
    data = load_yaml(path)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return from_dict(cls, data, str(path))


def to_dict(obj) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(obj)))
