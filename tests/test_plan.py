"""Which figures share which runs, on the real parameter files (no Snakemake, no JAX).

The README promises that fort-fig4, fig8, fig9 and fig19-taylor2 share one constant-lr parent on
each profile and that fig9 reuses fig4's children, so the workflow computes each once. These
tests pin what ``params/*.yaml`` and ``plan`` make of it; a change that splits a shared run
(or merges two that must differ) fails here before anyone waits for a training run.
"""

from __future__ import annotations

import pytest

from ntkpaper import params as P
from ntkpaper import plan

from .conftest import ROOT

PROFILES = ("quick", "paper")
CONSTANT_LR = ("fort-fig4", "fort-fig8", "fort-fig9", "fort-fig19-taylor2")
KERNEL = ("fort-fig8", "fort-fig9", "fort-fig19-taylor2", "fort-fig19-wrn")


@pytest.fixture(scope="module", params=PROFILES)
def figures(request) -> dict[str, P.Figure]:
    return P.load_all(request.param, ROOT / "params")


def runs(figures):
    return {fid: plan.figure_runs(fig) for fid, fig in figures.items()}


def keys(jobs) -> tuple[str, ...]:
    return tuple(j.key for j in jobs)


def test_the_figures_are_the_readme_s(figures):
    assert {fid: f.notebook for fid, f in figures.items()} == {
        "fort-fig2": "fort_integrated_view",
        "fort-fig3": "fort_integrated_view",
        "fort-fig4": "fort_integrated_view",
        "fort-fig5": "fort_plane",
        "fort-fig6": "fort_function_distance",
        "fort-fig7": "fort_kernel_velocity",
        "fort-fig10": "fort_function_distance",
        "fort-fig11": "fort_tsne",
        "fort-fig14": "fort_geometry",
        "fort-fig21": "fort_nonlinear_advantage",
        **{
            f"fort-fig17-{a}{c}": "fort_geometry"
            for a in ("wrn", "simplecnn", "nobn")
            for c in ("", "-c100")
        },
        "fort-fig20": "fort_function_distance",
        "fort-fig8": "fort_linearised",
        "fort-fig9": "fort_nonlinear_advantage",
        "fort-fig19-taylor2": "fort_linearised",
        "fort-fig19-wrn": "fort_linearised",
        **{f"sa-fig{n}": "sa_dynamics" for n in ("1", "5", "6", "D2", "I1")},
        **{f"sa-fig{n}": "sa_linear" for n in ("3", "B1", "D1")},
        **{f"sa-fig{n}": "sa_deep_linear" for n in ("4", "D3", "D4")},
        "sa-figE1": "sa_transfer",
    }


def test_constant_lr_figures_share_one_parent_and_the_others_have_their_own(figures):
    r = runs(figures)
    shared = {r[f].parent.key for f in CONSTANT_LR}
    assert len(shared) == 1, {f: r[f].parent.key for f in CONSTANT_LR}
    own = [r[f].parent.key for f in ("fort-fig2", "fort-fig3", "fort-fig19-wrn", "fort-fig20")]
    assert len({*own, *shared}) == 5  # fig2 (drops), fig3 (CIFAR-100), the WRN, no-BN Adam
    parents = [j for j in plan.all_jobs(figures).values() if j.kind == "parent"]
    fig17 = {r[f"fort-fig17-{a}{c}"].parent.key for a in ("wrn", "simplecnn", "nobn")
             for c in ("", "-c100")}  # fmt: skip
    assert len(fig17) == (3 if figures["fort-fig2"].profile == "quick" else 6)
    assert len(parents) == 5 + len(fig17) and not fig17 & {*own, *shared}


def test_fig9_and_the_other_constant_lr_figures_reuse_fig4_s_children(figures):
    r = runs(figures)
    fig4 = r["fort-fig4"]
    for fid in ("fort-fig8", "fort-fig9", "fort-fig19-taylor2"):
        assert keys(r[fid].children) == keys(fig4.children), fid
        assert keys(r[fid].children_measure) == keys(fig4.children_measure), fid
    # the integrated figures with their own parents share no children
    for fid in ("fort-fig2", "fort-fig3"):
        assert not set(keys(r[fid].children)) & set(keys(fig4.children)), fid


