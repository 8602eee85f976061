"""Parameter files: schema, validation and loading (``params/<figure-id>.yaml``).

A parameter file holds ``notebook:`` (the notebook that draws the figure) and one section
per profile (``quick:``, ``paper:``). Each section is checked against typed dataclasses
(one help string per field, as in open_lth's hparams) before any compute. Every error
names the file and the key, e.g.
``params/fort-fig4.yaml: quick.parent.lr_drops: expected a list of epochs, got 80``.

Imports nothing heavy (no JAX): the Snakefile loads it to build the workflow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

PROFILES = ("quick", "paper")


class ParamsError(ValueError):
    """A parameter file that cannot be used; the message names the file and the key."""


def spec(help: str, expect: str | None = None, default: Any = dataclasses.MISSING, **bounds):
    """A dataclass field with a help string, an optional phrase for errors and bounds.

    Bounds: ``gt``, ``ge``, ``lt``, ``le`` apply to a number or to every item of a list.
    """
    return field(default=default, metadata={"help": help, "expect": expect, **bounds})


# ---------------------------------------------------------------------------------------
# Sections shared by the figures
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Data:
    dataset: Literal["digits", "cifar10", "cifar100"] = spec("dataset; digits is embedded")
    batch_size: int = spec("minibatch size", gt=0)
    eval_batch: int = spec("examples per forward pass when evaluating", gt=0)
    augment: bool = spec("random crop (with padding) and horizontal flip")
    crop_padding: int = spec("zero padding before the random crop, pixels", ge=0)


@dataclass(frozen=True)
class Model:
    name: Literal["resnet", "wrn"] = spec("architecture: ResNet (v1) or Wide ResNet")
    depth: int = spec("depth: 6n + 2 for ResNet (20), 6n + 4 for Wide ResNet (16)", gt=1)
    width: float = spec("width multiplier of every channel count (WRN: widen factor k)", gt=0)
    batch_norm: bool = spec("batch norm on (false: the 'no BN' variant)")


@dataclass(frozen=True)
class Segment:
    every: float = spec("snapshot spacing in this segment, epochs", gt=0)
    until: float = spec("last epoch of this segment", gt=0)


@dataclass(frozen=True)
class Train:
    seed: int = spec("seed of initialisation and data order", ge=0)
    epochs: float = spec("length of training, epochs", gt=0)
    lr: float = spec("learning rate", gt=0)
    momentum: float = spec("SGD momentum", ge=0, lt=1)
    weight_decay: float = spec("L2 weight decay added to the gradient", ge=0)
    lr_drops: tuple[float, ...] = spec(
        "epochs at which lr is multiplied by lr_decay", expect="a list of epochs", ge=0
    )
    lr_decay: float = spec("factor applied at each drop", gt=0, le=1)
    snapshots: tuple[Segment, ...] = spec(
        "snapshot schedule: segments {every, until} in epochs, from 0",
        expect="a list of {every, until} segments",
    )

    def snapshot_epochs(self) -> list[float]:
        """Epochs of the snapshots: 0, each segment's grid and its ``until``, and the end."""
        epochs, start = [0.0, self.epochs], 0.0
        for seg in self.snapshots:
            n = int((seg.until - start) / seg.every + 1e-6)
            epochs += [start + seg.every * (i + 1) for i in range(n)] + [seg.until]
            start = seg.until
        return sorted({round(e, 6) for e in epochs if e <= self.epochs + 1e-9})

    def check_snapshots(self, key: str, epochs: tuple[float, ...]) -> None:
        """Refuse an epoch (``key[i]``) that is not on this run's snapshot schedule."""
        snaps = self.snapshot_epochs()
        for i, e in enumerate(epochs):
            if not any(abs(e - s) < 1e-6 for s in snaps):
                raise _error(f"{key}[{i}]", "an epoch of the parent's snapshot schedule", e)

    def check(self) -> None:
        for i in range(1, len(self.snapshots)):
            if self.snapshots[i].until <= self.snapshots[i - 1].until:
                raise _error(
                    f"snapshots[{i}].until",
                    "an epoch after the previous segment's",
                    self.snapshots[i].until,
                )


@dataclass(frozen=True)
class Children:
    spawn_epochs: tuple[float, ...] = spec(
        "epochs at which children are spawned", expect="a list of epochs", ge=0
    )
    n_children: int = spec("children per spawn epoch, trained as one vmapped program", ge=2)
    seed: int = spec("seed of the children's data order", ge=0)


