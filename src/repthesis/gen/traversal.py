"""Latent channel semantics (thesis §5.4.5): latents that build an image block by block (Fig. 5.8)
and that move one channel block while the others stay fixed (Fig. 5.10).

Latents are [B, h, w, c] maps cut into T channel blocks (``nn.vae.to_blocks``: block t holds
channels t·c/T … (t+1)·c/T − 1). Both functions return latents to decode, row-major.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def block_mask(c: int, blocks: int, upto: int) -> jax.Array:
    """[c] mask, 1 on the channels of blocks 0 … upto − 1."""
    return (jnp.arange(c) // (c // blocks) < upto).astype(jnp.float32)


def progressive(z: jax.Array, blocks: int) -> jax.Array:
    """Fig. 5.8: for each of the n latents in z [n, h, w, c], T + 1 versions with blocks 0 … t−1
    sampled (as in z) and the rest zero, t = 0 … T: [n·(T + 1), h, w, c], one row per latent."""
    c = z.shape[-1]
    masks = jnp.stack([block_mask(c, blocks, t) for t in range(blocks + 1)])  # [T+1, c]
    return (z[:, None] * masks[None, :, None, None, :]).reshape((-1,) + z.shape[1:])


def interpolate_blocks(z: jax.Array, z_tilde: jax.Array, blocks: int, steps: int = 8) -> jax.Array:
    """Fig. 5.10: for every block t, ``steps`` latents that move block t of z [h, w, c] linearly to
    z_tilde's block t, the other blocks fixed: [T·steps, h, w, c], one row per block."""
    c = z.shape[-1]
    w = jnp.linspace(0.0, 1.0, steps)
    rows = []
    for t in range(blocks):
        only_t = block_mask(c, blocks, t + 1) - block_mask(c, blocks, t)
        rows.append(z[None] + (w[:, None, None, None] * only_t) * (z_tilde - z)[None])
    return jnp.concatenate(rows)
