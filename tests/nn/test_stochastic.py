"""Stochastic units: KL vs distrax, reparameterised gradients, NoisyNet noise structure, rng use."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import flax.linen as nn

from repthesis.nn.stochastic import NOISY_STREAM, STOCHASTIC_STREAM, NoisyDense, crelu, gaussian_kl, gaussian_sample


def test_gaussian_kl_matches_distrax():
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    mean, log_var, prior_mean = (jax.random.normal(x, (7,)) for x in k)
    prior_log_var = -4.0
    ours = gaussian_kl(mean, log_var, prior_mean, prior_log_var)
    q = distrax.MultivariateNormalDiag(mean, jnp.exp(0.5 * log_var))
    p = distrax.MultivariateNormalDiag(prior_mean, jnp.full((7,), jnp.exp(0.5 * prior_log_var)))
    np.testing.assert_allclose(ours, q.kl_divergence(p), rtol=1e-5)
    assert float(gaussian_kl(mean, jnp.full((7,), -4.0), mean, -4.0)) == 0.0


def test_crelu_concatenates_both_signs():
    np.testing.assert_array_equal(crelu(jnp.array([-2.0, 3.0])), [0.0, 3.0, 2.0, 0.0])


class _Sampler(nn.Module):
    @nn.compact
    def __call__(self, x, deterministic=False):
        mean = nn.Dense(4)(x)
        return gaussian_sample(self, mean, -2.0, deterministic)


def test_gaussian_units_reparameterised_and_rng_determined():
    m = _Sampler()
    x = jnp.ones((3,))
    params = m.init({"params": jax.random.PRNGKey(0), STOCHASTIC_STREAM: jax.random.PRNGKey(1)}, x)
    f = lambda p, key: m.apply(p, x, rngs={STOCHASTIC_STREAM: key})  # noqa: E731
    a, b, c = f(params, jax.random.PRNGKey(5)), f(params, jax.random.PRNGKey(5)), f(params, jax.random.PRNGKey(6))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    mean = m.apply(params, x, True)  # MAP: no rng needed
    assert not np.allclose(a, mean)
    # gradient flows through the sample to the mean's parameters (reparameterisation)
    g = jax.grad(lambda p: jnp.sum(f(p, jax.random.PRNGKey(5)) ** 2))(params)
    assert all(np.abs(np.asarray(v)).sum() > 0 for v in jax.tree.leaves(g))
    # sample noise has the fixed variance: z − μ has std exp(−2/2)
    zs = jax.vmap(lambda k: f(params, k))(jax.random.split(jax.random.PRNGKey(9), 4000)) - mean
    np.testing.assert_allclose(np.std(np.asarray(zs)), np.exp(-1.0), rtol=0.05)


def _noisy_weights(layer, params, key, fan_in):
    """Recover the effective weight matrix by feeding the identity basis."""
    eye = jnp.eye(fan_in)
    ys = jax.vmap(lambda e: layer.apply(params, e, rngs={NOISY_STREAM: key}))(eye)
    bias = layer.apply(params, jnp.zeros(fan_in), rngs={NOISY_STREAM: key})
    return ys - bias, bias


def test_noisynet_factorised_noise_is_rank_one_outer_product():
    fan_in, fan_out = 5, 3
    layer = NoisyDense(fan_out, factorised=True)
    params = layer.init({"params": jax.random.PRNGKey(0), NOISY_STREAM: jax.random.PRNGKey(1)}, jnp.zeros(fan_in))
    p = params["params"]
    w, b = _noisy_weights(layer, params, jax.random.PRNGKey(3), fan_in)
    eps_w = (w - p["mu_kernel"]) / p["sigma_kernel"]  # ε_ij
    # factorised: ε_ij = f(ε_i) f(ε_j) → rank one; and ε_b = f(ε_j), the same output factor
    assert np.linalg.matrix_rank(np.asarray(eps_w), tol=1e-4) == 1
    eps_b = (b - p["mu_bias"]) / p["sigma_bias"]
    col_factor = eps_w[0] / (eps_w[0, 0] / eps_b[0])
    np.testing.assert_allclose(col_factor, eps_b, rtol=1e-4)
    # initialisation of Fortunato et al.: σ = σ0/√p, μ ∈ [−1/√p, 1/√p]
    np.testing.assert_allclose(p["sigma_kernel"], 0.5 / np.sqrt(fan_in))
    assert np.all(np.abs(p["mu_kernel"]) <= 1 / np.sqrt(fan_in))
    # evaluation protocol: deterministic → mean weights
    x = jnp.arange(fan_in, dtype=jnp.float32)
    np.testing.assert_allclose(layer.apply(params, x, True), x @ p["mu_kernel"] + p["mu_bias"], rtol=1e-6)


def test_noisynet_independent_noise_is_full_rank_and_gradients_reach_sigma():
    fan_in, fan_out = 5, 4
    layer = NoisyDense(fan_out, factorised=False)
    params = layer.init({"params": jax.random.PRNGKey(0), NOISY_STREAM: jax.random.PRNGKey(1)}, jnp.zeros(fan_in))
    p = params["params"]
    w, _ = _noisy_weights(layer, params, jax.random.PRNGKey(3), fan_in)
    eps_w = (w - p["mu_kernel"]) / p["sigma_kernel"]
    assert np.linalg.matrix_rank(np.asarray(eps_w), tol=1e-4) == min(fan_in, fan_out)
    g = jax.grad(lambda q: jnp.sum(layer.apply(q, jnp.ones(fan_in), rngs={NOISY_STREAM: jax.random.PRNGKey(2)})))(
        params)
    assert np.abs(np.asarray(g["params"]["sigma_kernel"])).sum() > 0
