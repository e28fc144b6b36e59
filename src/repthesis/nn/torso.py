"""Per-example observation encoders (vmapped over envs by the caller): MLP for MinAtar-style inputs, the two CNNs of thesis Table 2.G.2."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from repthesis.nn.stochastic import crelu

# (filters, kernel, stride, padding, activation). Table 2.G.2, in NHWC. The table lists conv7
# with padding 0 but an unchanged 10×10 output; we use padding 1 to keep its stated sizes.
DEFAULT_CNN = (
    (32, 5, 1, 2, "leaky"), (32, 3, 2, 1, "leaky"), (32, 5, 1, 2, "leaky"), (32, 3, 2, 1, "leaky"),
    (64, 3, 1, 1, "leaky"), (64, 3, 2, 1, "leaky"), (64, 3, 1, 1, "leaky"), (64, 3, 2, 1, "leaky"),
)
# Slimmer CNN (Boxing, Breakout, Freeway): layers whose output has twice their filters use
# CReLU (Table 2.G.2 caption); where the table's sizes disagree we keep its output sizes.
SLIM_CNN = (
    (16, 5, 1, 2, "crelu"), (32, 3, 2, 1, "leaky"), (16, 5, 1, 2, "leaky"), (32, 3, 2, 1, "leaky"),
    (32, 3, 1, 1, "crelu"), (64, 3, 2, 1, "leaky"), (32, 3, 1, 1, "leaky"), (64, 3, 2, 1, "leaky"),
)


def _activation(name: str, x: jax.Array) -> jax.Array:
    return crelu(x) if name == "crelu" else nn.leaky_relu(x)


class MLPTorso(nn.Module):
    """Flatten one observation, then Dense+LeakyReLU layers; the MinAtar / gymnax encoder."""

    hidden_sizes: Sequence[int] = (256,)

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs.reshape(-1).astype(jnp.float32)
        for size in self.hidden_sizes:
            x = nn.leaky_relu(nn.Dense(size)(x))
        return x


class CNNTorso(nn.Module):
    """Thesis Atari encoder (Table 2.G.2) on one [H, W, C] frame; output flattened."""

    layers: Sequence[tuple] = DEFAULT_CNN

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs.astype(jnp.float32)
        for filters, kernel, stride, pad, act in self.layers:
            x = nn.Conv(filters, (kernel, kernel), (stride, stride), padding=((pad, pad), (pad, pad)))(x)
            x = _activation(act, x)
        return x.reshape(-1)


TORSOS = ("mlp", "cnn", "cnn_slim")


def make_torso(kind: str, hidden_size: int) -> nn.Module:
    """One of ``TORSOS``: 'mlp' (MinAtar, gymnax), 'cnn' (default Atari), 'cnn_slim'."""
    if kind == "mlp":
        return MLPTorso((hidden_size,))
    if kind == "cnn":
        return CNNTorso(DEFAULT_CNN)
    if kind == "cnn_slim":
        return CNNTorso(SLIM_CNN)
    raise ValueError(f"unknown torso {kind!r}; valid: {', '.join(TORSOS)}")
