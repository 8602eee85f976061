"""Parameter files: the sections of each figure, and loading (``params/<figure-id>.yaml``).

Fort et al.'s sections are here, Atanasov et al.'s in ``sa_params`` (re-exported).

A parameter file holds ``notebook:`` (the notebook that draws the figure) and one section
per profile (``quick:``, ``paper:``). Each section is checked against typed dataclasses
(one help string per field, as in open_lth's hparams) before any compute (``schema``). Every error
names the file and the key, e.g.
``params/fort-fig4.yaml: quick.parent.lr_drops: expected a list of epochs, got 80``.

Imports nothing heavy (no JAX): the Snakefile loads it to build the workflow.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ntkpaper.sa_params import (  # the sections of Atanasov et al.'s figures
    SA_CLAIMS,
    PowerLaw,
    SaClaims,
    SaData,
    SaNetwork,
    SaRun,
    SaTrain,
    SilentAlignment,
    Transfer,
    TransferFigure,
)
from ntkpaper.schema import (
    PROFILES,
    FieldError,
    ParamsError,
    build,
    error,
    read_raw,
    shown_path,
    spec,
)

__all__ = [
    "ParamsError", "load_all", "load_figure", "SA_CLAIMS", "SaClaims", "SaData", "SaNetwork",
    "SaRun", "SaTrain", "SilentAlignment", "Transfer", "TransferFigure", "PowerLaw",
]  # fmt: skip


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
    name: Literal["resnet", "wrn", "simplecnn"] = spec(
        "architecture: ResNet (v1), Wide ResNet or Fort et al.'s SimpleCNN"
    )
    depth: int = spec(
        "depth: 6n + 2 for ResNet (20), 6n + 4 for Wide ResNet (16), 6 SimpleCNN", gt=1
    )
    width: float = spec("width multiplier of every channel count (WRN: widen factor k)", gt=0)
    batch_norm: bool = spec("batch norm on (false: the 'no BN' variant)")
    weight_init: Literal["he", "lecun"] = spec(
        "weights of convolutions and dense layers: he (variance 2/fan_in, He et al.; the CIFAR "
        "ResNets') or lecun (1/fan_in, Flax's default)",
        default="he",
    )

    def check(self) -> None:
        if self.name == "simplecnn":
            if self.depth != 6 or self.batch_norm:
                raise error("depth" if self.depth != 6 else "batch_norm",
                            "depth 6 and batch_norm false for simplecnn",
                            self.depth if self.depth != 6 else True)  # fmt: skip
            return
        n, offset = (6, 2) if self.name == "resnet" else (6, 4)
        if (self.depth - offset) % n or self.depth < n + offset:
            raise error("depth", f"{n}n + {offset} for {self.name} (n >= 1)", self.depth)
        if self.name == "wrn" and not self.batch_norm:
            raise error("batch_norm", "true for wrn (the Wide ResNet here always has it)", False)


@dataclass(frozen=True)
class Segment:
    every: float = spec("snapshot spacing in this segment, epochs", gt=0)
    until: float = spec("last epoch of this segment", gt=0)


@dataclass(frozen=True)
class Sgd:
    """SGD with momentum (or Adam) and L2 weight decay, lr multiplied by lr_decay at each
    drop: the optimiser of every run that trains (``train.optimizer``)."""

    lr: float = spec("learning rate", gt=0)
    momentum: float = spec("SGD momentum (0 with adam, which has its own b1 = 0.9)", ge=0, lt=1)
    weight_decay: float = spec("L2 weight decay added to the gradient", ge=0)
    lr_drops: tuple[float, ...] = spec(
        "epochs (from the run's start) at which lr is multiplied by lr_decay",
        expect="a list of epochs",
        ge=0,
    )
    lr_decay: float = spec("factor applied at each drop", gt=0, le=1)
    optimizer: Literal["sgd", "adam"] = spec(
        "sgd (with momentum) or adam (Kingma & Ba, b1 0.9, b2 0.999, eps 1e-8)", default="sgd"
    )

    def check(self) -> None:
        if self.optimizer == "adam" and self.momentum:
            raise error(
                "momentum", "0 with optimizer adam (Adam's b1 = 0.9 is fixed)", self.momentum
            )


@dataclass(frozen=True)
class Train(Sgd):
    seed: int = spec("seed of initialisation and data order", ge=0)
    epochs: float = spec("length of training, epochs", gt=0)
    snapshots: tuple[Segment, ...] = spec(
        "snapshot schedule: segments {every, until} in epochs, from 0",
        expect="a list of {every, until} segments",
    )
    pair_dt: float | None = spec(
        "also snapshot t + pair_dt after every scheduled t (epochs): the pairs of the kernel "
        "velocity v(t) = S(t, t + dt) / dt at one fixed dt",
        default=None,
        gt=0,
    )

    def snapshot_epochs(self) -> list[float]:
        """Epochs of the snapshots: 0, each segment's grid and its ``until``, the end, and
        with ``pair_dt`` each of those plus ``pair_dt``."""
        epochs, start = [0.0, self.epochs], 0.0
        for seg in self.snapshots:
            n = int((seg.until - start) / seg.every + 1e-6)
            epochs += [start + seg.every * (i + 1) for i in range(n)] + [seg.until]
            start = seg.until
        if self.pair_dt:
            epochs += [e + self.pair_dt for e in epochs]
        return sorted({round(e, 6) for e in epochs if e <= self.epochs + 1e-9})

    def check_snapshots(self, key: str, epochs: tuple[float, ...]) -> None:
        """Refuse a list of epochs that does not start at 0 and increase (the claims read its
        first entry as the start of training), or an epoch not on the snapshot schedule."""
        snaps = self.snapshot_epochs()
        if epochs and epochs[0] != 0:
            raise error(f"{key}[0]", "0 (the list starts at the start of training)", epochs[0])
        for i in range(1, len(epochs)):
            if epochs[i] <= epochs[i - 1]:
                raise error(f"{key}[{i}]", f"an epoch after {key}[{i - 1}] (sorted)", epochs[i])
        for i, e in enumerate(epochs):
            if not any(abs(e - s) < 1e-6 for s in snaps):
                raise error(f"{key}[{i}]", "an epoch of the parent's snapshot schedule", e)

    def check(self) -> None:
        super().check()
        for i in range(1, len(self.snapshots)):
            if self.snapshots[i].until <= self.snapshots[i - 1].until:
                raise error(
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
    snapshot_every: int | None = spec(
        "also keep the children's weights at every multiple of this many epochs (whole epochs, "
        "where they checkpoint): their stages in function space (fort-fig11)",
        default=None,
        gt=0,
    )


@dataclass(frozen=True)
class Measure:
    probe_size: int = spec("training examples in the fixed NTK / ReLU probe subset", gt=0)
    probe_seed: int = spec("seed that picks the probe subset", ge=0)
    ntk_block: int = spec("examples per Jacobian block when computing the NTK", gt=0)
    bn_examples: int = spec("training examples used to recompute batch-norm statistics", gt=0)
    ntk_trace: bool = spec("NTK traced over logits (true) or full mK x mK (false)", default=True)
    barrier_points: int = spec("points on the interpolation path", ge=2, default=21)
    bn_stats: Literal["recompute", "running"] = spec(
        "batch-norm statistics of every measured network (snapshots, children, points of the "
        "barrier path, linearisation anchors): recomputed on the first bn_examples training "
        "inputs, or the stored running ones (interpolated along the barrier path)",
        default="recompute",
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
                raise error(f"children.spawn_epochs[{i}]", "an epoch before parent.epochs", e)


@dataclass(frozen=True)
class FunctionDistance:
    """Fort et al. figures 6, 10, 20: children's function distance against spawn epoch."""

    smooth_window: float | None = spec(
        "figure 10: also the function distance averaged over spawn epochs within +- window / 2",
        default=None,
        gt=0,
    )
    diversity_min: float = spec(
        "a late function distance at least this is 'non-negligible diversity within a basin'",
        ge=0,
    )


