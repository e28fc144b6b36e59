"""Image completion by optimising the latent code (thesis §5.4.4, App. 5.D; Yan et al., 2016):

    min_z  ‖x̂ ⊙ m − x ⊙ m‖² − γ·log N(z; 0, I) + τ·log(1 − D(x̂)),   x̂ = dec(z)

m is 1 on known pixels and 0 on occluded ones; γ = 1e-5 and τ = 0.003 (App. 5.D). The thesis
prints "+ γ log N(z; 0, I)"; minimising that would push z away from the prior, so the prior term
is taken as the penalty −γ log N(z) it is meant to be. The τ term needs a discriminator (VAE-GAN,
crVAE-GAN) and is dropped for plain VAEs. z starts at the posterior mean of the masked image and
is optimised with Adam; the completion keeps the known pixels: x ⊙ m + x̂ ⊙ (1 − m).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from repthesis.gen import objectives as obj

MASKS = ("lower", "upper", "left", "right", "center", "eyes", "mouth")


def make_mask(name: str, size: int, channels: int) -> np.ndarray:
    """[size, size, channels] float mask, 0 on the occluded region: a half (lower/upper/left/right),
    the central quarter (LSUN's blocks), or a horizontal band where aligned faces have their eyes
    (rows 25–45 %) or mouth (rows 65–85 %)."""
    m = np.ones((size, size, channels), np.float32)
    h = size // 2
    regions = {"lower": (slice(h, None), slice(None)), "upper": (slice(None, h), slice(None)),
               "left": (slice(None), slice(None, h)), "right": (slice(None), slice(h, None)),
               "center": (slice(size // 4, size - size // 4), slice(size // 4, size - size // 4)),
               "eyes": (slice(int(0.25 * size), int(0.45 * size)), slice(int(0.15 * size), int(0.85 * size))),
               "mouth": (slice(int(0.65 * size), int(0.85 * size)), slice(int(0.25 * size), int(0.75 * size)))}
    if name not in regions:
        raise ValueError(f"unknown mask {name!r}; valid: {', '.join(MASKS)}")
    m[regions[name]] = 0.0
    return m


def completion_loss(decode, discriminate, z, x, mask, gamma: float, tau: float) -> jax.Array:
    """Per-image objective; ``discriminate`` (images → logits) may be None (no τ term)."""
    x_hat = decode(z)
    loss = jnp.sum(jnp.square((x_hat - x) * mask).reshape(x.shape[0], -1), -1)
    loss = loss - gamma * obj.standard_normal_log_density(z)
    if discriminate is not None and tau:
        loss = loss - tau * jax.nn.softplus(discriminate(x_hat))  # τ·log(1 − D(x̂)) = −τ·softplus(logit)
    return loss


def complete(decode, encode, discriminate, x, mask, steps: int = 300, learning_rate: float = 0.05,
             gamma: float = 1e-5, tau: float = 3e-3):
    """(completions, x̂, objective per step [steps + 1]) for images x [B, S, S, C] and mask [S, S, C]."""
    if steps < 0:
        raise ValueError(f"steps={steps} must be >= 0")
    x, mask = jnp.asarray(x), jnp.asarray(mask)
    z = encode(x * mask)
    opt = optax.adam(learning_rate)
    opt_state = opt.init(z)

    def total(z):
        return jnp.mean(completion_loss(decode, discriminate, z, x, mask, gamma, tau))

    @jax.jit
    def step(z, opt_state):  # one program per step: XLA:CPU is slow at conv gradients inside loops
        loss, g = jax.value_and_grad(total)(z)
        updates, opt_state = opt.update(g, opt_state)
        return optax.apply_updates(z, updates), opt_state, loss

    history = []
    for _ in range(steps):
        z, opt_state, loss = step(z, opt_state)
        history.append(float(loss))
    history.append(float(jax.jit(total)(z)))
    x_hat = decode(z)
    return x * mask + x_hat * (1 - mask), x_hat, np.array(history)
