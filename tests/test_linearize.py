"""linearize / taylor_expand against closed forms (no side environment needed)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from ntkpaper.linearize import linearize, taylor_expand


def affine(p, x):  # linear in its parameters
    return x @ p["w"] + p["b"]


def quadratic(p, x):  # degree 2 in its parameters
    return (x @ p["w"]) ** 2 + p["b"] * jnp.sum(p["w"]) + 3.0


def cubic(p, x):
    return jnp.sum(x * p["w"] ** 3, axis=-1)


def _params(key, d=4, k=3):
    a, b = jax.random.split(key)
    return {"w": jax.random.normal(a, (d, k)), "b": jax.random.normal(b, (k,))}


def test_linearize_of_an_affine_function_is_exact():
    p0, p1 = _params(jax.random.PRNGKey(0)), _params(jax.random.PRNGKey(1))
    x = jax.random.normal(jax.random.PRNGKey(2), (5, 4))
    np.testing.assert_allclose(linearize(affine, p0)(p1, x), affine(p1, x), rtol=1e-5, atol=1e-5)


def test_second_order_taylor_model_of_a_quadratic_is_exact_and_first_order_is_not():
    p0, p1 = _params(jax.random.PRNGKey(0)), _params(jax.random.PRNGKey(1))
    x = jax.random.normal(jax.random.PRNGKey(2), (5, 4))
    exact = quadratic(p1, x)
    np.testing.assert_allclose(taylor_expand(quadratic, p0, 2)(p1, x), exact, rtol=1e-4, atol=1e-4)
    assert np.max(np.abs(taylor_expand(quadratic, p0, 1)(p1, x) - exact)) > 1e-2


def test_taylor_terms_match_hand_derivatives_of_a_cubic():
    # g(w) = sum x w^3: Dg[dw] = sum 3 x w^2 dw, D2g[dw, dw] = sum 6 x w dw^2
    w0 = {"w": jnp.array([[0.5, -1.0, 2.0]])}
    w1 = {"w": jnp.array([[1.5, 0.0, 1.0]])}
    x = jnp.array([[1.0, 2.0, -1.0]])
    dw = w1["w"] - w0["w"]
    g0 = jnp.sum(x * w0["w"] ** 3, -1)
    d1 = jnp.sum(3 * x * w0["w"] ** 2 * dw, -1)
    d2 = jnp.sum(6 * x * w0["w"] * dw**2, -1)
    np.testing.assert_allclose(taylor_expand(cubic, w0, 0)(w1, x), g0, rtol=1e-6)
    np.testing.assert_allclose(linearize(cubic, w0)(w1, x), g0 + d1, rtol=1e-6)
    np.testing.assert_allclose(taylor_expand(cubic, w0, 1)(w1, x), g0 + d1, rtol=1e-6)
    np.testing.assert_allclose(taylor_expand(cubic, w0, 2)(w1, x), g0 + d1 + d2 / 2, rtol=1e-6)
    np.testing.assert_allclose(taylor_expand(cubic, w0, 3)(w1, x), cubic(w1, x), rtol=1e-5)


def test_expansions_at_the_expansion_point_equal_f_and_share_its_gradient():
    p0 = _params(jax.random.PRNGKey(3))
    x = jax.random.normal(jax.random.PRNGKey(4), (2, 4))
    for g in (linearize(quadratic, p0), taylor_expand(quadratic, p0, 2)):
        np.testing.assert_allclose(g(p0, x), quadratic(p0, x), rtol=1e-6)
        ga = jax.grad(lambda p: jnp.sum(g(p, x)))(p0)
        gb = jax.grad(lambda p: jnp.sum(quadratic(p, x)))(p0)
        for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
            np.testing.assert_allclose(a, b, rtol=1e-5)


def nonlinear(p, x):  # tanh of an affine map, plus a product of parameters
    return jnp.tanh(x @ p["w"] + p["b"]) + p["b"] * p["w"][0]


def test_linearize_of_a_nonlinear_function_is_its_first_order_expansion_not_f():
    p0, p1 = _params(jax.random.PRNGKey(5)), _params(jax.random.PRNGKey(6))
    x = jax.random.normal(jax.random.PRNGKey(7), (5, 4))
    flat0, unravel = ravel_pytree(p0)
    flat1, _ = ravel_pytree(p1)
    # J(w0): the (5, 3) outputs by every parameter, materialised with jacfwd on the flat vector
    jac = jax.jacfwd(lambda v: nonlinear(unravel(v), x))(flat0)
    assert jac.shape == (5, 3, flat0.size)
    want = nonlinear(p0, x) + jnp.einsum("nkp,p->nk", jac, flat1 - flat0)
    got = linearize(nonlinear, p0)(p1, x)
    assert got.shape == nonlinear(p1, x).shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # f itself is far from its linearisation at w1, and from f(w0)
    assert np.max(np.abs(got - nonlinear(p1, x))) > 0.1
    assert np.max(np.abs(got - nonlinear(p0, x))) > 0.1
    # linear in w: halfway between w0 and w1 it is halfway between f(w0) and f_lin(w1)
    half = jax.tree.map(lambda a, b: (a + b) / 2, p0, p1)
    np.testing.assert_allclose(
        linearize(nonlinear, p0)(half, x), (nonlinear(p0, x) + got) / 2, rtol=1e-5, atol=1e-5
    )
    # the same through taylor_expand of degree 1
    np.testing.assert_allclose(taylor_expand(nonlinear, p0, 1)(p1, x), want, rtol=1e-5, atol=1e-5)


def test_negative_degree_is_refused():
    with pytest.raises(ValueError):
        taylor_expand(affine, _params(jax.random.PRNGKey(0)), -1)
