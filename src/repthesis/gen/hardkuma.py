"""Binary latents of the world-graph VAE (thesis §3.3.1, App. 3.A): the Hard Kumaraswamy
distribution (Bastings et al., 2019), its KL to a Beta prior (Nalisnick and Smyth, 2016), the
closed-form L0 and transition-count regularisers and the Lagrangian multiplier step (Eq. 3.12).

Kuma(a, b) on (0, 1) has CDF F(x) = 1 − (1 − x^a)^b (Eq. 3.3; the thesis's print drops the inner
power b), so x = F⁻¹(u) = (1 − (1 − u)^{1/b})^{1/a} with u ~ U(0, 1) is a reparameterised sample
(Eq. 3.4). HardKuma stretches x to (l, r) = (−0.1, 1.1) and rectifies into [0, 1], which puts point
masses P(z = 0) = F(−l / (r − l)) and P(z = 1) = 1 − F((1 − l) / (r − l)) on the ends (Eq. 3.7).
All functions are elementwise over arrays of parameters.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
from jax.scipy.special import betaln, digamma

STRETCH = (-0.1, 1.1)  # (l, r) of App. 3.C.1
EULER = 0.5772156649015329
KL_TERMS = 5  # terms of the Taylor series in Eq. 3.5 (App. 3.A: "the first 5 terms")
LAGRANGE_INIT = {"kl": 0.01, "l0": 0.06, "transitions": 0.02}  # λ1, λ2, λ3 (App. 3.C.1)
LAGRANGE_LR = 5e-4


def kuma_cdf(x, a, b):
    return 1.0 - (1.0 - jnp.clip(x, 0.0, 1.0) ** a) ** b


def kuma_sample(u, a, b):
    """F⁻¹(u; a, b) for u in (0, 1): differentiable in a and b."""
    return (1.0 - (1.0 - u) ** (1.0 / b)) ** (1.0 / a)


def hardkuma_sample(key, a, b, stretch=STRETCH):
    """z ∈ [0, 1] with exact 0s and 1s: stretch a Kuma sample to (l, r), then clip."""
    lo, hi = stretch
    u = jax.random.uniform(key, jnp.shape(a), minval=1e-6, maxval=1.0 - 1e-6)
    return jnp.clip(lo + (hi - lo) * kuma_sample(u, a, b), 0.0, 1.0)


def prob_zero(a, b, stretch=STRETCH):
    """P(z = 0) of HardKuma(a, b) (Eq. 3.7)."""
    lo, hi = stretch
    return kuma_cdf(-lo / (hi - lo), a, b)


def prob_one(a, b, stretch=STRETCH):
    """P(z = 1) of HardKuma(a, b) (Eq. 3.7)."""
    lo, hi = stretch
    return 1.0 - kuma_cdf((1.0 - lo) / (hi - lo), a, b)


def kl_kuma_beta(a, b, alpha, beta, terms: int = KL_TERMS):
    """KL(Kuma(a, b) ‖ Beta(α, β)), Eq. 3.5 with the infinite sum cut after ``terms`` terms."""
    m = jnp.arange(1, terms + 1, dtype=jnp.result_type(a, float))
    a_, b_ = jnp.expand_dims(a, -1), jnp.expand_dims(b, -1)
    series = jnp.sum(jnp.exp(betaln(m / a_, b_)) / (m + a_ * b_), -1)
    return ((a - alpha) / a * (-EULER - digamma(b) - 1.0 / b) + jnp.log(a * b) + betaln(alpha, beta)
            - (b - 1.0) / b + (beta - 1.0) * b * series)


def kl_kuma1_beta(a, alpha, beta, terms: int = 0):
    """KL(Kuma(a, 1) ‖ Beta(α, β)): Eq. 3.5 cut after ``terms`` terms (``kl_kuma_beta``), or with
    ``terms`` = 0 exactly: the whole series at b = 1, Σ_m B(m/a, 1)/(m + a) = Σ_m 1/m − 1/(m + a) =
    ψ(a + 1) + γ. Cut after 5 terms the series misses (β − 1)·(ψ(a + 1) + γ − Σ_{m≤5}), about
    (β − 1)·ln(1 + a/6): the cut KL can go negative, and a model trained on it can lower its loss by
    growing a where β > 1."""
    if terms:
        return kl_kuma_beta(a, jnp.ones_like(a), alpha, beta, terms)
    return -(a - alpha) / a + jnp.log(a) + betaln(alpha, beta) + (beta - 1.0) * (digamma(a + 1.0) + EULER)


def expected_l0(p_zero: jax.Array) -> jax.Array:
    """E‖z‖₀ = Σ_t (1 − P(z_t = 0)) over the last (time) axis (Eq. 3.9)."""
    return jnp.sum(1.0 - p_zero, -1)


def expected_transitions(p_zero: jax.Array) -> jax.Array:
    """E Σ_t 1[z_t ≠ z_{t+1}] with "≠" read as zero vs non-zero and the z_t independent given the
    trajectory (Eq. 3.11), over the last (time) axis."""
    chex.assert_rank(p_zero, {1, 2})
    p_tm1, p_t = p_zero[..., :-1], p_zero[..., 1:]
    return jnp.sum(p_tm1 * (1.0 - p_t) + (1.0 - p_tm1) * p_t, -1)


def l0_loss(p_zero, target):
    """L0 = (E‖z‖₀ − μ0)² (Eq. 3.8)."""
    return (expected_l0(p_zero) - target) ** 2


def transition_loss(p_zero, target):
    """LT = (E #switches − 2μ0)² (Eq. 3.10); ``target`` is 2μ0."""
    return (expected_transitions(p_zero) - target) ** 2


def lagrange_step(multipliers: dict, terms: dict, lr: float = LAGRANGE_LR) -> dict:
    """One step of gradient ascent of Eq. 3.12 in the multipliers: ∂/∂λ_i of Σ λ_i·term_i is term_i,
    so each λ grows with its (non-negative) term, enforcing that term harder, and stays ≥ 0."""
    return {k: jnp.maximum(0.0, v + lr * jax.lax.stop_gradient(terms[k])) for k, v in multipliers.items()}
