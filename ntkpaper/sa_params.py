"""The sections of Atanasov, Bordelon and Pehlevan 2022's parameter files (``sa-*.yaml``):
runs of small networks, the claims they test, the transfer theory. Checked like every section
(``schema``); ``params`` registers them with their notebooks. No JAX."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ntkpaper.schema import error, spec


@dataclass(frozen=True)
class SaData:
    """Inputs and targets of a silent-alignment run (``ntkpaper.jobs.silent.prepare``)."""

    dataset: Literal["synthetic", "digits", "mnist", "cifar10"] = spec(
        "synthetic: Gaussian inputs and a linear teacher; otherwise images, flattened"
    )
    classes: tuple[int, ...] = spec(
        "classes used: two give targets +1 / -1 (the first +1); more, one-hot minus 1/C "
        "(ours); ignored for synthetic",
        expect="a list of class labels",
        ge=0,
    )
    n_train: int = spec("P, training examples (the first of those classes, in order)", gt=1)
    n_test: int = spec("test points for the predictions", gt=0)
    gamma: float | None = spec(
        "partial whitening X = U S V^T -> U S^gamma V^T (0 white, 1 raw; images are centred "
        "first); null: raw inputs (images centred)",
        ge=0,
        le=1,
    )
    dim: int | None = spec("synthetic: input dimension D", default=None, gt=0)
    outputs: int = spec("synthetic: teacher outputs C", default=1, gt=0)
    seed: int = spec("synthetic: seed of inputs and teacher", default=0, ge=0)

    def check(self) -> None:
        if self.dataset == "synthetic" and self.dim is None:
            raise error("dim", "the input dimension D of the synthetic data", None)
        if self.dataset != "synthetic" and len(self.classes) < 2:
            raise error("classes", "at least two classes", list(self.classes))


@dataclass(frozen=True)
class SaNetwork:
    """A fully connected network f = W^L phi(... phi(W^1 x)), W^l ~ N(0, sigma^2 / N_l), or the
    Wide ResNet of appendix I (no batch norm), weights ~ N(0, sigma^2 / fan_in)."""

    activation: Literal["linear", "relu", "tanh"] = spec("phi (the Wide ResNet is relu)")
    depth: int = spec("mlp: L, the number of weight matrices; wrn: blocks per group", ge=1)
    width: int = spec("mlp: N, the units of every hidden layer; wrn: widen factor k", gt=0)
    sigmas: tuple[float, ...] = spec(
        "initialisation scales, one run each, trained as one vmapped program",
        expect="a list of numbers",
        gt=0,
    )
    seed: int = spec("seed of the initial weights (the same directions for every sigma)", ge=0)
    arch: Literal["mlp", "wrn"] = spec("fully connected, or the Wide ResNet", default="mlp")
    first_sigma: float | None = spec(
        "the first layer's sigma where it differs (appendix I: 6.0)", default=None, gt=0
    )

    def check(self) -> None:
        if self.arch == "mlp" and self.depth < 2:
            raise error("depth", "at least 2 weight matrices", self.depth)
        if self.arch == "wrn" and self.activation != "relu":
            raise error("activation", "relu for wrn", self.activation)


@dataclass(frozen=True)
class SaTrain:
    """Full-batch training on L = 1/(2P) sum (f - y)^2; time t = lr x steps."""

    optimizer: Literal["gd", "adam"] = spec("gradient descent or Adam")
    lr: float = spec("learning rate", gt=0)
    steps: int = spec("training steps", gt=0)
    log_points: int = spec("log-spaced steps at which loss and NTK are measured", ge=3)
    layer_lr: tuple[float, ...] | None = spec(
        "per-layer learning-rate multipliers eta_l (one per weight matrix); null: all 1",
        default=None,
        gt=0,
    )


@dataclass(frozen=True)
class SaRun:
    name: str = spec("label of this run in the figure")
    data: SaData = spec("inputs and targets")
    network: SaNetwork = spec("the network")
    train: SaTrain = spec("training")
    silent: bool | None = spec(
        "the paper's claim for this run, where it differs from the figure's claims.silent",
        default=None,
    )

    def check(self) -> None:
        lr = self.train.layer_lr
        if lr is not None and (self.network.arch != "mlp" or len(lr) != self.network.depth):
            raise error("train.layer_lr", f"{self.network.depth} multipliers (mlp only)", lr)
        if self.network.arch == "wrn" and self.data.dataset == "synthetic":
            raise error("data.dataset", "images for wrn", "synthetic")


SA_CLAIMS = (
    "silent", "final_ntk", "max_alignment", "anisotropy", "closed_form_loss", "t_half_log",
    "q_r", "spike", "t_half_power", "depth_alignment", "gram", "transfer",
)  # fmt: skip


@dataclass(frozen=True)
class SaClaims:
    rows: tuple[Literal[SA_CLAIMS], ...] = spec(  # type: ignore[valid-type]
        "the paper's claims this figure tests (ntkpaper.sa_claims.SILENT_CLAIMS says what each is)",
        expect=f"a list of claims among {', '.join(SA_CLAIMS)}",
    )
    silent: bool = spec(
        "the paper's claim for this figure: alignment precedes the loss drop (true) or, as in "
        "its unwhitened appendix I, it does not (false)"
    )
    before: float = spec(
        "'alignment precedes': alignment reaches this fraction of its final value before the "
        "loss falls to this fraction of its initial value",
        gt=0,
        lt=1,
    )
    match_ratio: float = spec(
        "the final-NTK predictor 'matches' the network: its RMS gap to the network at most this "
        "fraction of the initial-NTK predictor's",
        gt=0,
    )
    rtol: float = spec("relative tolerance of a measurement against the closed-form theory", gt=0)


@dataclass(frozen=True)
class PowerLaw:
    """Figure 4a, theory only: t_1/2 of the integrated ODE and of the power law."""

    sigmas: tuple[float, ...] = spec("initial scales", expect="a list of numbers", gt=0)
    depths: tuple[int, ...] = spec("depths L (>= 3)", expect="a list of depths", ge=3)
    teacher_norm: float = spec("s, the teacher's norm", gt=0)


@dataclass(frozen=True)
class SilentAlignment:
    """Atanasov et al. figures: runs of small networks, the NTK over training, theory."""

    runs: tuple[SaRun, ...] = spec("the runs drawn", expect="a list of runs")
    claims: SaClaims = spec("tolerances of the claims table")
    power_law: PowerLaw | None = spec("figure 4a's theory-only panel", default=None)

    def check(self) -> None:
        names = [r.name for r in self.runs]
        if len(set(names)) != len(names):
            raise error("runs", "runs with distinct names", names)


@dataclass(frozen=True)
class Transfer:
    """Theory only (figure E1): transfer generalisation error, eq. 46."""

    dim: int = spec("D, the input dimension of the spectrum", gt=1)
    ridge: float = spec("lambda, the ridge of the self-consistent kappa equation", ge=0)
    strengths: tuple[float, ...] = spec("feature strengths A", expect="a list of numbers", ge=0)
    overlaps: tuple[float, ...] = spec(
        "task overlaps alpha", expect="a list of numbers", ge=0, le=1
    )
    sample_sizes: tuple[int, ...] = spec("sample sizes P", expect="a list of integers", gt=0)


@dataclass(frozen=True)
class TransferFigure:
    transfer: Transfer = spec("the theory's parameters")
    claims: SaClaims = spec("tolerances of the claims table")
