"""Reading and checking a parameter file: a strict YAML reader and typed dataclass building.

``spec`` declares a field (help string, bounds); ``build`` turns a mapping into a frozen
dataclass, converting and checking every value; ``read_yaml`` parses a file defensively.
Every failure is a ``ParamsError`` (or a ``FieldError`` that ``params`` turns into one) whose
message names the file and the dotted key. Imports nothing heavy: the Snakefile uses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

import yaml


class ParamsError(ValueError):
    """A parameter file that cannot be used; the message names the file and the key."""


def spec(help: str, expect: str | None = None, default: Any = dataclasses.MISSING, **bounds):
    """A dataclass field with a help string, an optional phrase for errors and bounds.

    Bounds: ``gt``, ``ge``, ``lt``, ``le`` apply to a number or to every item of a list.
    A field with a default is keyword-only, so a subclass may add fields without one.
    """
    optional = default is not dataclasses.MISSING  # keyword-only: subclasses add required fields
    return field(
        default=default, kw_only=optional, metadata={"help": help, "expect": expect, **bounds}
    )


class FieldError(Exception):
    """A value that does not fit its field; ``key`` is the dotted key."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message


def error(key: str, expect: str, got: Any) -> FieldError:
    return FieldError(key, f"expected {expect}, got {got!r}")


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping with keys " + ", ".join(f.name for f in dataclasses.fields(tp))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        tp, str(tp)
    )


def _convert(tp: Any, value: Any, key: str, meta: dict) -> Any:
    expect = meta.get("expect") or _describe(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):  # Optional[X], X | None
        if value is None:
            return None
        return _convert(typing.get_args(tp)[0], value, key, meta)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise error(key, expect, value)
        return build(tp, value, key)
    if origin is tuple:
        if not isinstance(value, list):
            raise error(key, expect, value)
        item = typing.get_args(tp)[0]
        return tuple(
            _convert(item, v, f"{key}[{i}]", {**meta, "expect": None}) for i, v in enumerate(value)
        )
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise error(key, expect, value)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise error(key, expect, value)
        return value
    if tp in (int, float):
        ok = isinstance(value, int) if tp is int else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            raise error(key, expect, value)
        try:
            value = tp(value)
            finite = math.isfinite(value)
        except OverflowError:
            finite = False
        if not finite:
            raise error(key, expect, value)
        for name, test, word in (
            ("gt", lambda a, b: a > b, ">"),
            ("ge", lambda a, b: a >= b, ">="),
            ("lt", lambda a, b: a < b, "<"),
            ("le", lambda a, b: a <= b, "<="),
        ):
            if name in meta and not test(value, meta[name]):
                raise error(key, f"{_describe(tp)} {word} {meta[name]}", value)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise error(key, expect, value)
        return value
    raise TypeError(f"unsupported field type {tp}")


def build(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    where = lambda k: f"{prefix}.{k}" if prefix else k  # noqa: E731
    for k in data:
        if k not in fields:
            raise FieldError(where(k), f"unknown key (allowed: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], where(name), dict(f.metadata))
        elif f.default is dataclasses.MISSING:
            raise FieldError(where(name), f"missing ({f.metadata.get('help')})")
    obj = cls(**kwargs)
    if hasattr(obj, "check"):
        try:
            obj.check()
        except FieldError as e:
            raise FieldError(where(e.key), e.message) from None
    return obj


MAX_BYTES = 1_000_000
"""Largest parameter file read (the real ones are about 2 kB); checked before parsing."""


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases and duplicate keys.

    Parameter files need no anchors: refusing every alias (``*name``) before it is composed
    makes the "billion laughs" expansion impossible, and a duplicated key would silently
    drop one of two values.
    """

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"alias *{event.anchor} (parameter files take no aliases)",
                event.start_mark,
            )  # fmt: skip
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: Path, shown: str | None = None) -> Any:
    """Parse a parameter file: bounded size, UTF-8, no aliases, no duplicate keys, safe tags.

    Every refusal is a ``ParamsError`` naming the file (``shown``, default ``path``).
    """
    shown = shown or str(path)
    try:
        with open(path, "rb") as f:
            blob = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ParamsError(f"{shown}: cannot read: {e.strerror}") from None
    if len(blob) > MAX_BYTES:
        raise ParamsError(
            f"{shown}: larger than {MAX_BYTES} bytes; a parameter file is a few kB of YAML"
        )
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ParamsError(
            f"{shown}: not UTF-8 text (invalid byte {blob[e.start]:#04x} at offset {e.start})"
        ) from None
    try:
        stream = io.StringIO(text)
        stream.name = shown  # YAML's error marks then name the file
        return yaml.load(stream, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise ParamsError(f"{shown}: not valid YAML: {e}") from None


# ---------------------------------------------------------------------------------------
# Content keys
# ---------------------------------------------------------------------------------------


def as_dict(obj: Any) -> Any:
    """Plain JSON-able form of a parameter dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj))


def content_key(spec: dict) -> str:
    """Key of a run: sha256 of its canonical JSON spec, 16 hex digits (open_lth's hashname)."""
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def from_dict(cls: type, data: dict) -> Any:
    """Rebuild a parameter dataclass from ``as_dict`` output (a run's stored spec)."""
    try:
        return build(cls, data, "")
    except FieldError as e:
        raise ParamsError(f"stored spec: {e.key}: {e.message}") from None


# ---------------------------------------------------------------------------------------
# Parameter files that extend another
# ---------------------------------------------------------------------------------------


PROFILES = ("quick", "paper")
TOP_KEYS = ("notebook", "extends", "shares_parent_with", *PROFILES)


def read_raw(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The file's mapping, merged over the file it ``extends`` (a figure id beside it).

    Mappings merge key by key; a list or a number replaces the base's. So fort-fig9 is
    ``extends: fort-fig8`` with another notebook, and a variant names only what it changes.
    """
    shown = shown_path(path)
    raw = read_yaml(path, shown)
    if not isinstance(raw, dict):
        raise ParamsError(f"{shown}: expected a mapping with keys {', '.join(TOP_KEYS)}")
    for k in raw:
        if k not in TOP_KEYS:
            raise ParamsError(f"{shown}: {k}: unknown key (allowed: {', '.join(TOP_KEYS)})")
    base_id = raw.pop("extends", None)
    if base_id is None:
        return raw
    base = path.parent / f"{base_id}.yaml"
    if not isinstance(base_id, str) or not base.is_file():
        raise ParamsError(
            f"{shown}: extends: expected the id of a figure in {path.parent}, got {base_id!r}"
        )
    if base.resolve() in seen:
        raise ParamsError(f"{shown}: extends: {base_id} extends this file again (a cycle)")
    return _merge(read_raw(base, (*seen, path.resolve())), raw)


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in over.items()}}
    return over


def shown_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
