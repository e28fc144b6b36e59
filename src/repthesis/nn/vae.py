"""VAE, convolutional VAE and channel-recurrent VAE networks (thesis §5.3, App. 5.A/5.B).

* ``vae``:   conv encoder → FC → z ∈ R^D → FC → deconv decoder (Kingma & Welling).
* ``cvae``:  fully convolutional; z ∈ R^{h×w×c} with a spatially independent prior (Sohn et al.).
* ``crvae``: the cVAE mean path; the variance path's h×w×c map is cut into T blocks of c/T
  channels, each flattened, and an LSTM over the blocks gives the log-variances (σ^rnn); in
  generation z = [z_1 … z_T] passes through another LSTM, u = LSTM(z), then a per-block linear
  map (its bias is App. 5.A's element-wise addition) before the decoder. ``recurrent`` places
  the LSTM on the inference path, the generation path or both (Table 5.B.1).

The thesis defers layer sizes to its code release; ours are stated here: encoder convs 32-64-128
(4×4/2, 4×4/2, 3×3/2, LeakyReLU) to a ⌈S/8⌉² map; decoder a 3×3 conv, a resize to S/4, and two
4×4/2 transposed convs. Every model has the same latent size D = ⌈S/8⌉²·c (Table 5.B.1 keeps it
fixed). Modules are batched ([B, H, W, C] images) and never compute losses (STYLE.md §2).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

KINDS = ("vae", "cvae", "crvae")
RECURRENT = ("both", "inference", "generation")


def latent_side(image_size: int) -> int:
    return math.ceil(image_size / 8)


def check_image_size(image_size: int) -> None:
    if image_size < 16 or image_size % 4:
        raise ValueError(f"image size {image_size} cannot be taken by the encoder/decoder; "
                         f"valid: a multiple of 4, at least 16 (e.g. 28, 32, 64, 128)")


class Encoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        for features, kernel in ((32, 4), (64, 4), (128, 3)):
            x = nn.leaky_relu(nn.Conv(features, (kernel, kernel), (2, 2), padding="SAME")(x), 0.2)
        return x  # [B, ⌈S/8⌉, ⌈S/8⌉, 128]


class Decoder(nn.Module):
    image_size: int
    channels: int

    @nn.compact
    def __call__(self, h):
        s = self.image_size // 4
        h = nn.leaky_relu(nn.Conv(128, (3, 3), padding="SAME")(h), 0.2)
        h = jax.image.resize(h, (h.shape[0], s, s, h.shape[-1]), "nearest")
        h = nn.leaky_relu(nn.ConvTranspose(64, (4, 4), (2, 2), padding="SAME")(h), 0.2)
        h = nn.leaky_relu(nn.ConvTranspose(32, (4, 4), (2, 2), padding="SAME")(h), 0.2)
        return nn.Conv(self.channels, (3, 3), padding="SAME")(h)  # Bernoulli logits / Gaussian means


def to_blocks(z: jax.Array, blocks: int) -> jax.Array:
    """[B, h, w, c] → [B, T, h·w·c/T]: block t holds channels t·c/T … (t+1)·c/T − 1, flattened."""
    b, h, w, c = z.shape
    return z.reshape(b, h, w, blocks, c // blocks).transpose(0, 3, 1, 2, 4).reshape(b, blocks, -1)


def from_blocks(u: jax.Array, shape: tuple[int, int, int]) -> jax.Array:
    h, w, c = shape
    b, t, _ = u.shape
    return u.reshape(b, t, h, w, c // t).transpose(0, 2, 3, 1, 4).reshape(b, h, w, c)


class BlockLSTM(nn.Module):
    """LSTM over the T channel blocks, then a per-step linear map back to the block size."""

    hidden: int

    @nn.compact
    def __call__(self, blocks: jax.Array) -> jax.Array:
        h = nn.RNN(nn.OptimizedLSTMCell(self.hidden))(blocks)  # causal over t: u_t sees z_1..z_t
        return nn.Dense(blocks.shape[-1])(h)


class VAE(nn.Module):
    kind: str = "crvae"
    image_size: int = 28
    channels: int = 1  # image channels
    latent_channels: int = 16  # c of the latent map; vae uses D = ⌈S/8⌉²·c units
    blocks: int = 8  # T, channel blocks of crvae
    recurrent: str = "both"  # where crvae's LSTM sits: both | inference | generation
    lstm_size: int = 256

    def setup(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown model {self.kind!r}; valid: {', '.join(KINDS)}")
        if self.recurrent not in RECURRENT:
            raise ValueError(f"recurrent={self.recurrent!r} is not valid; valid: {', '.join(RECURRENT)}")
        if self.kind == "crvae" and self.latent_channels % self.blocks:
            raise ValueError(f"latent_channels={self.latent_channels} must be divisible by blocks={self.blocks}")
        check_image_size(self.image_size)
        side = latent_side(self.image_size)
        self.latent_shape = (side, side, self.latent_channels)
        self.encoder = Encoder()
        self.decoder = Decoder(self.image_size, self.channels)
        d = side * side * self.latent_channels
        if self.kind == "vae":
            self.enc_mean, self.enc_log_var = nn.Dense(d), nn.Dense(d)
            self.dec_in = nn.Dense(side * side * 128)
        else:
            self.enc_mean = nn.Conv(self.latent_channels, (3, 3), padding="SAME")
            self.enc_log_var = nn.Conv(self.latent_channels, (3, 3), padding="SAME")
        if self.kind == "crvae":
            if self.recurrent in ("both", "inference"):
                self.inference_lstm = BlockLSTM(self.lstm_size)
            if self.recurrent in ("both", "generation"):
                self.generation_lstm = BlockLSTM(self.lstm_size)

    def __call__(self, x):
        """Posterior parameters and the decoder output at the posterior mean (for init)."""
        mean, log_var = self.encode(x)
        return self.decode(mean), (mean, log_var)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """q(z|x) = N(mean, exp(log_var)); both [B, D] (vae) or [B, h, w, c]."""
        h = self.encoder(x)
        if self.kind == "vae":
            h = h.reshape(h.shape[0], -1)
            return self.enc_mean(h), self.enc_log_var(h)
        mean, log_var = self.enc_mean(h), self.enc_log_var(h)
        if self.kind == "crvae" and self.recurrent in ("both", "inference"):
            log_var = from_blocks(self.inference_lstm(to_blocks(log_var, self.blocks)), self.latent_shape)  # σ^rnn
        return mean, log_var

    def transform(self, z: jax.Array) -> jax.Array:
        """u = LSTM_gen(z) for crvae with generation recurrency, else z (what the decoder sees)."""
        if self.kind == "crvae" and self.recurrent in ("both", "generation"):
            return from_blocks(self.generation_lstm(to_blocks(z, self.blocks)), self.latent_shape)
        return z

    def decode(self, z: jax.Array) -> jax.Array:
        """p(x|z): Bernoulli logits or Gaussian means, [B, S, S, channels]."""
        u = self.transform(z)
        if self.kind == "vae":
            u = self.dec_in(u).reshape((u.shape[0],) + self.latent_shape[:2] + (128,))
        return self.decoder(u)