@dataclass(frozen=True)
class Measure:
    probe_size: int = spec("training examples in the fixed NTK / ReLU probe subset", gt=0)
    probe_seed: int = spec("seed that picks the probe subset", ge=0)
    ntk_block: int = spec("examples per Jacobian block when computing the NTK", gt=0)
    bn_examples: int = spec("training examples used to recompute batch-norm statistics", gt=0)
    ntk_trace: bool = spec("NTK traced over logits (true) or full mK x mK (false)", default=True)
    barrier_points: int = spec("points on the interpolation path", ge=2, default=21)
    bn_stats: Literal["recompute", "interpolate"] = spec(
        "batch-norm statistics of interpolated networks", default="recompute"
    )


@dataclass(frozen=True)
class IntegratedClaims:
    late_epoch: float = spec("spawn epoch from which the barrier should be about 0", ge=0)
    barrier_zero: float = spec("a barrier at most this is 'about 0'", ge=0)
    barrier_early_min: float = spec("the spawn-0 barrier should exceed the late one by this", ge=0)


@dataclass(frozen=True)
class IntegratedView:
    """Fort et al. figures 2, 3, 4: parent, children per spawn epoch, measurements."""

    data: Data = spec("data")
    model: Model = spec("model")
    parent: Train = spec("parent training")
    children: Children = spec("children")
    measure: Measure = spec("measurements")
    claims: IntegratedClaims = spec("tolerances of the claims table")

    def check(self) -> None:
        self.parent.check_snapshots("children.spawn_epochs", self.children.spawn_epochs)
        for i, e in enumerate(self.children.spawn_epochs):
            if e >= self.parent.epochs:
                raise _error(f"children.spawn_epochs[{i}]", "an epoch before parent.epochs", e)


@dataclass(frozen=True)
class Linearised:
    """Training of the Taylor model of the parent at t~ (Fort et al. appendix D.4)."""

    spawn_epochs: tuple[float, ...] = spec(
        "epochs t~ of the parent at which it is expanded", expect="a list of epochs", ge=0
    )
    degree: int = spec("order of the Taylor model: 1 linearised, 2 quadratic", ge=1, le=2)
    epochs: float = spec("training length after t~, epochs", gt=0)
    lr: float = spec("learning rate", gt=0)
    momentum: float = spec("SGD momentum", ge=0, lt=1)
    weight_decay: float = spec("L2 weight decay added to the gradient", ge=0)
    lr_drops: tuple[float, ...] = spec(
        "epochs (after t~) at which lr is multiplied by lr_decay", expect="a list of epochs", ge=0
    )
    lr_decay: float = spec("factor applied at each drop", gt=0, le=1)
    seed: int = spec("seed of the data order", ge=0)


@dataclass(frozen=True)
class LowLrChildren:
    """Nonlinear children spawned at each t~ at a low learning rate (Fort et al. appendix D.3)."""

    lr: float = spec("constant learning rate of the children", gt=0)
    epochs: float = spec("training length after t~, epochs", gt=0)
    n_children: int = spec("children per t~ (their test errors are averaged)", ge=1)
    seed: int = spec("seed of the children's data order", ge=0)


@dataclass(frozen=True)
class KernelClaims:
    speedup: float = spec("error of the kernel at t~ should fall by this factor vs t~ = 0", gt=0)
    within_epochs: float = spec("... for some t~ at most this many epochs", ge=0)
    match_gap: float = spec("a linearised error within this of the baseline 'matches' it", ge=0)
    match_fraction: float = spec("... at some t~ at most this fraction of training", gt=0, le=1)
    advantage_zero: float = spec("a nonlinear advantage at most this is 'vanished'", ge=0)
    correlation_min: float = spec("advantage and barrier correlate at least this much", ge=-1, le=1)


@dataclass(frozen=True)
class KernelLearning:
    """Fort et al. figures 8, 9, 19: linearised training from the parent at t~."""

    data: Data = spec("data")
    model: Model = spec("model")
    parent: Train = spec("parent training (constant learning rate, as in appendix D.3)")
    linearised: Linearised = spec("training of the linearised (or order-2) model")
    low_lr: LowLrChildren = spec("low-learning-rate nonlinear children")
    children: Children = spec("children at the parent's own lr, for the error barrier")
    measure: Measure = spec("measurements of the children (error barrier)")
    claims: KernelClaims = spec("tolerances of the claims table")

    def check(self) -> None:
        self.parent.check_snapshots("linearised.spawn_epochs", self.linearised.spawn_epochs)
        self.parent.check_snapshots("children.spawn_epochs", self.children.spawn_epochs)


NOTEBOOKS: dict[str, type] = {
    "fort_integrated_view": IntegratedView,
    "fort_linearised": KernelLearning,
    "fort_nonlinear_advantage": KernelLearning,
}


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------


