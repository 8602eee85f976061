"""What a notebook reads: a figure's runs as the tables behind its panels.

Each view loads complete runs from the store (never trains) and returns one pandas table per
panel; ``claims`` checks the paper's claims against those tables.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ntkpaper import params as P
from ntkpaper import plan, store


class RunsMissing(RuntimeError):
    """A figure's runs are not (all) in the store; the message says how to produce them."""


def load(figure_id: str, profile: str, runs: bool = True) -> P.Figure:
    """The validated figure ``params/<figure_id>.yaml`` for ``profile``; with ``runs``, refuse
    (``RunsMissing``) unless every run it reads is complete: a notebook opened before the
    workflow produced its runs says which command does, and never trains by itself."""
    fig = P.load_figure(P.params_dir() / f"{figure_id}.yaml", profile)
    missing = [j for j in plan.figure_runs(fig).jobs() if not store.is_complete(j.kind, j.key)]
    if runs and missing:
        target = store.results_dir(profile, figure_id) / f"{figure_id}.pdf"
        names = ", ".join(f"{j.kind} {j.key}" for j in missing[:4])
        raise RunsMissing(
            f"{figure_id} ({profile}) reads {len(missing)} run(s) not yet in {store.runs_dir()} "
            f"({names}{', ...' if len(missing) > 4 else ''}). Produce them, and this figure, with: "
            f'make figures ARGS="{target} --config profile={profile}"'
        )
    return fig


def integrated_view(fig: P.Figure) -> dict[str, pd.DataFrame]:
    """Fort et al. figures 2-4, panels A-E, as tables.

    A: parent errors and losses by snapshot epoch. B: error barrier (test, train) between
    two children at the end, by spawn epoch. C, D: ReLU and kernel distance between the
    parent at every pair of snapshot epochs. E: ReLU, function-space, kernel and weight
    distance between two children at the end, by spawn epoch. ``velocity``: kernel and ReLU
    velocity at the fixed ``parent.pair_dt``, by epoch.
    """
    r = plan.integrated_runs(fig)
    pm = store.measurements(r.parent_measure)
    epoch = np.round(pm["epoch"], 4)
    a = pd.DataFrame(
        {k: pm[k] for k in ("train_error", "test_error", "train_loss", "test_loss")},
        index=pd.Index(epoch, name="epoch"),
    )
    cms = [store.measurements(j) for j in r.children_measure]
    spawn = pd.Index([float(m["spawn_epoch"]) for m in cms], name="spawn_epoch")
    b = pd.DataFrame(
        {
            "barrier_test": [float(m["barrier_test"]) for m in cms],
            "barrier_train": [float(m["barrier_train"]) for m in cms],
        },
        index=spawn,
    )
    e = pd.DataFrame(
        {
            k: [float(m[k]) for m in cms]
            for k in (
                "relu_distance",
                "function_distance",
                "kernel_distance",
                "weight_distance",
                "weight_distance_relative",
            )
        },
        index=spawn,
    )
    e["child_test_error"] = [float(np.mean(m["test_error"])) for m in cms]
    labels = pd.Index(epoch, name="epoch")
    c = pd.DataFrame(np.asarray(pm["relu_distance"]), index=labels, columns=epoch)
    d = pd.DataFrame(np.asarray(pm["kernel_distance"]), index=labels, columns=epoch)
    dt, half_step = fig.params.parent.pair_dt, 0.5 * pm["epoch"][-1] / pm["step"][-1]
    f = pd.DataFrame(
        {"kernel": velocity(d, dt, half_step), "relu": velocity(c, dt, half_step)}
        if dt
        else {"kernel": [], "relu": []}
    )
    f.index.name = "epoch"
    return {"panel_A": a, "panel_B": b, "panel_C": c, "panel_D": d, "panel_E": e, "velocity": f}


def velocity(distance: pd.DataFrame, dt: float, tolerance: float = 1e-6) -> pd.Series:
    """v(t) = S(t, t') / (t' - t) for every snapshot t with a snapshot t' = t + dt (within
    ``tolerance``: schedules are rounded to whole steps). At one fixed dt, unlike the gaps
    between consecutive snapshots, which mix the schedule into the velocity (S ~ theta^2 / 2
    for small angles, so S / dt grows with dt at constant angular speed)."""
    t = distance.index.to_numpy(dtype=float)
    m = distance.to_numpy()
    rows = {}
    for i, ti in enumerate(t):
        j = int(np.argmin(np.abs(t - ti - dt)))
        if j > i and abs(t[j] - ti - dt) <= tolerance:
            rows[ti] = m[i, j] / (t[j] - ti)
    return pd.Series(rows, dtype=float)