@dataclass(frozen=True)
class Velocity:
    """Fort et al. figure 7: the first epochs, kernel velocity against error barrier."""

    zoom_until: float = spec("the panels show epochs up to this", gt=0)
    slow_fraction: float = spec(
        "once the barrier has vanished the velocity should stay below this fraction of its "
        "largest value ('a low non-zero velocity')",
        gt=0,
        le=1,
    )
    correlation_min: float = spec("velocity and barrier correlate at least this much", ge=-1, le=1)
    correlation_points: int = spec("the correlation claim needs at least this many epochs", ge=3)


@dataclass(frozen=True)
class PlaneGrid:
    """Fort et al. figure 5: the plane through a spawn point and two of its children."""

    spawn_epochs: tuple[float, ...] = spec(
        "the early (chaotic) and the late (stable) spawn epoch, among children.spawn_epochs",
        expect="a list of two epochs",
        ge=0,
    )
    resolution: int = spec("grid points per axis of the plane", ge=3)
    margin: float = spec("the grid extends the three networks' bounding box by this fraction", ge=0)
    tangent_gap: float = spec(
        "a tangent plane 'describes' the plane when its test error differs from the network's "
        "by at most this, on average over the grid",
        ge=0,
    )

    def check(self) -> None:
        if len(self.spawn_epochs) != 2 or self.spawn_epochs[0] >= self.spawn_epochs[1]:
            raise error("spawn_epochs", "two epochs, early then late", list(self.spawn_epochs))


