"""What every job of one parent needs, and the conversions between states and stored arrays."""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np

from ntkpaper import conv, metrics, models, store
from ntkpaper import data as data_lib
from ntkpaper import params as P
from ntkpaper import train as train_lib
from ntkpaper.plan import BatchNorm, Job


@dataclass
class Setup:
    """Data, model, optimiser and schedule of one parent's runs."""

    data_params: P.Data
    train_params: P.Train
    dataset: data_lib.Dataset
    model: nn.Module
    spe: int  # steps per epoch
    tx: object

    def template(self) -> train_lib.TrainState:
        """A state of the right structure (stored arrays are poured into it); made once."""
        return self._template

    @functools.cached_property
    def _template(self) -> train_lib.TrainState:
        return train_lib.init_state(
            self.model, self.tx, jax.random.PRNGKey(0), self.dataset.x_train[:1]
        )

    @functools.cached_property
    def vmapped_model(self) -> nn.Module:
        """``model`` with the convolutions that stay fast when vmapped over models
        (``conv.for_vmapped_models``): the same function and parameters."""
        return conv.vmapped(self.model)

    def step_of(self, epoch: float) -> int:
        return train_lib.epoch_to_step(epoch, self.spe)

    def variables(self, arrays: dict) -> dict:
        """``{"params", "batch_stats"}`` of one network from its stored arrays."""
        t = self.template()
        return {
            "params": store.tree_from_arrays(t.params, arrays, "params"),
            "batch_stats": store.tree_from_arrays(t.batch_stats, arrays, "batch_stats"),
        }

    def children(self, arrays: dict, n: int, bn: BatchNorm) -> list[dict]:
        """The first ``n`` children of stacked ``arrays`` (a children run's final or snapshot:
        slice i of every stacked weight and statistic), each as measured."""
        stacked = {k: a for k, a in arrays.items() if k.startswith(("params/", "batch_stats/"))}
        return [self.measured(self.variables({k: a[i] for k, a in stacked.items()}), bn)
                for i in range(n)]  # fmt: skip

    def measured(self, variables: dict, bn: BatchNorm) -> dict:
        """The network as it is measured: its batch-norm statistics recomputed on the first
        ``bn.bn_examples`` training inputs (``bn_stats: recompute``), or kept (``running``)."""
        if bn.bn_stats == "running":
            return variables
        stats = metrics.recompute_batch_stats(
            self.model,
            variables["params"],
            variables["batch_stats"],
            self.dataset.x_train[: bn.bn_examples],
            self.data_params.eval_batch,
        )
        return {**variables, "batch_stats": stats}


def setup(parent: Job) -> Setup:
    s = parent.spec
    dataset = data_lib.load(s.data.dataset)
    model = models.build(
        s.model.name,
        dataset.num_classes,
        depth=s.model.depth,
        width=s.model.width,
        batch_norm=s.model.batch_norm,
        weight_init=s.model.weight_init,
    )
    spe = train_lib.steps_per_epoch(dataset.x_train.shape[0], s.data.batch_size)
    return Setup(s.data, s.train, dataset, model, spe, train_lib.optimizer(s.train, spe))


def state_arrays(state: train_lib.TrainState) -> dict[str, np.ndarray]:
    return {
        **store.tree_arrays(state.params, "params"),
        **store.tree_arrays(state.batch_stats, "batch_stats"),
        **store.tree_arrays(state.opt_state, "opt_state"),
    }


def state_from(template: train_lib.TrainState, arrays: dict) -> train_lib.TrainState:
    return train_lib.TrainState(
        store.tree_from_arrays(template.params, arrays, "params"),
        store.tree_from_arrays(template.batch_stats, arrays, "batch_stats"),
        store.tree_from_arrays(template.opt_state, arrays, "opt_state"),
    )


def epoch_stops(spe: int, start: int, end: int) -> list[int]:
    """Checkpoint steps after ``start``: every epoch boundary, and ``end``."""
    return sorted({st for st in range(start + 1, end + 1) if st % spe == 0} | {end})


def begin(job: Job) -> Path:
    """The run's directory, with its spec written (what a half-done run is)."""
    out = store.run_dir(job.kind, job.key)
    store.write_json(out / "spec.json", job.record())
    return out


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
