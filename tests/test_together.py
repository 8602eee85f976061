"""Children of several spawn steps trained together (``spawn.run_together``) against each set
trained alone, step by step: joining mid-epoch, leaving early (convergence), programs that
split and pad the batch of models; and how the batch is split (``programs``, ``fill``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from ntkpaper import spawn
from ntkpaper import train as T

from .test_fused import DATA, close, problem


def test_programs_split_rows_into_equal_padded_batches():
    assert spawn.programs([2, 3], None) == [[0, 1], [2, 3, 4]]  # each member alone
    assert spawn.programs([2, 3], 8) == [[0, 1, 2, 3, 4]]
    assert spawn.programs([2, 3], 8, pad_to=4) == [[0, 1, 2, 3, 4, 0, 0, 0]]
    assert spawn.programs([2, 2, 2], 4) == [[0, 1, 2], [3, 4, 5]]  # fewest, equal
    assert spawn.programs([2, 2, 2], 4, pad_to=2) == [[0, 1, 2, 0], [3, 4, 5, 3]]
    for sizes, per, pad in (([1, 2, 3, 4], 3, 1), ([5, 5], 4, 8), ([34], 16, 8)):
        rows = spawn.programs(sizes, per, pad)
        assert sorted({r for p in rows for r in p}) == list(range(sum(sizes)))
        assert all(len(p) % pad == 0 and len(set(p)) <= per for p in rows)
        assert sum(len(set(p)) for p in rows) == sum(sizes)  # no row twice but padding


def test_fill_counts_the_models_that_fit_beside_the_data():
    gib = 2**30
    assert spawn.fill(per_model=2 * gib, shared=gib, memory=100 * gib, fraction=0.7) == 34
    assert spawn.fill(per_model=200 * gib, shared=gib, memory=100 * gib) == 1


def reference(step, state, key, start, end):
    for t in range(start, end):
        state, _ = step(state, key, jnp.asarray(t, jnp.int32), *ARGS)
    return state


ARGS: tuple = ()


@pytest.mark.parametrize(
    "per_program, pad_to", [(None, 1), (100, 1), (3, 4)], ids=["alone", "one", "split-padded"]
)
def test_children_trained_together_equal_each_spawn_step_trained_alone(per_program, pad_to):
    """Three sets spawned at steps 0, 3 (mid-epoch) and 7, to step 13 (5 steps per epoch, lr
    drop at 7.5): the set at 3 joins mid-epoch, the set at 7 leaves early at its first stop
    (as converged low-lr children do); each set equals the same children trained alone."""
    global ARGS
    model, tx, spe, state, x, y = problem()
    ARGS = (x, y)
    step_fn = T.make_train_step(model, tx, DATA, spe)
    fused = T.Fused(step_fn, spe, spawn.CHILDREN_AXES)
    one = jax.jit(spawn.vmap_children(step_fn))
    # the parent: a few steps of one model, so the spawn points differ
    parent = jax.jit(step_fn)
    starts, n, end = (0, 3, 7), (2, 3, 1), 13
    snaps, s = {}, state
    for t in range(max(starts) + 1):
        if t in starts:
            snaps[t] = s
        s, _ = parent(s, jax.random.PRNGKey(99), jnp.asarray(t, jnp.int32), x, y)
    seen: dict[str, list] = {}

    def member(i):
        name, start = f"set {i}", starts[i]
        stops = [t for t in range(start + 1, end + 1) if t % spe == 0 or t == end]

        def on_stop(t, st):
            seen.setdefault(name, []).append(t)
            return name == "set 2"  # converged at its first stop

        keys = spawn.child_keys(i, start, n[i])
        return spawn.Member(name, spawn.stack(snaps[start], n[i]), keys, start, stops, on_stop)

    members = [member(i) for i in range(3)]
    got = spawn.run_together(fused, members, (x, y), per_program, pad_to)
    assert seen == {"set 0": [5, 10, 13], "set 1": [5, 10, 13], "set 2": [10]}
    for i, m in enumerate(members):
        stop = 10 if i == 2 else end
        want = reference(one, spawn.stack(snaps[m.start], n[i]), m.keys, m.start, stop)
        close(got[m.name], want, err_msg=m.name)
    p = jax.tree.leaves(got["set 1"].params)[0]
    assert float(jnp.abs(p[0] - p[1]).max()) > 1e-4  # the children drew their own orders


def test_a_diverging_member_is_named_and_a_finished_one_is_returned_as_it_is():
    model, tx, spe, state, x, y = problem()
    step_fn = T.make_train_step(model, tx, DATA, spe)
    fused = T.Fused(step_fn, spe, spawn.CHILDREN_AXES)
    bad = jax.tree.map(lambda a: a * jnp.nan, state)
    keys, nothing = spawn.child_keys(0, 0, 2), lambda t, s: None
    members = [
        spawn.Member("done", spawn.stack(state, 2), keys, 4, [], nothing),
        spawn.Member("fine", spawn.stack(state, 2), keys, 0, [5], nothing),
        spawn.Member("nan", spawn.stack(bad, 2), keys, 2, [5], nothing),
    ]
    got = spawn.run_together(fused, members[:1], (x, y))
    assert got == {"done": members[0].state}  # no steps left: as it was
    with pytest.raises(T.Diverged, match="nan: training loss .* at step 5"):
        spawn.run_together(fused, members, (x, y))


def test_program_size_fills_an_accelerator_s_memory_and_keeps_a_cpu_per_member(monkeypatch):
    """On a CPU each member is its own program; on an accelerator (its devices faked here, the
    program compiled for this CPU) as many models as ``fill`` finds from the compiled step's
    memory analysis, padded to a multiple of lcm(8, devices)."""
    model, tx, spe, state, x, y = problem()
    fused = T.Fused(T.make_train_step(model, tx, DATA, spe), spe, spawn.CHILDREN_AXES, True)
    member = spawn.Member("a", spawn.stack(state, 2), spawn.child_keys(0, 0, 2), 0, [5], None)
    assert spawn.program_size(fused, member, (x, y)) == (None, 1)

    class Device:
        platform = "gpu"

        def __init__(self, limit):
            self.limit = limit

        def memory_stats(self):
            return {"bytes_limit": self.limit}

    sizes = {}
    for limit, count in ((2**26, 1), (2**28, 1), (2**28, 3)):
        monkeypatch.setattr(jax, "devices", lambda: [Device(limit)] * count)
        sizes[limit, count] = spawn.program_size(fused, member, (x, y))
    small, large, three = sizes.values()
    assert small[1] == large[1] == 8 and three[1] == 24
    assert 1 <= small[0] < large[0] < three[0]  # more memory, more models
    per_model = (0.7 * 2**28 - x.nbytes - y.nbytes) / large[0]  # the data on every device
    assert 0.5 * per_model < (0.7 * 2**26 - x.nbytes - y.nbytes) / small[0] < 2 * per_model
    assert 0.5 * per_model < 3 * (0.7 * 2**28 - x.nbytes - y.nbytes) / three[0] < 2 * per_model
