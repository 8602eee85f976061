"""Silent-alignment runs (Atanasov et al. 2022): a grid of initial scales sigma trained as one
vmapped program, the NTK and its alignment logged over training, predictions of the network
and of kernel regression with its initial and final NTK on test points."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ntkpaper import alignment, silent, store, theory
from ntkpaper import data as data_lib
from ntkpaper import params as P
from ntkpaper.jobs.setup import begin, log
from ntkpaper.plan import Job

KEEP_KERNEL = 1000  # store the final Gram matrices up to this many training examples


def prepare(d: P.SaData) -> dict[str, np.ndarray]:
    """Training and test inputs (flattened, centred on the training mean, partially whitened
    with ``gamma`` by ``alignment.whiten``), targets, and the unit teacher direction beta.

    synthetic: x ~ N(0, I_D), whitened, then y = x beta_T, beta_T a random unit vector
    (|beta| = 1 as in figure 4; C outputs: one teacher column each). Images: the first
    ``n_train`` (``n_test``) examples of ``classes``; two classes give +1 / -1, more one-hot
    minus 1/C. beta for images: 'the normalized component of beta_T in the span of the
    training data', the minimum-norm linear fit pinv(X) y of the first output.
    ``teacher_norm``: s = |beta_T|."""
    image = (d.dim or 0,)
    if d.dataset == "synthetic":
        rng = np.random.default_rng(d.seed)
        teacher = rng.normal(size=(d.dim, d.outputs))
        teacher /= np.linalg.norm(teacher, axis=0)
        x, xt = rng.normal(size=(d.n_train, d.dim)), rng.normal(size=(d.n_test, d.dim))
        if d.gamma is not None:  # whiten first: the teacher is linear in the whitened inputs
            x, xt = alignment.whiten(x, xt, d.gamma)
        y, yt = x @ teacher, xt @ teacher
        beta = teacher[:, 0]
    else:
        ds = data_lib.load(d.dataset)
        pick = lambda y, n: np.flatnonzero(np.isin(np.asarray(y), d.classes))[:n]  # noqa: E731
        i, it = pick(ds.y_train, d.n_train), pick(ds.y_test, d.n_test)
        image = ds.x_train.shape[1:]
        x, xt = (
            np.asarray(a, np.float64).reshape(len(a), -1) for a in (ds.x_train[i], ds.x_test[it])
        )
        labels, labels_t = np.asarray(ds.y_train)[i], np.asarray(ds.y_test)[it]
        if len(d.classes) == 2:
            y, yt = (
                np.where(lab == d.classes[0], 1.0, -1.0)[:, None] for lab in (labels, labels_t)
            )
        else:
            code = np.vectorize({c: k for k, c in enumerate(d.classes)}.get)
            y, yt = (
                alignment.one_hot_targets(code(lab), len(d.classes)) for lab in (labels, labels_t)
            )
        mean = x.mean(0)
        x, xt = x - mean, xt - mean
        if d.gamma is not None:
            x, xt = alignment.whiten(x, xt, d.gamma)
        beta = theory.min_norm_fit(x, y)[0]
    return {
        "x": np.asarray(x, np.float32), "y": np.asarray(y, np.float32),
        "x_test": np.asarray(xt, np.float32), "y_test": np.asarray(yt, np.float32),
        "beta": beta / np.linalg.norm(beta), "teacher_norm": np.linalg.norm(beta),
        "image_shape": np.array(image),
    }  # fmt: skip


def run_alignment(job: Job) -> None:
    """Train the network from every sigma (one vmapped program) on the prepared data; log
    loss, NTK alignment and norm (and cos, q, r for one output) at log-spaced steps; then the
    network's test predictions against kernel regression with its initial and final NTK."""
    d, net, tr = job.spec.data, job.spec.network, job.spec.train
    out = begin(job)
    data = prepare(d)
    shape = (-1, *data["image_shape"]) if net.arch == "wrn" else (len(data["x"]), -1)
    x, y = jnp.asarray(data["x"]).reshape(shape), jnp.asarray(data["y"])
    x_test = jnp.asarray(data["x_test"]).reshape((-1, *x.shape[1:]))
    key = jax.random.PRNGKey(net.seed)
    if net.arch == "wrn":
        shapes = silent.wrn_shapes(x.shape[-1], net.width, net.depth, y.shape[1])
        init = lambda s: silent.init_wrn(key, shapes, s, net.first_sigma)  # noqa: E731
        f = silent.wrn(net.depth)
    else:
        sizes = [x.shape[1]] + [net.width] * (net.depth - 1) + [y.shape[1]]
        init = lambda s: silent.init_mlp(key, sizes, s, net.first_sigma)  # noqa: E731
        f = silent.mlp(net.activation)
    params = [jnp.stack(w) for w in zip(*(init(s) for s in net.sigmas))]
    steps = silent.log_times(tr.steps, tr.log_points)
    beta = data["beta"] if y.shape[1] == 1 and net.arch == "mlp" else None
    logs = silent.train_many(f, params, x, y, tr.lr, tr.steps, steps, tr.layer_lr, tr.optimizer,
                             beta=beta)  # fmt: skip
    log(f"alignment {job.key}: trained {len(net.sigmas)} x {tr.steps} steps")
    final = logs.pop("params")
    preds = [
        silent.ntk_predictions(f, [w[i] for w in params], [w[i] for w in final], x, y, x_test)
        for i in range(len(net.sigmas))
    ]  # fmt: skip
    k_inf = logs.pop("K_inf")
    logs.pop("K_0")
    store.save_arrays(
        out / "run.npz",
        {
            **logs,
            **{f"predict_{k}": np.stack([p[k] for p in preds]) for k in preds[0]},
            **data,
            "sigma": np.array(net.sigmas),
            "gram_inputs": data["x"] @ data["x"].T if x.shape[0] <= KEEP_KERNEL else np.zeros(0),
            "kernel_final": k_inf if x.shape[0] <= KEEP_KERNEL else np.zeros(0),
        },
    )
    store.write_manifest(job.kind, job.key, job.record(), ["run.npz"])