def kernel_view(fig: P.Figure) -> dict[str, pd.DataFrame]:
    """Fort et al. figures 8, 9 and 19 as tables.

    ``t_tilde``: by t~, the final test error of the Taylor model trained from the parent at
    t~ (``linearised``), of the low-learning-rate children spawned at t~ (``low_lr``, mean
    over children; ``low_lr_converged`` the fraction of them that converged before the cap,
    ``low_lr_epochs`` how long they trained), the fully trained constant-lr parent
    (``baseline``), full training on the
    standard schedule (``standard``, NaN without one), the nonlinear advantage
    (linearised - low_lr) and, where children at the parent's lr were spawned at t~, their
    error barrier. ``curves``: linearised test error by epoch of its training (rows) and t~.
    """
    r = plan.kernel_runs(fig)
    lin = store.final(r.linearised)
    t = pd.Index(np.round(lin["spawn_epoch"], 4), name="t_tilde")
    finals = [store.final(j) for j in r.low_lr]
    low = [float(np.mean(f["test_error"])) for f in finals]
    baseline = float(store.parent_history(r.parent)["test_error"][-1])
    table = pd.DataFrame({"linearised": lin["test_error"][-1], "low_lr": low}, index=t)
    table["baseline"] = baseline
    table["standard"] = (
        float(store.parent_history(r.standard)["test_error"][-1]) if r.standard else np.nan
    )
    table["advantage"] = table["linearised"] - table["low_lr"]
    table["low_lr_converged"] = [float(np.mean(np.isfinite(f["converged_epoch"]))) for f in finals]
    table["low_lr_epochs"] = [float(f["epochs_trained"]) for f in finals]
    barrier = barriers(r.children_measure)
    table["barrier"] = [barrier.get(float(e), np.nan) for e in t]
    curves = pd.DataFrame(
        lin["test_error"], index=pd.Index(np.round(lin["epoch"], 4), name="epoch"), columns=t
    )
    return {"t_tilde": table, "curves": curves}


def barriers(children_measure) -> dict[float, float]:
    """Test error barrier between two children, by spawn epoch."""
    ms = [store.measurements(j) for j in children_measure]
    return {float(m["spawn_epoch"]): float(m["barrier_test"]) for m in ms}


def function_distance_view(fig: P.Figure) -> dict[str, pd.DataFrame]:
    """Fort et al. figures 6, 10 and 20 as tables.

    ``spawn``: by spawn epoch, the children's function-space distance at the end, its
    average over spawn epochs within +- ``distance.smooth_window`` / 2 (``smoothed``; NaN
    without a window), their error barrier (test, train) and mean test error.
    """
    view = integrated_view(fig)
    b, e = view["panel_B"], view["panel_E"]
    t = pd.DataFrame({"function_distance": e["function_distance"]}, index=e.index)
    w = fig.params.distance.smooth_window
    t["smoothed"] = smooth(t.index, t["function_distance"], w) if w else np.nan
    t["barrier_test"], t["barrier_train"] = b["barrier_test"], b["barrier_train"]
    t["child_test_error"] = e["child_test_error"]
    return {"spawn": t}


def smooth(epochs: np.ndarray, values: np.ndarray, window: float) -> np.ndarray:
    """Centred window average: at each epoch t, the mean of the values at epochs within
    window / 2 of t (Fort et al. figure 10)."""
    t, v = np.asarray(epochs, float), np.asarray(values, float)
    return np.array([v[np.abs(t - ti) <= window / 2 + 1e-9].mean() for ti in t])


