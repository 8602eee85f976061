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


def panel_grid(rows: int, cols: int, width: float = 3.2, height: float = 3.0):
    """``rows`` x ``cols`` panels (Fort et al. figure 5: one row per spawn epoch)."""
    sns.set_theme(style="white", context="paper")
    fig, axes = plt.subplots(
        rows, cols, figsize=(width * cols, height * rows), constrained_layout=True, squeeze=False
    )
    return fig, axes


def error_plane(ax, x, y, error, corners, title: str, vmax: float, labels=("spawn", "1", "2")):
    """Test error over a plane as filled contours (shared colour scale up to ``vmax``), the
    three networks marked at ``corners`` (3, 2). ``x``, ``y``: axes (R,) or meshes (R, R)."""
    levels = np.linspace(0, vmax, 21)
    cs = ax.contourf(x, y, np.minimum(error, vmax), levels=levels, cmap="viridis_r")
    for (cx, cy), label, marker in zip(corners, labels, ("*", "o", "o")):
        ax.plot(cx, cy, marker, color="red", markeredgecolor="white", markersize=9)
        ax.annotate(label, (cx, cy), textcoords="offset points", xytext=(5, 5), color="red")
    ax.set(title=title, xticks=[], yticks=[])
    ax.set_aspect("equal", adjustable="datalim")
    return cs


def embedding(ax, points, colour: str = "epoch"):
    """t-SNE points: the parent as a grey line through its snapshots, each child's stages as
    a line from its spawn point, coloured by ``colour`` (epoch)."""
    parent = points[points.child < 0].sort_values("epoch")
    ax.plot(parent.x, parent.y, "-", color="0.6", lw=1, zorder=1)
    sc = ax.scatter(points.x, points.y, c=points[colour], cmap="viridis", s=12, zorder=2)
    kids = points[points.child >= 0]
    spawns = list(np.unique(kids.spawn_epoch))
    for (spawn, _), g in kids.groupby(["spawn_epoch", "child"]):
        start = parent.iloc[[int(np.argmin(np.abs(parent.epoch.to_numpy() - spawn)))]]
        g = g.sort_values("epoch")
        color = plt.cm.tab10(spawns.index(spawn) % 10)
        ax.plot([*start.x, *g.x], [*start.y, *g.y], "-", lw=0.6, alpha=0.6, zorder=1, color=color)
    ax.set(xticks=[], yticks=[], xlabel="t-SNE 1", ylabel="t-SNE 2")
    return sc


# ---------------------------------------------------------------------------------------
# Silent alignment (Atanasov et al. 2022)
# ---------------------------------------------------------------------------------------


def alignment_dynamics(ax, time, loss, alignment, kernel_norm, theory=None, marks=(), title=""):
    """Figure 1a: loss / initial, alignment, ||K|| / final against time (log x); the maximal
    final alignment dashed; ``marks``: (time alignment is reached, time the loss falls)."""
    t = np.asarray(time, float)
    ok = t > 0
    ax.plot(t[ok], np.asarray(loss)[ok] / np.asarray(loss)[0], color="C0", label="loss / initial")
    ax.plot(t[ok], np.asarray(alignment)[ok], color="C2", label="alignment")
    ax.plot(t[ok], np.asarray(kernel_norm)[ok] / np.asarray(kernel_norm)[-1], color="C1",
            label="||K|| / final")  # fmt: skip
    if theory is not None and np.isfinite(theory):
        ax.axhline(theory, color="C2", linestyle="--", lw=1, label="max. alignment (linear)")
    for m, color in zip(marks, ("C2", "C0")):
        if np.isfinite(m) and m > 0:
            ax.axvline(m, color=color, linestyle=":", lw=1)
    ax.set(xscale="log", xlabel="time (lr x steps)", title=title)
    ax.title.set_fontsize("small")
    ax.legend(fontsize="x-small")
    return ax


def predictions(ax, network, predictors: dict):
    """Figure 1b: kernel-regression predictions against the network's on test points."""
    network = np.asarray(network)
    for i, (label, p) in enumerate(predictors.items()):
        ax.scatter(network, p, s=8, alpha=0.7, color=f"C{i + 3}", label=label)
    lim = [network.min(), network.max()]
    ax.plot(lim, lim, color="0.4", lw=1)
    ax.set(xlabel="network output", ylabel="kernel regression")
    ax.legend(fontsize="x-small")
    return ax


