"""HardKuma (App. 3.A): point masses against Monte Carlo, KL(Kuma ‖ Beta) against numerical
integration, L0 / transition-count expectations against Monte Carlo, the Lagrangian step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from repthesis.gen import hardkuma as hk


@pytest.mark.parametrize("a, b", [(0.5, 1.0), (1.0, 1.0), (2.0, 0.7), (0.3, 2.0)])
def test_point_masses_match_monte_carlo(a, b):
    n = 400_000
    z = np.asarray(hk.hardkuma_sample(jax.random.PRNGKey(0), jnp.full(n, a), jnp.full(n, b)))
    assert z.min() == 0.0 or z.max() == 1.0  # exact ends
    assert (z >= 0).all() and (z <= 1).all()
    for empirical, exact in ((np.mean(z == 0), float(hk.prob_zero(a, b))), (np.mean(z == 1), float(hk.prob_one(a, b)))):
        assert abs(empirical - exact) < 4 * np.sqrt(exact * (1 - exact) / n) + 1e-4, (empirical, exact)
    # the closed forms by hand for b = 1: F(x) = x^a
    if b == 1.0:
        np.testing.assert_allclose(float(hk.prob_zero(a, b)), (0.1 / 1.2) ** a, rtol=1e-5)
        np.testing.assert_allclose(float(hk.prob_one(a, b)), 1 - (1.1 / 1.2) ** a, rtol=1e-5)


def kl_by_integration(a, b, alpha, beta):
    def integrand(x):
        log_k = np.log(a * b) + (a - 1) * np.log(x) + (b - 1) * np.log1p(-x ** a)
        return np.exp(log_k) * (log_k - stats.beta.logpdf(x, alpha, beta))

    return integrate.quad(integrand, 0, 1, limit=400)[0]


@pytest.mark.parametrize("a, b, alpha, beta", [(2.0, 1.0, 1.5, 2.0), (0.7, 1.0, 0.5, 0.5), (1.5, 2.0, 2.0, 3.0),
                                               (3.0, 1.0, 1.0, 1.0), (0.5, 1.5, 2.0, 1.0)])
def test_kl_kuma_beta_against_numerical_integration(a, b, alpha, beta):
    exact = kl_by_integration(a, b, alpha, beta)
    many = float(hk.kl_kuma_beta(jnp.float32(a), jnp.float32(b), alpha, beta, terms=20_000))
    assert abs(many - exact) < 2e-3 * max(1.0, abs(exact)), (many, exact)  # the series itself is right
    # the thesis's 5 terms: off by exactly the omitted tail (β − 1)·b·Σ_{m>5} B(m/a, b)/(m + ab)
    five = float(hk.kl_kuma_beta(jnp.float32(a), jnp.float32(b), alpha, beta))
    m = np.arange(6, 400_000, dtype=np.float64)
    tail = (beta - 1) * b * np.sum(np.exp(special.betaln(m / a, b)) / (m + a * b))
    assert abs((exact - five) - tail) < 2e-3 * max(1.0, abs(exact)), (exact, five, tail)
    if beta == 1.0:
        assert abs(five - exact) < 2e-3  # no series at all when β = 1


@pytest.mark.parametrize("a, alpha, beta", [(2.0, 1.5, 2.0), (0.7, 0.5, 0.5), (13.0, 34.0, 6.3), (0.2, 0.3, 0.4),
                                          (40.0, 1.0, 3.0)])
def test_kl_kuma1_beta_is_the_whole_series_and_the_integral(a, alpha, beta):
    exact = kl_by_integration(a, 1.0, alpha, beta)
    closed = float(hk.kl_kuma1_beta(jnp.float32(a), alpha, beta))
    assert closed >= 0 and abs(closed - exact) < 2e-3 * max(1.0, abs(exact)), (closed, exact)
    many = float(hk.kl_kuma_beta(jnp.float32(a), jnp.float32(1.0), alpha, beta, terms=200_000))
    assert abs(closed - many) < 2e-3 * max(1.0, abs(exact)) + (beta - 1) * a / 200_000, (closed, many)
    if a > 10 and beta > 1:  # where the thesis's 5 terms go wrong: below the true KL by about (β − 1)·ln(1 + a/6)
        five = float(hk.kl_kuma_beta(jnp.float32(a), jnp.float32(1.0), alpha, beta))
        assert exact - five > 0.5 * (beta - 1) * np.log1p(a / 6), (exact, five)


def test_l0_and_transition_expectations_match_monte_carlo():
    t, n = 25, 100_000
    a = jnp.linspace(0.2, 3.0, t)
    b = jnp.ones(t)
    keys = jax.random.split(jax.random.PRNGKey(1), n)
    z = np.asarray(jax.vmap(lambda k: hk.hardkuma_sample(k, a, b))(keys))
    nonzero = z != 0
    p0 = hk.prob_zero(a, b)
    np.testing.assert_allclose(float(hk.expected_l0(p0)), nonzero.sum(1).mean(), rtol=0.01)
    switches = (nonzero[:, 1:] != nonzero[:, :-1]).sum(1).mean()
    np.testing.assert_allclose(float(hk.expected_transitions(p0)), switches, rtol=0.01)
    # the losses are the squared distances to their targets (μ0 = 5, 2μ0 = 10 for T = 25)
    np.testing.assert_allclose(float(hk.l0_loss(p0, 5.0)), (float(hk.expected_l0(p0)) - 5.0) ** 2, rtol=1e-6)
    np.testing.assert_allclose(float(hk.transition_loss(p0, 10.0)), (float(hk.expected_transitions(p0)) - 10.0) ** 2,
                               rtol=1e-6)


def test_samples_are_reparameterised():
    grad = jax.grad(lambda a: jnp.mean(hk.hardkuma_sample(jax.random.PRNGKey(2), a, jnp.ones(1000))))(jnp.full(1000, 1.0))
    assert np.all(np.asarray(grad) >= 0) and np.any(np.asarray(grad) > 0)  # larger a: x = u^(1/a) moves to 1
    g_l0 = jax.grad(lambda a: hk.l0_loss(hk.prob_zero(a, jnp.ones(4)), 0.0))(jnp.ones(4))
    assert np.all(np.asarray(g_l0) > 0)  # E‖z‖₀ grows with a, so descent on (E‖z‖₀ − 0)² shrinks a


def test_lagrange_step_raises_each_multiplier_with_its_violation_and_never_below_zero():
    lam = dict(hk.LAGRANGE_INIT)
    new = hk.lagrange_step(lam, {"kl": jnp.float32(2.0), "l0": jnp.float32(0.0), "transitions": jnp.float32(9.0)})
    np.testing.assert_allclose(float(new["kl"]), 0.01 + hk.LAGRANGE_LR * 2.0, rtol=1e-6)
    assert float(new["l0"]) == pytest.approx(0.06)  # a met constraint leaves its multiplier alone
    np.testing.assert_allclose(float(new["transitions"]), 0.02 + hk.LAGRANGE_LR * 9.0, rtol=1e-6)
    low = hk.lagrange_step({"kl": jnp.float32(1e-4)}, {"kl": jnp.float32(-1.0)}, lr=1.0)
    assert float(low["kl"]) == 0.0
