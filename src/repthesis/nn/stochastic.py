"""Stochastic units of thesis chapter 2: Gaussian activations, NoisyNet layers, dropout.

Every random draw uses ``self.make_rng(stream)`` with a named stream, so the same
params and the same rngs reproduce the same output (STYLE.md §2).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

STOCHASTIC_STREAM = "stochastic"  # Gaussian / dropout activation noise (SA3C, FSA3C, HPA3C)
NOISY_STREAM = "noisy"  # NoisyNet weight noise


def crelu(x: jax.Array) -> jax.Array:
    """Concatenated ReLU [relu(x), relu(-x)] (Shang et al., 2016); HPA3C's normaliser (App. 2.E)."""
    return jnp.concatenate([jax.nn.relu(x), jax.nn.relu(-x)], axis=-1)


def gaussian_kl(mean: jax.Array, log_var: jax.Array, prior_mean: jax.Array, prior_log_var) -> jax.Array:
    """KL[N(mean, exp(log_var)) || N(prior_mean, exp(prior_log_var))], summed over the last axis.

    Closed form of §2.4.1 ("Prior regularization"):
    log(σ_p/σ) + (σ² + (μ − μ_p)²) / (2σ_p²) − 1/2, element-wise, then summed.
    """
    prior_log_var = jnp.broadcast_to(jnp.asarray(prior_log_var, mean.dtype), mean.shape)
    kl = 0.5 * (
        prior_log_var
        - log_var
        + (jnp.exp(log_var) + jnp.square(mean - prior_mean)) * jnp.exp(-prior_log_var)
        - 1.0
    )
    return jnp.sum(kl, axis=-1)


def gaussian_sample(module: nn.Module, mean: jax.Array, log_var, deterministic: bool) -> jax.Array:
    """Reparameterised z = μ + σ·ε (Kingma & Welling, 2013); MAP (z = μ) when deterministic."""
    if deterministic:
        return mean
    eps = jax.random.normal(module.make_rng(STOCHASTIC_STREAM), mean.shape, mean.dtype)
    return mean + jnp.exp(0.5 * jnp.asarray(log_var, mean.dtype)) * eps


def dropout_sample(module: nn.Module, x: jax.Array, rate: float, deterministic: bool) -> jax.Array:
    """Dropout stochastic units (App. 2.F): inverted dropout, identity when deterministic (MAP)."""
    if deterministic or rate == 0.0:
        return x
    keep = jax.random.bernoulli(module.make_rng(STOCHASTIC_STREAM), 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def _factorised_f(x: jax.Array) -> jax.Array:
    # f(x) = sgn(x)·sqrt(|x|), Fortunato et al. (2017) eq. 11.
    return jnp.sign(x) * jnp.sqrt(jnp.abs(x))


class NoisyDense(nn.Module):
    """NoisyNet linear layer y = (μ_w + σ_w ⊙ ε_w) x + μ_b + σ_b ⊙ ε_b (Fortunato et al., 2017; App. 2.G).

    ``factorised=True`` draws ε_w = f(ε_in) f(ε_out)ᵀ; the product is never materialised:
    Σ_i x_i σ_ij f(ε_in)_i f(ε_out)_j = f(ε_out)_j · ((x ⊙ f(ε_in)) σ)_j. ``factorised=False``
    draws an independent ε_ij per weight. With ``deterministic=True`` the weights are their
    means (the NoisyNet evaluation protocol). Inputs are unbatched feature vectors or batches.
    """

    features: int
    factorised: bool = True
    sigma0: float = 0.5  # σ_0 for factorised noise (σ init = σ_0/√p); independent noise uses 0.017

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = False) -> jax.Array:
        fan_in = x.shape[-1]
        if self.factorised:
            bound = 1.0 / math.sqrt(fan_in)
            sigma_init = self.sigma0 / math.sqrt(fan_in)
        else:
            bound = math.sqrt(3.0 / fan_in)
            sigma_init = 0.017
        uniform = lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -bound, bound)  # noqa: E731
        constant = lambda key, shape: jnp.full(shape, sigma_init, jnp.float32)  # noqa: E731
        mu_w = self.param("mu_kernel", uniform, (fan_in, self.features))
        sigma_w = self.param("sigma_kernel", constant, (fan_in, self.features))
        mu_b = self.param("mu_bias", uniform, (self.features,))
        sigma_b = self.param("sigma_bias", constant, (self.features,))
        y = x @ mu_w + mu_b
        if deterministic:
            return y
        key = self.make_rng(NOISY_STREAM)
        if self.factorised:
            k_in, k_out = jax.random.split(key)
            eps_in = _factorised_f(jax.random.normal(k_in, (fan_in,)))
            eps_out = _factorised_f(jax.random.normal(k_out, (self.features,)))
            return y + ((x * eps_in) @ sigma_w) * eps_out + sigma_b * eps_out
        k_w, k_b = jax.random.split(key)
        eps_w = jax.random.normal(k_w, (fan_in, self.features))
        eps_b = jax.random.normal(k_b, (self.features,))
        return y + x @ (sigma_w * eps_w) + sigma_b * eps_b