@dataclass(frozen=True)
class Tsne:
    """Fort et al. figure 11: t-SNE of the predicted probabilities."""

    perplexity: float = spec("t-SNE perplexity (below the number of embedded networks)", gt=0)
    seed: int = spec("t-SNE seed", ge=0)


@dataclass(frozen=True)
class Geometry:
    """Fort et al. figures 14, 17: Hessian and logit-gradient centroids (appendix B)."""

    hessian_examples: int = spec("training examples of the loss whose Hessian is taken", gt=0)
    hessian_iters: int = spec("Lanczos steps (Hessian-vector products) per snapshot", ge=2)
    centroid_examples: int = spec("training examples averaged in the centroids", gt=0)
    sealed_fraction: float = spec(
        "'basin fate is sealed within the first 1-10 % of training': the barrier is about 0 "
        "for every spawn epoch after this fraction of the parent's epochs",
        gt=0,
        le=1,
    )


@dataclass(frozen=True)
class GeometryView(IntegratedView):
    geometry: Geometry = spec("Hessian and logit-gradient measurements")


@dataclass(frozen=True)
class FunctionDistanceView(IntegratedView):
    distance: FunctionDistance = spec("function distance: smoothing and claims")


@dataclass(frozen=True)
class VelocityView(IntegratedView):
    velocity: Velocity = spec("kernel velocity against error barrier")


@dataclass(frozen=True)
class PlaneView(IntegratedView):
    plane: PlaneGrid = spec("the planes through spawn points and children")

    def check(self) -> None:
        super().check()
        for i, e in enumerate(self.plane.spawn_epochs):
            if not any(abs(e - c) < 1e-9 for c in self.children.spawn_epochs):
                raise error(f"plane.spawn_epochs[{i}]", "one of children.spawn_epochs", e)


@dataclass(frozen=True)
class TsneView(IntegratedView):
    tsne: Tsne = spec("t-SNE of parent and children")

    def check(self) -> None:
        super().check()
        if not self.children.snapshot_every:
            raise error("children.snapshot_every", "whole epochs (the children's stages)", None)


@dataclass(frozen=True)
class Linearised(Sgd):
    """Training of the Taylor model of the parent at t~ (Fort et al. appendix D.4)."""

    spawn_epochs: tuple[float, ...] = spec(
        "epochs t~ of the parent at which it is expanded", expect="a list of epochs", ge=0
    )
    degree: int = spec("order of the Taylor model: 1 linearised, 2 quadratic", ge=1, le=2)
    epochs: float = spec("training length after t~, epochs", gt=0)
    seed: int = spec("seed of the data order", ge=0)


