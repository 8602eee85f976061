"""Panels in the papers' style (seaborn): functions take arrays and an Axes, return it."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402


def panel_row(n: int, width: float = 3.4, height: float = 3.0):
    """A row of ``n`` panels labelled A, B, ... as in Fort et al. figures 2-4."""
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), constrained_layout=True)
    for i, ax in enumerate(np.atleast_1d(axes)):
        ax.set_title(chr(ord("A") + i), loc="left", fontweight="bold")
    return fig, np.atleast_1d(axes)


def training_curves(
    ax,
    epoch: np.ndarray,
    train_error: np.ndarray,
    test_error: np.ndarray,
    train_loss: np.ndarray,
    test_loss: np.ndarray,
):
    """Panel A: parent train/test error (left axis) and loss (right axis) against epoch."""
    ax.plot(epoch, train_error, label="train error", color="C0")
    ax.plot(epoch, test_error, label="test error", color="C1")
    ax.set(xlabel="epoch", ylabel="error")
    loss_ax = ax.twinx()
    loss_ax.plot(epoch, train_loss, "--", color="C0", alpha=0.6, label="train loss")
    loss_ax.plot(epoch, test_loss, "--", color="C1", alpha=0.6, label="test loss")
    loss_ax.set_ylabel("loss")
    loss_ax.grid(False)
    lines = ax.get_lines() + loss_ax.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize="small")
    return ax


def against_spawn(
    ax,
    spawn_epoch: np.ndarray,
    series: dict[str, np.ndarray],
    ylabel: str,
    log_x: bool = True,
    xlabel: str = "spawn epoch",
):
    """Panels B and E: a quantity measured on children at the end, against spawn epoch.

    With ``log_x`` the axis is symlog so that spawn epoch 0 shows beside the early epochs.
    """
    for label, y in series.items():
        ax.plot(spawn_epoch, y, "o-", label=label)
    if log_x:
        symlog_epochs(ax, spawn_epoch)
    ax.set(xlabel=xlabel, ylabel=ylabel)
    ax.legend(fontsize="small")
    return ax


def symlog_epochs(ax, epochs: np.ndarray, most: int = 7) -> None:
    """A symlog x axis (epoch 0 beside the early epochs) ticked at the data's own epochs,
    thinned to ``most`` and labelled plainly (no "10^-1" crowding the "0")."""
    epochs = np.unique(np.asarray(epochs, dtype=float))
    ax.set_xscale("symlog", linthresh=max(1e-3, float(np.min(epochs[epochs > 0], initial=1.0))))
    ticks = epochs[np.unique(np.linspace(0, len(epochs) - 1, min(most, len(epochs))).round())
                   .astype(int)]  # fmt: skip
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def velocity(ax, epoch: np.ndarray, series: dict[str, np.ndarray], marks: Sequence[float] = ()):
    """Panel F: kernel (and ReLU) velocity S(t, t + dt) / dt against t; drops dashed."""
    for label, y in series.items():
        ax.plot(epoch, y, "o-", ms=3, label=label)
    for m in marks:
        ax.axvline(m, ls="--", color="k", lw=0.8)
    ax.set(xlabel="epoch t", ylabel="distance per epoch", yscale="log")
    ax.legend(fontsize="small")
    return ax


def heatmap(ax, epoch: np.ndarray, matrix: np.ndarray, label: str, marks: Sequence[float] = ()):
    """Panels C and D: a distance between the parent at every pair of snapshot epochs.

    ``marks`` (learning-rate drops) are drawn as dashed lines. Axes are snapshot indices
    labelled by epoch, so dense early snapshots get room.
    """
    im = ax.imshow(matrix, origin="lower", cmap="viridis", interpolation="nearest")
    ticks = np.unique(np.linspace(0, len(epoch) - 1, min(6, len(epoch))).round().astype(int))
    labels = [f"{round(float(epoch[i]), 1):g}" for i in ticks]  # snapshots sit on whole steps
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    for m in marks:
        i = np.interp(m, epoch, np.arange(len(epoch)))
        ax.axvline(i, ls="--", color="w", lw=1)
        ax.axhline(i, ls="--", color="w", lw=1)
    ax.set(xlabel="epoch", ylabel="epoch")
    ax.grid(False)
    ax.figure.colorbar(im, ax=ax, label=label, shrink=0.8)
    return ax


def kernel_learning(
    ax,
    t_tilde: np.ndarray,
    linearised: np.ndarray,
    low_lr: np.ndarray,
    baseline: float,
    degree: int = 1,
    standard: float = float("nan"),
):
    """Fort et al. figure 8: final test error of the Taylor model trained from t~ (green), of
    low-lr children spawned at t~ (blue), of full training (purple: the constant-lr parent,
    dashed: the standard schedule with lr drops), initial NTK marked."""
    name = "linearised" if degree == 1 else f"Taylor order {degree}"
    ax.plot(t_tilde, linearised, "o-", color="tab:green", label=f"{name} from t~")
    ax.plot(t_tilde, low_lr, "s-", color="tab:blue", label="low-lr children from t~")
    ax.axhline(baseline, color="tab:purple", label="full training, constant lr")
    if np.isfinite(standard):
        ax.axhline(standard, color="tab:purple", ls="--", label="full training, lr drops")
    ax.axhline(linearised[0], color="tab:green", ls=":", label="initial NTK (t~ = 0)")
    symlog_epochs(ax, t_tilde)
    ax.set(xlabel="t~ (epoch of the parent)", ylabel="test error")
    ax.legend(fontsize="small")
    return ax


def learning_curves(ax, curves, xlabel: str):
    """One line per column of ``curves`` (a DataFrame indexed by epoch), coloured in order."""
    colors = sns.color_palette("viridis", curves.shape[1])
    for color, col in zip(colors, curves.columns):
        ax.plot(curves.index, curves[col], color=color, label=f"t~ = {col:g}")
    ax.set(xlabel=xlabel, ylabel="test error")
    ax.legend(fontsize="x-small", ncol=2)
    return ax


def scatter(ax, x: np.ndarray, y: np.ndarray, labels: np.ndarray, xlabel: str, ylabel: str):
    """Points (x, y) annotated with their labels (e.g. t~)."""
    ax.plot(x, y, "o")
    for xi, yi, lab in zip(x, y, labels):
        ax.annotate(
            f"{lab:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize="x-small"
        )
    ax.set(xlabel=xlabel, ylabel=ylabel)
    return ax