def test_fig9_draws_fig8_s_runs_and_taylor2_only_its_low_lr_children(figures):
    r = runs(figures)
    fig8, fig9, taylor2 = r["fort-fig8"], r["fort-fig9"], r["fort-fig19-taylor2"]
    assert fig9.linearised.key == fig8.linearised.key
    assert keys(fig9.low_lr) == keys(fig8.low_lr)
    assert keys(fig9.jobs()) == keys(fig8.jobs())  # fig9 costs one notebook, nothing more
    assert taylor2.linearised.key != fig8.linearised.key  # the order-2 Taylor model
    assert (
        taylor2.linearised.spec.linearised.degree == 2
        and fig8.linearised.spec.linearised.degree == 1
    )
    # low-lr children at a t~ both figures use are one run
    by_t8 = {j.spec.spawn_epoch: j.key for j in fig8.low_lr}
    for j in taylor2.low_lr:
        assert by_t8.get(j.spec.spawn_epoch, j.key) == j.key, j.spec.spawn_epoch
    assert {j.spec.spawn_epoch for j in taylor2.low_lr} & set(by_t8)


def test_only_the_integrated_figures_measure_their_parent(figures):
    r = runs(figures)
    measured = [j for j in plan.all_jobs(figures).values() if j.kind == "parent_measure"]
    integrated = [f for f in r if f.startswith("fort-fig17")]
    integrated += ["fort-fig2", "fort-fig3", "fort-fig4", "fort-fig20"]
    assert {j.spec.parent for j in measured} == {r[f].parent.key for f in integrated}
    assert len(measured) == len({r[f].parent.key for f in integrated})
    linearised = [j for j in plan.all_jobs(figures).values() if j.kind == "linearised"]
    assert len(linearised) == 4  # fig8 = fig9, taylor2, WRN, fig21 (no BN, Adam)


def test_every_job_names_the_runs_it_reads(figures):
    """Each job's spec points at its dependencies' keys, and every dependency is a job of the
    workflow (so Snakemake builds it); a children job's spawn epoch is one of the parent's
    snapshots."""
    jobs = plan.all_jobs(figures)
    for key, job in jobs.items():
        assert job.key == key
        for dep in job.deps:
            assert dep.key in jobs, (job.kind, dep.kind)
        if job.kind in ("parent", "alignment"):
            assert job.deps == ()
            continue
        if job.kind == "tsne":
            parent, *children = job.deps
            assert (job.spec.parent, job.spec.children) == (parent.key, keys(children))
            assert {d.kind for d in children} == {"children"} and parent.kind == "parent"
            continue
        (dep,) = job.deps
        ref = (
            "children"
            if job.kind in ("children_measure", "plane", "children_geometry")
            else "parent"
        )
        assert getattr(job.spec, ref) == dep.key, job.kind
        assert dep.kind == ref
        if job.kind == "children":
            assert job.spec.spawn_epoch in dep.spec.train.snapshot_epochs()


def test_the_keys_do_not_depend_on_the_figure_or_the_claims(figures):
    """Renaming a figure or changing a claim tolerance touches no run."""
    import dataclasses

    for fid, fig in figures.items():
        renamed = dataclasses.replace(fig, id=fid + "-copy")
        claims = dataclasses.replace(
            fig,
            params=dataclasses.replace(
                fig.params,
                claims=dataclasses.replace(
                    fig.params.claims,
                    **{dataclasses.fields(fig.params.claims)[0].name: 0.123},
                ),
            ),
        )
        want = keys(plan.figure_runs(fig).jobs())
        assert keys(plan.figure_runs(renamed).jobs()) == want
        assert keys(plan.figure_runs(claims).jobs()) == want


@pytest.mark.parametrize("profile", P.PROFILES)
def test_fig8_standard_schedule_is_fig2_s_parent(profile):
    """The standard-schedule baseline of the kernel figures costs nothing: fig2's parent."""
    figures = P.load_all(profile)
    fig2 = plan.figure_runs(figures["fort-fig2"]).parent
    for fid in ("fort-fig8", "fort-fig9", "fort-fig19-taylor2"):
        runs = plan.figure_runs(figures[fid])
        assert runs.standard.key == fig2.key and runs.standard in runs.jobs(), fid


LANDSCAPE = ("fort-fig5", "fort-fig6", "fort-fig7", "fort-fig10", "fort-fig11")


def test_landscape_figures_read_fig4_s_runs_and_add_only_their_own(figures):
    """fig5, 6, 7, 10 and 11 draw fig4's parent, children and measurements (computed once);
    fig5 adds one plane per spawn epoch of its own, fig11 one t-SNE; fig20 has its own runs."""
    r = runs(figures)
    fig4 = r["fort-fig4"]
    for fid in LANDSCAPE:
        assert keys(r[fid].jobs()[: len(fig4.jobs())]) == keys(fig4.jobs()), fid
    assert [j.kind for j in r["fort-fig5"].extra] == ["plane", "plane"]
    spawn = {j.key: j.spec.spawn_epoch for j in fig4.children}
    planes = [spawn[j.spec.children] for j in r["fort-fig5"].extra]
    assert planes == list(figures["fort-fig5"].params.plane.spawn_epochs)
    (tsne,) = r["fort-fig11"].extra
    assert tsne.spec.children == keys(fig4.children) and tsne.spec.parent == fig4.parent.key
    for fid in ("fort-fig6", "fort-fig7", "fort-fig10"):
        assert r[fid].extra == ()
    fig20 = r["fort-fig20"]
    assert fig20.parent.key != fig4.parent.key
    assert fig20.parent.spec.train.optimizer == "adam" and not fig20.parent.spec.model.batch_norm


