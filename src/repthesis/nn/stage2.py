"""Stage 2 of §5.4.3: an upsampling generator G that turns a stage-1 image (64×64) into one of
twice the side (128×128), in the manner of StackGAN's Stage-II generator (Zhang et al., 2016a)
without its text conditioning, and ``TwoStage``, stage 1's VAE with G on its output, which
offers the VAE's methods (encode / decode / sample_prior / transform) so that every tool made
for a generative run (sample grids, reconstructions, traversals, completion) works on it.

Layout of G (width w): 3×3 conv (w) → two 4×4 stride-2 convs (2w, 4w) down to S/4 → residual
blocks at 4w → three ×2 sub-pixel upsamplings (2w, w, w) to 2S → 3×3 conv to the image. App. 5.C
replaces StackGAN's nearest-upsample + 3×3 conv by a 4×4/2 deconvolution for CelebA; here each
×2 step is a 3×3 conv to 4× the channels and a depth-to-space (as expressive as a 4×4/2
deconvolution, and 3–4× cheaper to differentiate on XLA:CPU). No batch normalisation, as in
the rest of the chapter's networks. With ``skip`` (default) G predicts a correction to the
nearest-neighbour upsampled input rather than the whole image: a choice of ours that makes
the identity map the starting point; ``skip=False`` is StackGAN's plain form.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from repthesis.nn.vae import VAE, depth_to_space


def downsample(x: jax.Array, factor: int = 2) -> jax.Array:
    """Average pooling by ``factor``: the stage-1 view of a stage-2 image ([B, fS, fS, C] → [B, S, S, C])."""
    b, h, w, c = x.shape
    return x.reshape(b, h // factor, factor, w // factor, factor, c).mean((2, 4))


def upsample_nearest(x: jax.Array, factor: int = 2) -> jax.Array:
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


class Upsampler(nn.Module):
    channels: int
    width: int = 32
    res_blocks: int = 2
    skip: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:  # [B, S, S, C] → [B, 2S, 2S, C]
        w = self.width
        h = nn.relu(nn.Conv(w, (3, 3), padding="SAME")(x))
        h = nn.relu(nn.Conv(2 * w, (4, 4), (2, 2), padding="SAME")(h))
        h = nn.relu(nn.Conv(4 * w, (4, 4), (2, 2), padding="SAME")(h))
        for _ in range(self.res_blocks):
            r = nn.relu(nn.Conv(4 * w, (3, 3), padding="SAME")(h))
            h = nn.relu(h + nn.Conv(4 * w, (3, 3), padding="SAME")(r))
        for features in (2 * w, w, w):  # S/4 → S/2 → S → 2S
            h = nn.relu(depth_to_space(nn.Conv(4 * features, (3, 3), padding="SAME")(h)))
        out = nn.Conv(self.channels, (3, 3), padding="SAME")(h)
        return out + upsample_nearest(x) if self.skip else out


class TwoStage(nn.Module):
    """Stage 1 (a trained VAE / VAE-GAN / crVAE-GAN, frozen) then G. Variables:
    ``{"params": {"stage1": ..., "upsampler": ...}}`` (``combine`` builds them)."""

    stage1: VAE
    upsampler: Upsampler

    @property
    def kind(self) -> str:
        return self.stage1.kind

    @property
    def stochastic_layers(self) -> int:
        return self.stage1.stochastic_layers

    @property
    def blocks(self) -> int:
        return self.stage1.blocks

    def __call__(self, x):
        mean, _ = self.encode(x)
        return self.decode(mean)

    def encode(self, x: jax.Array):  # a 2S image: stage 1 encodes its S×S view
        return self.stage1.encode(downsample(x))

    def sample_prior(self, key: jax.Array, n: int) -> jax.Array:
        return self.stage1.sample_prior(key, n)

    def transform(self, z: jax.Array) -> jax.Array:
        return self.stage1.transform(z)

    def decode(self, z: jax.Array) -> jax.Array:
        return self.upsampler(self.stage1.decode(z))


def combine(stage1_variables, upsampler_variables):
    """TwoStage's variables from stage 1's (with its batch norms' running averages, if any) and G's."""
    variables = {"params": {"stage1": stage1_variables["params"], "upsampler": upsampler_variables["params"]}}
    if "batch_stats" in stage1_variables:
        variables["batch_stats"] = {"stage1": stage1_variables["batch_stats"]}
    return variables