class _KeyError(Exception):
    def __init__(self, key: str, message: str):
        self.key, self.message = key, message


def _error(key: str, expect: str, got: Any) -> _KeyError:
    return _KeyError(key, f"expected {expect}, got {got!r}")


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
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        return _convert(typing.get_args(tp)[0], value, key, meta)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _error(key, expect, value)
        return _build(tp, value, key)
    if origin is tuple:
        if not isinstance(value, list):
            raise _error(key, expect, value)
        item = typing.get_args(tp)[0]
        return tuple(
            _convert(item, v, f"{key}[{i}]", {**meta, "expect": None}) for i, v in enumerate(value)
        )
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise _error(key, expect, value)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _error(key, expect, value)
        return value
    if tp in (int, float):
        ok = isinstance(value, int) if tp is int else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            raise _error(key, expect, value)
        try:
            value = tp(value)
            finite = math.isfinite(value)
        except OverflowError:
            finite = False
        if not finite:
            raise _error(key, expect, value)
        for name, test, word in (
            ("gt", lambda a, b: a > b, ">"),
            ("ge", lambda a, b: a >= b, ">="),
            ("lt", lambda a, b: a < b, "<"),
            ("le", lambda a, b: a <= b, "<="),
        ):
            if name in meta and not test(value, meta[name]):
                raise _error(key, f"{_describe(tp)} {word} {meta[name]}", value)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise _error(key, expect, value)
        return value
    raise TypeError(f"unsupported field type {tp}")


def _build(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    where = lambda k: f"{prefix}.{k}" if prefix else k  # noqa: E731
    for k in data:
        if k not in fields:
            raise _KeyError(where(k), f"unknown key (allowed: {', '.join(fields)})")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], where(name), dict(f.metadata))
        elif f.default is dataclasses.MISSING:
            raise _KeyError(where(name), f"missing ({f.metadata.get('help')})")
    obj = cls(**kwargs)
    if hasattr(obj, "check"):
        try:
            obj.check()
        except _KeyError as e:
            raise _KeyError(where(e.key), e.message) from None
    return obj


@dataclass(frozen=True)
class Figure:
    """One figure target: its id, notebook, profile and validated parameters."""

    id: str
    notebook: str
    profile: str
    params: Any
    path: Path


def params_dir() -> Path:
    """Directory of the parameter files: ``$NTKPAPER_PARAMS`` or ``params/`` of the repo."""
    return Path(
        os.environ.get("NTKPAPER_PARAMS", Path(__file__).resolve().parent.parent / "params")
    )


def load_figure(path: str | Path, profile: str) -> Figure:
    """Read and validate one parameter file for one profile; raise ParamsError if malformed."""
    path = Path(path)
    shown = _shown(path)
    raw = read_yaml(path, shown)
    if not isinstance(raw, dict):
        raise ParamsError(f"{shown}: expected a mapping with keys notebook, quick, paper")
    for k in raw:
        if k not in ("notebook", *PROFILES):
            raise ParamsError(
                f"{shown}: {k}: unknown key (allowed: notebook, {', '.join(PROFILES)})"
            )
    notebook = raw.get("notebook")
    if notebook not in NOTEBOOKS:
        raise ParamsError(
            f"{shown}: notebook: expected one of {', '.join(NOTEBOOKS)}, got {notebook!r}"
        )
    if profile not in raw:
        raise ParamsError(f"{shown}: {profile}: missing (no '{profile}' profile in this file)")
    try:
        section = raw[profile]
        if not isinstance(section, dict):
            raise _error(profile, "a mapping", section)
        params = _build(NOTEBOOKS[notebook], section, profile)
    except _KeyError as e:
        raise ParamsError(f"{shown}: {e.key}: {e.message}") from None
    return Figure(path.stem, notebook, profile, params, path)


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


def load_all(profile: str, directory: Path | None = None) -> dict[str, Figure]:
    """Every figure of ``params/`` for ``profile``, validated (both profiles are checked)."""
    if profile not in PROFILES:
        raise ParamsError(f"profile: expected one of {', '.join(PROFILES)}, got {profile!r}")
    directory = directory or params_dir()
    figures = {}
    for path in sorted(directory.glob("*.yaml")):
        for p in PROFILES:  # a malformed profile is refused even when the other one runs
            fig = load_figure(path, p)
            if p == profile:
                figures[fig.id] = fig
    return figures


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


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
        return _build(cls, data, "")
    except _KeyError as e:
        raise ParamsError(f"stored spec: {e.key}: {e.message}") from None