def velocity_view(fig: P.Figure) -> dict[str, pd.DataFrame]:
    """Fort et al. figure 7 as tables: ``velocity`` (kernel and ReLU velocity at the fixed
    ``parent.pair_dt``, by epoch), ``barrier`` (by spawn epoch) and ``both``: each spawn
    epoch up to ``velocity.zoom_until`` with the kernel velocity at the snapshot of its step
    (epochs are rounded to whole steps: 0.2 epochs of 22 steps is step 4)."""
    view = integrated_view(fig)
    v, b = view["velocity"], view["panel_B"]
    h = store.parent_history(plan.integrated_runs(fig).parent)
    spe = h["step"][-1] / h["epoch"][-1]
    t = v.index.to_numpy()
    rows = {}
    for e, barrier in b["barrier_test"].items():
        i = int(np.argmin(np.abs(t - e))) if len(t) else -1
        if e <= fig.params.velocity.zoom_until and i >= 0 and abs(t[i] - e) < 0.5 / spe:
            rows[e] = {"kernel_velocity": v["kernel"].iloc[i], "barrier_test": barrier}
    both = pd.DataFrame.from_dict(rows, orient="index", columns=["kernel_velocity", "barrier_test"])
    both.index.name = "spawn_epoch"
    return {"velocity": v, "barrier": b, "both": both}


def plane_view(fig: P.Figure) -> dict:
    """Fort et al. figure 5: ``planes`` (by spawn epoch, the arrays of ``runs/plane``) and
    ``summary``: by spawn epoch, the test errors of the spawn point and of the children, the
    test error barrier between the children (their measurement), the mean absolute gap over
    the grid between the error of the tangent plane at the spawn point (at child 0) and the
    network's, and the largest distance of the plane's image in function space from the
    plane through the three networks' functions (root mean square over test inputs)."""
    r = plan.landscape_runs(fig)
    barrier = barriers(r.children_measure)
    planes, rows = {}, []
    for job in r.extra:
        a = store.output(job, "plane.npz")
        e = float(a["spawn_epoch"])
        planes[e] = a
        w = a["error_weight"]
        gap = {at: np.abs(a[f"error_tangent_{at}"] - w) for at in ("spawn", "child")}
        rows.append({
            "spawn_epoch": e,
            "error_spawn": a["corner_error"][0],
            "error_children": float(np.mean(a["corner_error"][1:])),
            "barrier_test": barrier.get(e, np.nan),
            "tangent_gap_spawn": float(gap["spawn"].mean()),
            "tangent_gap_child": float(gap["child"].mean()),
            "off_plane_max": float(a["function_off_plane"].max()),
        })  # fmt: skip
    return {"planes": planes, "summary": pd.DataFrame(rows).set_index("spawn_epoch")}


def tsne_view(fig: P.Figure) -> dict[str, pd.DataFrame]:
    """Fort et al. figure 11: ``points`` (t-SNE coordinates, lineage: spawn epoch (NaN for
    the parent) and child (-1 for the parent), epoch) and ``apart`` (by spawn epoch, the
    distance between the two children's predicted probabilities at the end, root mean
    square over test inputs; the barrier between them)."""
    r = plan.landscape_runs(fig)
    (job,) = r.extra
    a = store.output(job, "tsne.npz")
    points = pd.DataFrame({
        "x": a["embedding"][:, 0], "y": a["embedding"][:, 1], "spawn_epoch": a["spawn_epoch"],
        "child": a["child"], "epoch": a["epoch"],
    })  # fmt: skip
    barrier = barriers(r.children_measure)
    spawn = pd.Index(a["children_spawn_epoch"], name="spawn_epoch")
    apart = pd.DataFrame({"children_apart": a["children_apart"]}, index=spawn)
    apart["barrier_test"] = [barrier.get(float(e), np.nan) for e in spawn]
    return {"points": points, "apart": apart}


# ---------------------------------------------------------------------------------------
# Silent alignment (Atanasov et al. 2022)
# ---------------------------------------------------------------------------------------

LOGGED = ("loss", "alignment", "kernel_norm", "cos", "q", "r")


def crossing(time: np.ndarray, values: np.ndarray, level: float, rising: bool) -> float:
    """The first time ``values`` reaches ``level`` (from below if ``rising``, else from
    above), linearly interpolated between the logged times around it; NaN if never."""
    v = np.asarray(values, float) * (1 if rising else -1)
    level = level * (1 if rising else -1)
    i = np.flatnonzero(v >= level)
    if not len(i):
        return float("nan")
    j = int(i[0])
    if j == 0:
        return float(time[0])
    f = (level - v[j - 1]) / (v[j] - v[j - 1])
    return float(time[j - 1] + f * (time[j] - time[j - 1]))


