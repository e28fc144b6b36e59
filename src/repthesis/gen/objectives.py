"""ELBO, importance-weighted bound and importance-sampled NLL (thesis §5.3.1, App. 5.B).

All functions take per-example quantities and sum over every non-batch axis; nothing here
knows about networks. ``log_weights`` are log p(x, z_k) − log q(z_k | x) for K samples z_k ~ q.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp

LOG_2PI = math.log(2 * math.pi)


def _sum_except_batch(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1).sum(-1)


def bernoulli_log_likelihood(x: jax.Array, logits: jax.Array) -> jax.Array:
    """log p(x | logits) for binary x, summed per example: x·log σ(l) + (1−x)·log(1−σ(l))."""
    chex.assert_equal_shape([x, logits])
    return _sum_except_batch(x * jax.nn.log_sigmoid(logits) + (1 - x) * jax.nn.log_sigmoid(-logits))


def gaussian_log_likelihood(x: jax.Array, mean: jax.Array, log_var: float | jax.Array = 0.0) -> jax.Array:
    """log N(x; mean, exp(log_var)) summed per example (fixed variance: a scaled MSE)."""
    chex.assert_equal_shape([x, mean])
    log_var = jnp.broadcast_to(jnp.asarray(log_var, jnp.float32), x.shape)
    return _sum_except_batch(-0.5 * (LOG_2PI + log_var + jnp.square(x - mean) * jnp.exp(-log_var)))


def gaussian_log_density(z: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """log N(z; mean, diag exp(log_var)) per example."""
    return gaussian_log_likelihood(z, mean, log_var)


def standard_normal_log_density(z: jax.Array) -> jax.Array:
    return _sum_except_batch(-0.5 * (LOG_2PI + jnp.square(z)))


def kl_to_standard_normal(mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """KL(N(mean, exp(log_var)) ‖ N(0, I)) per example, element-wise terms summed:
    ½ Σ (μ² + σ² − 1 − log σ²)."""
    chex.assert_equal_shape([mean, log_var])
    return _sum_except_batch(0.5 * (jnp.square(mean) + jnp.exp(log_var) - 1.0 - log_var))


def block_kl(mean: jax.Array, log_var: jax.Array, blocks: int) -> jax.Array:
    """KL to N(0, I) per channel block t (the T terms of Eq. 5.1), [B, T], for [B, h, w, c] latents."""
    b, h, w, c = mean.shape
    terms = 0.5 * (jnp.square(mean) + jnp.exp(log_var) - 1.0 - log_var)
    return terms.reshape(b, h, w, blocks, c // blocks).sum(axis=(1, 2, 4))


def active_units(posterior_means: jax.Array, threshold: float = 0.01) -> jax.Array:
    """Which latent units are active (Burda et al., 2015, §5.2): Var_x(E_q(z|x)[z_u]) > ``threshold``,
    the variance over the examples (axis 0) of each unit's posterior mean; boolean, one per unit."""
    return jnp.var(posterior_means.astype(jnp.float32), axis=0) > threshold


def reparameterise(key: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    return mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape, mean.dtype)


def iwae_bound(log_weights: jax.Array) -> jax.Array:
    """log (1/K) Σ_k w_k per example from ``log_weights`` [K, B], by log-sum-exp in float32
    (Burda et al., 2015). K = 1 is the single-sample ELBO."""
    log_weights = log_weights.astype(jnp.float32)
    return jax.nn.logsumexp(log_weights, axis=0) - math.log(log_weights.shape[0])


def streaming_log_mean_exp(chunks) -> jax.Array:
    """log-mean-exp over K samples arriving in chunks of [k_i, B] log-weights: a running
    (max, sum of exp(x − max)) pair, so memory stays one chunk whatever K is."""
    running_max, running_sum, count = None, None, 0
    for chunk in chunks:
        chunk = jnp.asarray(chunk, jnp.float32)
        m = jnp.max(chunk, axis=0)
        new_max = m if running_max is None else jnp.maximum(running_max, m)
        s = jnp.sum(jnp.exp(chunk - new_max), axis=0)
        running_sum = s if running_sum is None else running_sum * jnp.exp(running_max - new_max) + s
        running_max, count = new_max, count + chunk.shape[0]
    return running_max + jnp.log(running_sum) - math.log(count)