@dataclass(frozen=True)
class LowLrChildren:
    """Nonlinear children spawned at each t~ at a low learning rate (Fort et al. appendix D.3)."""

    lr: float = spec("constant learning rate of the children", gt=0)
    epochs: float = spec("the cap: at most this many epochs after t~", gt=0)
    converged_rtol: float = spec(
        "'until convergence': a child has converged once its training loss falls by less than "
        "this fraction between two epoch boundaries; training stops when all have, or at the cap",
        ge=0,
    )
    n_children: int = spec("children per t~ (their test errors are averaged)", ge=1)
    seed: int = spec("seed of the children's data order", ge=0)


@dataclass(frozen=True)
class KernelClaims:
    late_epoch: float = spec("from this t~ on, the nonlinear advantage should have vanished", ge=0)
    correlation_points: int = spec("the correlation claim needs at least this many t~", ge=3)
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
    standard: Train | None = spec(
        "full training on the standard schedule (with lr drops), drawn beside the constant-lr "
        "parent as the paper's 'network trained for the standard full 200 epochs'",
        default=None,
    )

    def check(self) -> None:
        self.parent.check_snapshots("linearised.spawn_epochs", self.linearised.spawn_epochs)
        self.parent.check_snapshots("children.spawn_epochs", self.children.spawn_epochs)


NOTEBOOKS: dict[str, type] = {
    "fort_integrated_view": IntegratedView,
    "fort_function_distance": FunctionDistanceView,
    "fort_kernel_velocity": VelocityView,
    "fort_plane": PlaneView,
    "fort_tsne": TsneView,
    "fort_geometry": GeometryView,
    "fort_linearised": KernelLearning,
    "fort_nonlinear_advantage": KernelLearning,
    "sa_dynamics": SilentAlignment,
    "sa_linear": SilentAlignment,
    "sa_deep_linear": SilentAlignment,
    "sa_transfer": TransferFigure,
}


# ---------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------


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
    shown = shown_path(path)
    raw = read_raw(path)
    raw.pop("shares_parent_with", None)  # read by check_shared, after every file loads
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
            raise error(profile, "a mapping", section)
        params = build(NOTEBOOKS[notebook], section, profile)
    except FieldError as e:
        raise ParamsError(f"{shown}: {e.key}: {e.message}") from None
    return Figure(path.stem, notebook, profile, params, path)


def check_shared(figures: dict[str, Figure]) -> None:
    """A figure that declares ``shares_parent_with: <id>`` must train the same parent run."""
    for fig in figures.values():
        other = read_raw(fig.path).get("shares_parent_with")
        if other is None:
            continue
        where = f"{shown_path(fig.path)}: shares_parent_with"
        if other not in figures:
            raise ParamsError(f"{where}: expected the id of a figure, got {other!r}")
        from ntkpaper.plan import parent_job  # plan builds on this module

        keys = [parent_job(f.params.data, f.params.model, f.params.parent).key
                for f in (fig, figures[other])]  # fmt: skip
        if keys[0] != keys[1]:
            raise ParamsError(
                f"{where}: {other}, but on {fig.profile} the two parent runs differ ({keys[0]} "
                f"vs {keys[1]}): make data, model and parent equal, or drop the declaration"
            )


def load_all(profile: str, directory: Path | None = None) -> dict[str, Figure]:
    """Every figure of ``params/`` for ``profile``, validated (both profiles are checked)."""
    if profile not in PROFILES:
        raise ParamsError(f"profile: expected one of {', '.join(PROFILES)}, got {profile!r}")
    directory = directory or params_dir()
    every: dict[str, dict[str, Figure]] = {p: {} for p in PROFILES}
    for path in sorted(directory.glob("*.yaml")):
        for p in PROFILES:  # a malformed profile is refused even when the other one runs
            every[p][path.stem] = load_figure(path, p)
    for figures in every.values():
        check_shared(figures)
    return every[profile]