def silent_view(fig: P.Figure, before: float | None = None) -> dict:
    """Atanasov et al. figures as tables: ``curves`` (run, sigma, step, time and the logged
    loss, alignment, kernel norm, cos, q, r), ``predictions`` (network, final-NTK and
    initial-NTK predictions on test points) and ``summary`` by (run, sigma): times at which
    alignment reaches ``before`` (default ``claims.before``) of its final value
    (``t_align``; every time interpolated between logged ones, ``crossing``), the loss falls
    to ``before`` of its initial value (``t_loss``) and to half (``t_half``), cos reaches 1/2
    (``t_cos``); final alignment and the linear-network theory's maximal one (eqs. 42, 53);
    RMS gaps of the final- and initial-NTK predictors to the network; test error; the final
    NTK's eigenvalue ratio (over the inputs' rank) and eq. 37's.
    Two-layer linear runs with one output add the closed forms: ``loss_theory``, ``q_theory``,
    ``r_theory`` in ``curves`` (appendix B.3, eqs. 27-28, from the measured q0, r0, s) and
    ``t_half_theory``. ``arrays``: each run's stored arrays, by name."""
    from ntkpaper import theory

    before = fig.params.claims.before if before is None else before
    curves, preds, rows, arrays = [], [], [], {}
    for spec, job in zip(fig.params.runs, plan.silent_runs(fig).runs):
        a = store.output(job, "run.npz")
        arrays[spec.name] = a
        net, t = spec.network, a["time"]
        x, y, s = a["x"], a["y"], float(a["teacher_norm"])
        max_align = theory.final_alignment(x.astype(np.float64), y.astype(np.float64), net.depth)
        rank = np.linalg.matrix_rank(x)
        ratio_theory = theory.ntk_eigenvalue_ratio(spec.train.layer_lr or (1.0,) * net.depth)
        closed = net.activation == "linear" and net.depth == 2 and y.shape[1] == 1
        for i, sigma in enumerate(a["sigma"]):
            c = pd.DataFrame({"step": a["step"], "time": t,
                              **{k: a[k][i] for k in LOGGED if k in a}})  # fmt: skip
            loss, align = c["loss"].to_numpy(), c["alignment"].to_numpy()
            row = {
                "run": spec.name, "sigma": float(sigma), "depth": net.depth,
                "activation": net.activation,
                "silent_expected": fig.params.claims.silent if spec.silent is None else spec.silent,
                "t_align": crossing(t, align, before * align[-1], rising=True),
                "t_loss": crossing(t, loss, before * loss[0], rising=False),
                "t_half": crossing(t, loss, 0.5 * loss[0], rising=False),
                "t_cos": crossing(t, c["cos"], 0.5, rising=True) if "cos" in c else np.nan,
                "alignment_final": align[-1], "alignment_theory": max_align,
            }  # fmt: skip
            net_p, fin, ini = (
                a[f"predict_{k}"][i] for k in ("network", "final_ntk", "initial_ntk")
            )
            rms = lambda u: float(np.sqrt(np.mean((u - net_p) ** 2)))  # noqa: E731
            row["rms_final_ntk"], row["rms_initial_ntk"] = rms(fin), rms(ini)
            yt = a["y_test"]
            wrong = (np.sign(net_p[:, 0]) != np.sign(yt[:, 0])) if yt.shape[1] == 1 else (
                np.argmax(net_p, 1) != np.argmax(yt, 1))  # fmt: skip
            row["test_error"] = float(np.mean(wrong))
            if a["kernel_final"].size:
                eig = np.sort(np.linalg.eigvalsh(a["kernel_final"][i]))[::-1][:rank]
                row["eigen_ratio"] = float(eig[0] / eig[-1])
            row["eigen_ratio_theory"] = ratio_theory
            if closed:
                q0, r0 = float(c["q"].iloc[0]), float(c["r"].iloc[0])
                c["loss_theory"] = theory.loss_two_layer(t, s, q0, r0)
                c["q_theory"], c["r_theory"] = theory.q_r_two_layer(t, s, q0, r0)
                row["t_half_theory"] = theory.t_half_two_layer(s, 0.5 * (q0 + r0))
                row["teacher_norm"] = s
            rows.append(row)
            curves.append(c.assign(run=spec.name, sigma=float(sigma)))
            p = {"network": net_p, "final_ntk": fin, "initial_ntk": ini, "target": yt}
            p = pd.DataFrame({k: v[:, 0] for k, v in p.items()})  # the first output
            preds.append(p.assign(run=spec.name, sigma=float(sigma)))
    return {
        "curves": pd.concat(curves, ignore_index=True),
        "predictions": pd.concat(preds, ignore_index=True),
        "summary": pd.DataFrame(rows),
        "arrays": arrays,
    }


