"""Strict YAML -> dataclass loading: unknown keys, wrong types and impossible values are UpoErrors."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import reprlib
import types
import typing
from pathlib import Path

import yaml

from .errors import UpoError
from .seeds import SEED_LIMIT, check_seed  # noqa: F401  (the trainers' configs check seeds here)

_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
# No setting nests this deep; the limit stops a file of 50,000 `[` before Python's recursion does.
MAX_DEPTH = 100
SHOW_CHARS = 80

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, SHOW_CHARS, SHOW_CHARS


def show(value) -> str:
    """repr(value) cut to about SHOW_CHARS characters, so that a huge bad value (a long string, a
    deep list) makes an error line, not a screenful. reprlib never builds the full repr."""
    text = _REPR.repr(value)
    return text if len(text) <= SHOW_CHARS else text[: SHOW_CHARS - 3] + "..."


class _Refused(yaml.YAMLError):
    """YAML that parses but that a config may not use; the message is the whole reason."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without the YAML features that only hide what a config says: anchors and
    aliases (one alias can stand for a billion values), duplicate keys (the last one silently
    wins) and nesting deep enough to exhaust Python's recursion."""

    _depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            raise _Refused(f"line {line}: YAML aliases (*NAME) are not allowed in configs")
        if getattr(event, "anchor", None) is not None:
            raise _Refused(f"line {line}: YAML anchors (&NAME) are not allowed in configs")
        if self._depth >= MAX_DEPTH:
            raise _Refused(f"line {line}: nested more than {MAX_DEPTH} levels deep")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue  # a list or mapping as a key is SafeLoader's to refuse; `<<` merges
            key = self.construct_object(key_node)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise _Refused(f"line {line}: duplicate key {show(key)}")
            seen.add(key)
        return super().construct_mapping(node, deep)


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
        raise UpoError(f"{where}: {name} must be {annotation}, got {show(value)}")
    if annotation is dict or origin is dict:
        if not isinstance(value, dict):
            raise UpoError(f"{where}: {name} must be a mapping of settings, got {show(value)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise UpoError(f"{where}: {name} must be a list, got {show(value)}")
        (inner, *_) = typing.get_args(annotation) or (object,)
        return [_check_type(name, v, inner, where) for v in value]
    if annotation is float and isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        # YAML 1.1 reads `1e-3` (no dot) as a string; it is what people write for a rate.
        value = float(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, float) and not math.isfinite(value):
        raise UpoError(f"{where}: {name} must be a finite number, got {show(value)}")
    if annotation in (int, float, str, bool):
        if isinstance(value, bool) and annotation is not bool:
            raise UpoError(f"{where}: {name} must be {annotation.__name__}, got {show(value)}")
        if not isinstance(value, annotation):
            raise UpoError(f"{where}: {name} must be {annotation.__name__}, got {show(value)}")
    return value


def from_dict(cls, data: dict, where: str):
    """Build dataclass `cls` from `data`, rejecting unknown keys and wrongly typed values."""
    if not isinstance(data, dict):
        raise UpoError(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    # repr as the sort key: YAML keys may be numbers or null besides strings, which sort() refuses
    unknown = sorted(set(data) - names, key=repr)
    if unknown:
        raise UpoError(
            f"{where}: unknown key {show(unknown[0])} (known: {', '.join(sorted(names))})"
        )
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
        # utf-8-sig: a leading byte-order mark is harmless; any other encoding is refused here
        # rather than guessed.
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UpoError(f"{path}: not a UTF-8 text file ({err.reason})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)
    except _Refused as err:
        raise UpoError(f"{path}: {err}") from None
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