def test_silent_alignment_runs_are_their_own_and_one_per_run(figures):
    """Each run of an Atanasov et al. figure is one alignment job (its sigmas vmapped inside);
    runs that are the same in two files are one job; figure E.1 is theory only."""
    r = runs(figures)
    for fid, fig in figures.items():
        if not fid.startswith("sa-"):
            continue
        jobs = r[fid].jobs()
        assert [j.kind for j in jobs] == ["alignment"] * len(
            fig.params.runs if fid != "sa-figE1" else ()
        )
        for job, run in zip(jobs, getattr(fig.params, "runs", ())):
            assert job.spec.network.sigmas == run.network.sigmas and job.deps == ()
    assert r["sa-figE1"].jobs() == []
    datasets = {
        j.spec.data.dataset for j in plan.all_jobs(figures).values() if j.kind == "alignment"
    }
    assert datasets <= {"digits", "synthetic", "mnist", "cifar10"}


def test_fig14_measures_fig2_s_runs_further(figures):
    """fig14 reads fig2's parent, children and measurements and adds their geometry: one
    parent_geometry job and one children_geometry job per spawn epoch."""
    r = runs(figures)
    fig2, fig14 = r["fort-fig2"], r["fort-fig14"]
    assert keys(fig14.jobs()[: len(fig2.jobs())]) == keys(fig2.jobs())
    parent, *children = fig14.extra
    assert parent.kind == "parent_geometry" and parent.spec.parent == fig2.parent.key
    assert [j.spec.children for j in children] == list(keys(fig2.children))


def test_fig21_reuses_fig20_s_parent_and_children(figures):
    r = runs(figures)
    fig20, fig21 = r["fort-fig20"], r["fort-fig21"]
    assert fig21.parent.key == fig20.parent.key
    assert keys(fig21.children) == keys(fig20.children)
    assert keys(fig21.children_measure) == keys(fig20.children_measure)
    assert fig21.linearised.spec.parent == fig20.parent.key


def test_fig17_on_cifar100_is_its_cifar10_file_on_quick(figures):
    """fort-fig17-*-c100 extend fort-fig17-* and change only the paper's dataset: on quick they
    read the same runs (computed once), on paper their own CIFAR-100 ones."""
    r = runs(figures)
    for a in ("wrn", "simplecnn", "nobn"):
        base, c100 = r[f"fort-fig17-{a}"], r[f"fort-fig17-{a}-c100"]
        same = keys(base.jobs()) == keys(c100.jobs())
        assert same == (figures["fort-fig2"].profile == "quick"), a
        assert c100.parent.spec.data.dataset == (
            "digits" if figures["fort-fig2"].profile == "quick" else "cifar100"
        )


def test_children_train_together_by_parent_and_optimiser(figures):
    """``trained_together``: every children run in exactly one group; a group holds one parent's
    children at one optimiser (its schedule, or one low lr), by spawn epoch. The constant-lr
    parent of fig4/8/9/19-taylor2 gets two groups: its barrier children and its low-lr children
    (fig8's and taylor2's, at the same low lr, together)."""
    jobs = plan.all_jobs(figures)
    children = [j for j in jobs.values() if j.kind == "children"]
    groups = plan.trained_together(children)
    assert sorted(j.key for g in groups for j in g) == sorted(j.key for j in children)
    for g in groups:
        assert len({(j.spec.parent, j.spec.low_lr) for j in g}) == 1
        epochs = [j.spec.spawn_epoch for j in g]
        assert epochs == sorted(epochs)
    assert len({(g[0].spec.parent, g[0].spec.low_lr) for g in groups}) == len(groups)
    parent = runs(figures)["fort-fig4"].parent.key
    mine = [g for g in groups if g[0].spec.parent == parent]
    assert sorted(g[0].spec.low_lr is None for g in mine) == [False, True]
    fig4 = runs(figures)["fort-fig4"].children
    (barrier,) = (g for g in mine if g[0].spec.low_lr is None)
    assert keys(barrier) == keys(fig4)
    assert len(barrier) > 1  # several spawn epochs in one job
    assert plan.trained_together([jobs[k] for k in keys(fig4)[:1]]) == [fig4[:1]]