def curves(ax, table, column: str, theory: str | None = None, by: str = "sigma", linestyle="-"):
    """One line of ``column`` against time per ``by`` (sigma or run), log time; ``theory``:
    a column drawn dashed in black. A second call on the same axes (another ``linestyle``)
    adds its lines without new legend entries."""
    again = bool(ax.get_lines())
    for i, (key, g) in enumerate(table.groupby(by, sort=False)):
        g = g[g.time > 0]
        label = None if again else (f"{by} {key:g}" if isinstance(key, float) else str(key))
        ax.plot(g.time, g[column], linestyle, color=f"C{i}", label=label)
        if theory and theory in g and g[theory].notna().all():
            ax.plot(g.time, g[theory], "--", color="k", lw=0.8)
    ax.set(xscale="log", xlabel="time (lr x steps)")
    ax.set_ylabel(f"{ax.get_ylabel()} ({column} {linestyle})" if again else column)
    ax.legend(fontsize="x-small")
    return ax


def t_half(ax, x, measured, theory, xlabel: str, other=None, log: bool = False):
    """Figure 3b / 4c: time to half loss against the initial scale (theory dashed; ``other``:
    the time for the cosine to reach 1/2)."""
    ax.plot(x, measured, "o-", label="t_1/2 measured")
    if theory is not None:
        ax.plot(x, theory, "k--", label="t_1/2 theory")
    if other is not None:
        ax.plot(x, other, "s-", label="cos reaches 1/2")
    ax.set(xscale="log", xlabel=xlabel, ylabel="time", yscale="log" if log else "linear")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(fontsize="x-small")
    return ax


def spike(ax, ratio, measured, theory):
    """Figure D.1b: largest over smallest eigenvalue of the final NTK against eta1 / eta2."""
    ax.plot(ratio, measured, "o", label="final NTK")
    ax.plot(ratio, theory, "k--", label="eq. 37: 1 + A/B")
    ax.set(xscale="log", yscale="log", xlabel="eta1 / eta2", ylabel="lambda_max / lambda_min")
    ax.legend(fontsize="x-small")
    return ax


def power_law(ax, table):
    """Figure 4a: t_1/2 of the integrated ODE (solid) and the power law (dashed) against sigma,
    per depth (``views.power_law_view``)."""
    for i, (depth, g) in enumerate(table.groupby("depth")):
        ax.plot(g.sigma, g.ode, color=f"C{i}", label=f"L = {depth}")
        ax.plot(g.sigma, g.power_law, "--", color=f"C{i}")
    ax.set(xscale="log", yscale="log", xlabel="sigma", ylabel="t_1/2 (theory)")
    ax.legend(fontsize="x-small")
    return ax


def depth(ax, depths, measured, theory):
    """Figure D.3b: final alignment against depth, eq. 42's dashed."""
    ax.plot(depths, measured, "o-", label="final NTK")
    ax.plot(depths, theory, "k--", label="eq. 42")
    ax.set(xlabel="depth L", ylabel="final alignment")
    ax.legend(fontsize="x-small")
    return ax


def gram(ax, k, title: str):
    """Figure D.4b: a Gram matrix (examples sorted by class) as an image."""
    ax.imshow(k, cmap="viridis")
    ax.set(title=title, xticks=[], yticks=[])
    return ax


def transfer(ax, table, by: str):
    """Figure E.1 (a, b): generalisation error against P, one line per ``by`` (A or alpha)."""
    for i, (key, g) in enumerate(table.groupby(by)):
        ax.plot(g.P, g.error, "o-", ms=3, color=f"C{i}", label=f"{by} = {key:g}")
    ax.set(xscale="log", xlabel="P", ylabel="E_g")
    ax.legend(fontsize="x-small")
    return ax


def transfer_map(ax, table, title: str):
    """Figure E.1c: E_g over (A, alpha) at one P."""
    m = table.pivot(index="A", columns="alpha", values="error")
    sns.heatmap(m, ax=ax, cmap="viridis_r", annot=True, fmt=".2f", cbar=False)
    ax.set(title=title)
    return ax


def sharpness(ax, epoch, lambda_max, two_over_lr):
    """Figure 14: top Hessian eigenvalue against epoch, with 2 / eta (dashed)."""
    ax.plot(epoch, lambda_max, "o-", ms=3, label="lambda_max")
    ax.plot(epoch, two_over_lr, "k--", label="2 / eta")
    ax.set(xlabel="epoch", ylabel="top Hessian eigenvalue", yscale="log")
    ax.legend(fontsize="x-small")
    return ax
