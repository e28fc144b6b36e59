"""The one recurrent core shared by every method: an LSTM with episode-reset masking."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class ResetLSTM(nn.Module):
    """LSTM cell whose carry is zeroed where ``reset`` is true (first step of an episode).

    Works on unbatched ([F]) or batched ([..., F]) inputs; ``reset`` broadcasts over the
    feature axis. Resetting *before* the step is what keeps one episode's memory from
    leaking into the next when environments auto-reset inside a rollout.
    """

    features: int

    @nn.compact
    def __call__(self, carry, x: jax.Array, reset: jax.Array):
        reset = jnp.asarray(reset)[..., None]
        carry = jax.tree.map(lambda c: jnp.where(reset, jnp.zeros_like(c), c), carry)
        return nn.OptimizedLSTMCell(self.features, name="cell")(carry, x)

    @staticmethod
    def initial_carry(features: int, batch_shape: tuple[int, ...] = ()):
        zeros = jnp.zeros(batch_shape + (features,), jnp.float32)
        return (zeros, zeros)