def gram_view(fig: P.Figure) -> dict:
    """Figure D.4: ``table``, by run, the kernel distance S between the final NTK Gram matrix
    (first sigma) and the theory's (eq. 42 with the network's depth and the data's
    minimum-norm beta, traced over outputs), and between it and X X^T; ``measured`` and
    ``theory``: the deepest run's two Gram matrices, examples sorted by target."""
    from ntkpaper import metrics, theory

    rows, grams = [], {}
    for spec, job in zip(fig.params.runs, plan.silent_runs(fig).runs):
        a = store.output(job, "run.npz")
        x, y = a["x"].astype(np.float64), a["y"].astype(np.float64)
        k = theory.final_ntk(x, x, theory.min_norm_fit(x, y), spec.network.depth)
        k = np.einsum("pqcc->pq", k) / k.shape[-1]
        k_inf = a["kernel_final"][0]
        rows.append({
            "run": spec.name, "depth": spec.network.depth,
            "distance_to_theory": float(metrics.kernel_distance(k, k_inf)),
            "distance_to_inputs": float(metrics.kernel_distance(x @ x.T, k_inf)),
        })  # fmt: skip
        order = np.argsort(y[:, 0], kind="stable")
        grams[spec.network.depth] = (
            spec.name,
            k_inf[np.ix_(order, order)],
            k[np.ix_(order, order)],
        )
    name, measured, th = grams[max(grams)]
    return {"table": pd.DataFrame(rows).set_index("run"), "run": name, "measured": measured,
            "theory": th}  # fmt: skip


def power_law_view(fig: P.Figure) -> pd.DataFrame:
    """Figure 4a, theory only: by sigma and depth, t_1/2 of the integrated ODE and of the
    small-sigma power law, with c0 = sigma^L (balanced layers of size sigma; docs/theory.md)."""
    from ntkpaper import theory

    pl = fig.params.power_law
    rows = [
        {"sigma": s, "depth": d, "ode": theory.t_half_deep_linear(pl.teacher_norm, s**d, d),
         "power_law": theory.t_half_power_law(pl.teacher_norm, s**d, d)}
        for d in pl.depths for s in pl.sigmas
    ]  # fmt: skip
    return pd.DataFrame(rows)


def transfer_view(fig: P.Figure) -> pd.DataFrame:
    """Figure E.1 (theory only): the transfer generalisation error (eq. 46, ``theory``) for
    every sample size P, feature strength A and task overlap alpha."""
    from ntkpaper import theory

    t = fig.params.transfer
    rows = [
        {"P": p, "A": a, "alpha": al, "error": theory.transfer_error(p, a, al, t.dim, t.ridge)}
        for p in t.sample_sizes for a in t.strengths for al in t.overlaps
    ]  # fmt: skip
    return pd.DataFrame(rows)


def geometry_view(fig: P.Figure) -> dict[str, pd.DataFrame]:
    """Fort et al. figures 14 and 17 as tables: figures 2-4's (``integrated_view``) and
    ``hessian`` (by snapshot epoch: lambda_max, the learning rate, 2 / lr and the escape
    threshold lr lambda_max - 2), ``logit_gradient`` (1 - centroid alignment between the parent
    at every pair of snapshot epochs) and, in ``panel_E``, the children's logit-gradient
    distance at the end by spawn epoch."""
    view = integrated_view(fig)
    r = plan.landscape_runs(fig)
    parent, *children = r.extra
    g = store.output(parent, "geometry.npz")
    epoch = pd.Index(np.round(g["epoch"], 4), name="epoch")
    h = pd.DataFrame({"lambda_max": g["lambda_max"], "lr": g["lr"]}, index=epoch)
    h["two_over_lr"] = 2 / h["lr"]
    h["escape"] = h["lr"] * h["lambda_max"] - 2
    lg = pd.DataFrame(np.asarray(g["logit_gradient_distance"]), index=epoch, columns=epoch)
    d = {float(m["spawn_epoch"]): float(m["logit_gradient_distance"])
         for m in (store.output(j, "geometry.npz") for j in children)}  # fmt: skip
    view["panel_E"]["logit_gradient_distance"] = [d[e] for e in view["panel_E"].index]
    return {**view, "hessian": h, "logit_gradient": lg}
