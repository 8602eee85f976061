"""Training, spawning and the run store together: children vmapped, resume after SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntkpaper import params as P
from ntkpaper import plan, store
from ntkpaper import train as T
from ntkpaper.jobs import execute
from ntkpaper.jobs.setup import setup

from .conftest import ROOT, write_tiny_kernel


def tiny_runs():
    return plan.integrated_runs(P.load_all("quick")["tiny-fig"])


# Children start from a trained snapshot, and vmapped children equal children trained alone:
# tests/test_runners.py (through the runners, from the store).


def test_learning_rate_schedule_drops_at_the_given_epochs():
    train = P.Train(
        seed=0,
        epochs=3,
        lr=0.5,
        momentum=0.0,
        weight_decay=0.0,
        lr_drops=(1.0, 2.0),
        lr_decay=0.1,
        snapshots=(P.Segment(1, 3),),
    )
    tx = T.optimizer(train, spe=4)
    params = {"w": jnp.zeros(())}
    state = tx.init(params)
    seen = []
    for _ in range(12):
        upd, state = tx.update({"w": jnp.ones(())}, state, params)
        seen.append(-float(upd["w"]))  # lr * gradient, gradient 1
    np.testing.assert_allclose(seen, [0.5] * 4 + [0.05] * 4 + [0.005] * 4, rtol=1e-6)


def test_weight_decay_and_momentum_follow_sgd():
    train = P.Train(
        seed=0,
        epochs=1,
        lr=0.1,
        momentum=0.9,
        weight_decay=0.01,
        lr_drops=(),
        lr_decay=1.0,
        snapshots=(P.Segment(1, 1),),
    )
    tx = T.optimizer(train, spe=10)
    w, g = jnp.array(2.0), jnp.array(0.5)
    state, trace, x = tx.init({"w": w}), 0.0, 2.0
    for _ in range(3):
        upd, state = tx.update({"w": g}, state, {"w": jnp.array(x)})
        trace = 0.9 * trace + (0.5 + 0.01 * x)  # heavy-ball on the L2-regularised gradient
        np.testing.assert_allclose(float(upd["w"]), -0.1 * trace, rtol=1e-6)
        x = x + float(upd["w"])


def test_diverging_run_stops_with_a_message(tiny_env):
    s = setup(tiny_runs().parent)
    state = T.init_state(s.model, s.tx, jax.random.PRNGKey(0), s.dataset.x_train[:1])
    state = state.replace(params=jax.tree.map(lambda a: a * jnp.nan, state.params))
    step = T.Fused(T.make_train_step(s.model, s.tx, s.data_params, s.spe), s.spe)
    with pytest.raises(T.Diverged, match="parent run X: training loss is nan.*Lower the learning"):
        T.run_steps(
            step,
            state,
            jax.random.PRNGKey(1),
            (s.dataset.x_train, s.dataset.y_train),
            0,
            [3],
            lambda *_: None,
            "parent run X",
        )


def _cli(key: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "ntkpaper", "run", key],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _kill_after(proc: subprocess.Popen, path_glob, directory, count: int) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(list(directory.glob(path_glob))) >= count:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.005)
    raise AssertionError(f"job ended before it could be killed: {proc.stdout.read().decode()}")


def _final(kind: str, key: str) -> dict:
    files = store.read_json(store.manifest_path(kind, key))["files"]
    return {f: store.load_arrays(store.run_dir(kind, key) / f) for f in files}


@pytest.mark.workflow
def test_parent_children_and_linearised_killed_resume_to_the_same_numbers(
    tiny_env, tiny_built, monkeypatch
):
    write_tiny_kernel(tiny_env / "params")
    r = tiny_runs()
    lin = plan.kernel_runs(P.load_all("quick")["tiny-kernel"]).linearised
    assert lin.deps[0].key == r.parent.key  # same parent, shared
    env = dict(os.environ)
    child = r.children[0]
    # uninterrupted: the same runs of the shared workflow run (same figures, same keys)
    clean_runs = tiny_built / "runs"
    for job in (r.parent, child, lin):
        assert (clean_runs / job.kind / job.key / "manifest.json").exists(), job.kind
    # killed with SIGKILL after the second parent snapshot, then after the children's first
    # checkpoint; each resumed by the same command
    env["NTKPAPER_RUNS"] = str(tiny_env / "runs")
    pdir = store.run_dir("parent", r.parent.key)
    _kill_after(_cli(r.parent.key, env), "snap-*.npz", pdir, 2)
    assert not store.is_complete("parent", r.parent.key)
    proc = _cli(r.parent.key, env)
    assert proc.wait() == 0
    assert b"resuming from step" in proc.stdout.read()
    cdir = store.run_dir("children", child.key)
    _kill_after(_cli(child.key, env), "checkpoint.npz", cdir, 1)
    assert not store.is_complete("children", child.key)
    proc = _cli(child.key, env)
    assert proc.wait() == 0
    assert b"resuming from step" in proc.stdout.read()
    ldir = store.run_dir("linearised", lin.key)
    _kill_after(_cli(lin.key, env), "checkpoint.npz", ldir, 1)
    assert not store.is_complete("linearised", lin.key)
    proc = _cli(lin.key, env)
    assert proc.wait() == 0
    assert b"resuming from step" in proc.stdout.read()
    for kind, key in (("parent", r.parent.key), ("children", child.key), ("linearised", lin.key)):
        resumed = _final(kind, key)
        monkeypatch.setenv("NTKPAPER_RUNS", str(clean_runs))
        clean = _final(kind, key)
        monkeypatch.setenv("NTKPAPER_RUNS", str(tiny_env / "runs"))
        assert resumed.keys() == clean.keys()
        for f in clean:
            for name in clean[f]:
                np.testing.assert_array_equal(
                    resumed[f][name], clean[f][name], err_msg=f"{f}:{name}"
                )


def test_corrupted_snapshot_is_reported_not_loaded(tiny_env):
    r = tiny_runs()
    execute(r.parent)
    snap = store.run_dir("parent", r.parent.key) / store.snapshot_name(0)
    blob = bytearray(snap.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    snap.write_bytes(bytes(blob))
    with pytest.raises(store.CorruptEntry, match="delete .* and run the same command again"):
        store.parent_history(r.parent)
