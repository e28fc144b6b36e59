"""ELBO terms by hand; IWAE bound and the importance-sampled NLL on a model with a known marginal."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from repthesis.gen import objectives as obj


def test_gaussian_kl_and_bernoulli_log_likelihood_by_hand():
    mean = jnp.array([[1.0, 0.0]])
    log_var = jnp.array([[0.0, math.log(2.0)]])
    # ½(1 + 1 − 1 − 0) + ½(0 + 2 − 1 − log 2)
    assert float(obj.kl_to_standard_normal(mean, log_var)[0]) == pytest.approx(0.5 + 0.5 * (1 - math.log(2)), rel=1e-6)
    x = jnp.array([[1.0, 0.0]])
    logits = jnp.array([[0.0, math.log(3.0)]])
    # log σ(0) + log(1 − σ(log 3)) = log ½ + log ¼
    assert float(obj.bernoulli_log_likelihood(x, logits)[0]) == pytest.approx(math.log(0.5) + math.log(0.25), rel=1e-6)
    g = obj.gaussian_log_likelihood(jnp.array([[1.0]]), jnp.array([[0.0]]), math.log(4.0))
    assert float(g[0]) == pytest.approx(-0.5 * (math.log(2 * math.pi) + math.log(4.0) + 0.25), rel=1e-6)


def test_block_kl_splits_the_total_kl_by_channel_blocks():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    mean, log_var = jax.random.normal(k1, (2, 3, 3, 8)), jax.random.normal(k2, (2, 3, 3, 8))
    per_block = obj.block_kl(mean, log_var, 4)
    assert per_block.shape == (2, 4)
    np.testing.assert_allclose(per_block.sum(-1), obj.kl_to_standard_normal(mean, log_var), rtol=1e-5)
    only_block_2 = obj.block_kl(mean.at[..., 4:6].set(0.0), log_var.at[..., 4:6].set(0.0), 4)
    np.testing.assert_allclose(only_block_2[:, 2], 0.0, atol=1e-6)


# Linear-Gaussian model: z ~ N(0, 1), x | z ~ N(a z + b, s²)  ⇒  x ~ N(b, a² + s²) exactly.
A, B, S2 = 2.0, 0.5, 0.25


def _log_weights(key, x, samples, q_mean, q_log_var):
    z = q_mean + jnp.exp(0.5 * q_log_var) * jax.random.normal(key, (samples,) + x.shape)
    log_joint = (jax.vmap(lambda z: obj.gaussian_log_likelihood(x, A * z + B, math.log(S2)))(z)
                 + jax.vmap(obj.standard_normal_log_density)(z))
    return log_joint - jax.vmap(lambda z: obj.gaussian_log_density(z, q_mean, q_log_var))(z)


def _exact_log_px(x):
    return np.asarray(obj.gaussian_log_likelihood(x, jnp.full_like(x, B), math.log(A * A + S2)))


def test_nll_estimate_matches_the_exact_marginal_and_streams_in_chunks():
    x = jnp.array([[-1.0], [0.3], [2.5]])
    q_mean, q_log_var = 0.3 * x, jnp.full_like(x, math.log(0.5))  # a deliberately wrong posterior
    chunks = [_log_weights(jax.random.PRNGKey(c), x, 5000, q_mean, q_log_var) for c in range(4)]
    streamed = obj.streaming_log_mean_exp(chunks)
    at_once = obj.iwae_bound(jnp.concatenate(chunks))
    np.testing.assert_allclose(streamed, at_once, rtol=1e-5)
    np.testing.assert_allclose(streamed, _exact_log_px(x), atol=0.02)
    # With the exact posterior every weight is p(x): one sample suffices.
    post_var = S2 / (A * A + S2)
    exact_q = (post_var * A * (x - B) / S2, jnp.full_like(x, math.log(post_var)))
    one = obj.iwae_bound(_log_weights(jax.random.PRNGKey(9), x, 1, *exact_q))
    np.testing.assert_allclose(one, _exact_log_px(x), atol=1e-4)


def test_iwae_bound_k1_is_the_elbo_sample_and_grows_with_k_in_expectation():
    x = jnp.array([[1.5]])
    q = (0.2 * x, jnp.full_like(x, math.log(0.3)))
    w = _log_weights(jax.random.PRNGKey(0), x, 1, *q)
    np.testing.assert_allclose(obj.iwae_bound(w), w[0])
    means = []
    for k in (1, 2, 8, 64):
        ws = jax.vmap(lambda key: obj.iwae_bound(_log_weights(key, x, k, *q)))(jax.random.split(jax.random.PRNGKey(k), 2000))
        means.append(float(jnp.mean(ws)))
    assert means == sorted(means) and means[-1] < float(_exact_log_px(x)[0]) + 0.01
    assert means[-1] - means[0] > 0.1  # the wrong posterior leaves a gap that K closes


def test_active_units_by_hand():
    means = jnp.array([[0.0, 1.0, 0.1], [0.0, -1.0, 0.2]])  # variances over examples: 0, 1, 0.0025
    np.testing.assert_array_equal(obj.active_units(means), [False, True, False])
    np.testing.assert_array_equal(obj.active_units(means, threshold=0.001), [False, True, True])
