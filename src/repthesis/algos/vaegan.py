"""VAE-GAN and crVAE-GAN with the KL weighting and the mutual-information regulariser (thesis
§5.3.3, App. 5.D), for RGB images under a fixed-variance Gaussian (pixel MSE) likelihood.

Generator (encoder + decoder) loss, Eq. 5.4 with App. 5.D's normalisation (MSE averaged over
batch, channels, height and width; the other terms averaged over the batch only):

    L = MSE(x, dec(z ~ q(z|x))) + α1·Σ_{t ≤ 3} KL_t + α2·Σ_{t > 3} KL_t + β·L_adv + κ·L_MI

* KL_t is the KL of channel block t (Eq. 5.1); α1 weighs the first ``kl_first_blocks`` = 3 blocks,
  α2 the rest. A flat-latent VAE-GAN has one α (``kl_weight``).
* L_adv = −log D(x̃) over the discriminator's fakes (the non-saturating form of max log D(x̃)).
* L_MI regresses the code from a fake through q_ψ, which shares D's conv trunk: u = LSTM_gen(z)
  for crVAE-GAN (the thesis found u better than z), z for VAE-GAN. q_ψ is a Gaussian with fixed
  σ, so L_MI is an MSE (averaged over the code's units here); the code is a fixed target
  (stop-gradient), as InfoGAN treats its sampled codes.

Discriminator batch (App. 5.D): 50 % real images, 25 % decoded prior samples z ~ p(z), 25 %
reconstructions (of images not in the real half). Its loss is the binary cross-entropy plus κ·L_MI
(for q_ψ); its Adam step is skipped whenever its accuracy on that batch exceeds 90 % (Larsen and
Sønderby, 2016), the whole update (trunk, heads and optimiser state) left as it was.

``norm="batch"`` batch-normalises the encoder's and decoder's hidden convs (as for the VAEs): the
generator's pass uses the batch's statistics and moves the running averages (the decoder's twice:
reconstructions, then prior samples); evaluation, sampling and stage 2 use the averages. The
discriminator's trunk has no batch norm.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from repthesis.algos.vae import (VAEConfig, chunk_runner, data_parallel, learning_rate, make_network, make_optimizer,
                                 reconstruction_mse, training_network, with_batch_stats)
from repthesis.gen import objectives as obj
from repthesis.nn.vae import Discriminator, latent_side
from repthesis.rl import parallel
from repthesis.utils.config import check_fields


@dataclasses.dataclass(frozen=True)
class VAEGANConfig(VAEConfig):
    """crVAE-GAN defaults: Birds hyper-parameters of App. 5.D (α1 3e-4, α2 2e-4, β 0.0125, κ 0.02,
    Adam lr 3e-4), 64×64 images, on the in-project shapes set unless ``data`` says otherwise."""

    data: str = "shapes"
    image_size: int = 64
    mean_path: str = "conv"  # the thesis code's image models: a conv and an element-wise addition
    learning_rate: float = 3e-4  # Adam (ε 1e-8, β 0.9/0.999) for both networks
    total_steps: int = 20_000
    kl_weight_first: float = 3e-4  # α1: KL weight of the first kl_first_blocks channel blocks
    kl_weight: float = 2e-4  # α2 (α for a flat-latent VAE-GAN): KL weight of the other blocks
    kl_first_blocks: int = 3
    adversarial_weight: float = 0.0125  # β
    mi_weight: float = 0.02  # κ of the MI regulariser (0 turns it off)
    disc_skip_accuracy: float = 0.9  # the discriminator's step is skipped above this batch accuracy
    flip: bool = True  # random horizontal flips (App. 5.D's augmentation)

    def __post_init__(self):
        super().__post_init__()
        if self.batch_size % 4:
            raise ValueError(f"batch_size={self.batch_size} must be divisible by 4 "
                             f"(the discriminator's batch is ½ real, ¼ prior samples, ¼ reconstructions)")
        if self.stochastic_layers != 1 or self.iw_samples != 1:
            raise ValueError("VAE-GAN models have one stochastic layer and the single-sample bound; "
                             "valid: stochastic_layers=1, iw_samples=1")
        check_fields(self, non_negative=("kl_weight_first", "kl_weight", "adversarial_weight", "mi_weight"))
        if not 0 <= self.kl_first_blocks <= self.blocks:
            raise ValueError(f"kl_first_blocks={self.kl_first_blocks} must be in 0..blocks={self.blocks}")


@flax.struct.dataclass
class GANState:
    params: Any  # {"vae": encoder/decoder, "disc": D and q_ψ}
    opt_state: Any  # {"vae": ..., "disc": ...}
    rng: jax.Array
    step: jax.Array


def weighted_kl(mean: jax.Array, log_var: jax.Array, cfg: VAEGANConfig) -> jax.Array:
    """Eq. 5.1 with App. 5.D's weights, per example: α1·Σ_{t<first} KL_t + α2·Σ_{t≥first} KL_t
    over channel blocks of a [B, h, w, c] latent; α·KL for a flat [B, D] latent."""
    if mean.ndim == 2:
        return cfg.kl_weight * obj.kl_to_standard_normal(mean, log_var)
    per_block = obj.block_kl(mean, log_var, cfg.blocks)  # [B, T]
    weights = jnp.where(jnp.arange(cfg.blocks) < cfg.kl_first_blocks, cfg.kl_weight_first, cfg.kl_weight)
    return per_block @ weights


def discriminator_batch(real: jax.Array, from_prior: jax.Array, from_posterior: jax.Array):
    """(images, labels): the first half of ``real`` (label 1), then B/4 prior samples and B/4
    reconstructions (label 0), for a batch of B real images."""
    quarter = real.shape[0] // 4
    images = jnp.concatenate([real[:2 * quarter], from_prior[:quarter], from_posterior[:quarter]])
    labels = jnp.concatenate([jnp.ones(2 * quarter), jnp.zeros(2 * quarter)])
    return images, labels


def keep_if(skip: jax.Array, old, new):
    """``old`` where ``skip`` (a scalar bool) else ``new``, leaf by leaf."""
    return jax.tree.map(lambda o, n: jnp.where(skip, o, n), old, new)


def draw_batch(rng, data, n: int, axis, flip: bool):
    """(next rng, n training images drawn on this device (each flipped left-right with
    probability ½ when ``flip``), the loss's key); the device index is folded into the keys."""
    rng, k_batch, k_flip, k_loss = jax.random.split(rng, 4)
    device = jax.lax.axis_index(axis) if axis else 0
    k_batch, k_flip, k_loss = (jax.random.fold_in(k, device) for k in (k_batch, k_flip, k_loss))
    x = data[jax.random.randint(k_batch, (n,), 0, data.shape[0])]
    if flip:
        x = jnp.where(jax.random.bernoulli(k_flip, 0.5, (n, 1, 1, 1)), x[:, :, ::-1], x)
    return rng, x, k_loss


def adam_parts(optimizer, grads: dict, params: dict, opt_state: dict):
    """One optimiser step for each part (a GAN's generator and discriminator; the world graph's VAE and
    π_g): (params, opt_state). ``optimizer`` is shared, or a dict of one per part."""
    new_params, new_opt = {}, {}
    for part in grads:
        opt = optimizer[part] if isinstance(optimizer, dict) else optimizer
        updates, new_opt[part] = opt.update(grads[part], opt_state[part], params[part])
        new_params[part] = optax.apply_updates(params[part], updates)
    return new_params, new_opt


class Trainer(NamedTuple):
    cfg: VAEGANConfig
    network: Any  # the VAE (encoder/decoder)
    discriminator: Discriminator
    init: Any
    run_chunk: Any
    place: Any
    restore: Any
    evaluate: Any  # (vae params, images, key) -> validation reconstruction MSE per pixel
    losses: Any  # (params, x, key) -> (generator loss, discriminator loss, metrics); for tests
    nll: Any = None  # no likelihood: the decoder is trained adversarially
    headline: str = "loss"
    val_name: str = "val_mse"
    val_higher_is_better: bool = False
    curve: tuple = ("mse", "val_mse")  # what curve.png shows

    @staticmethod
    def vae_params(params):
        return params["vae"]


def make_train(cfg: VAEGANConfig, train_images: np.ndarray, binary: bool = False, num_devices: int = 1) -> Trainer:
    # the discriminator's batch is ½ real, ¼ prior samples, ¼ reconstructions on every device
    mesh, axis, per_device_batch = data_parallel(cfg, train_images, num_devices, groups=4)
    vae = make_network(cfg, train_images.shape[-1])
    code_size = latent_side(cfg.image_size) ** 2 * cfg.latent_channels
    disc = Discriminator(code_size if cfg.mi_weight > 0 else 0, cfg.width)
    # Adam (ε 1e-8) for both; the encoder/decoder's with the options of repthesis.algos.vae.make_optimizer
    # (crVAE-GAN's block LSTMs at a scaled rate, as the thesis code trains them), both on one lr schedule
    optimizer = {"vae": make_optimizer(cfg), "disc": optax.adam(learning_rate(cfg), eps=1e-8)}
    data = jnp.asarray(train_images)

    def init(rng) -> GANState:
        k_vae, k_disc, k_run = jax.random.split(rng, 3)
        x = jnp.zeros((1,) + data.shape[1:], jnp.float32)
        params = {"vae": vae.init(k_vae, x), "disc": disc.init(k_disc, x)}
        return GANState(params, {k: optimizer[k].init(v) for k, v in params.items()}, k_run, jnp.zeros((), jnp.int32))

    def forward(net, params, x, key):
        """The generator's pass: reconstructions, prior samples, the D batch and the MI codes. ``net``
        is the VAE or, with batch norm, its ``BatchStatsRecorder`` (the decoder's averages move on
        the reconstructions, then on the prior samples, as in the thesis code's two passes)."""
        k_z, k_p = jax.random.split(key)
        mean, log_var = net.apply(params["vae"], x, method=vae.encode)
        z = obj.reparameterise(k_z, mean, log_var)
        recon = net.apply(params["vae"], z, method=vae.decode)
        quarter = x.shape[0] // 4
        z_prior = net.apply(params["vae"], k_p, quarter, method=vae.sample_prior)
        from_prior = net.apply(params["vae"], z_prior, method=vae.decode)
        z_fake = jnp.concatenate([z_prior, z[2 * quarter:3 * quarter]])  # the codes of the D batch's fakes
        code = net.apply(params["vae"], z_fake, method=vae.transform).reshape(2 * quarter, -1)  # u (crVAE) or z
        images, labels = discriminator_batch(x, from_prior, recon[2 * quarter:])
        return mean, log_var, recon, images, labels, jax.lax.stop_gradient(code)

    def disc_terms(params_disc, images, labels, code):
        logits, code_pred = disc.apply(params_disc, images)
        n_real = images.shape[0] - code.shape[0]  # the batch is real images, then the fakes
        bce = jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))
        mi = jnp.zeros(()) if code_pred is None else jnp.mean(jnp.square(code_pred[n_real:] - code))  # −log q_ψ(u|x̃) + c
        adv = jnp.mean(jax.nn.softplus(-logits[n_real:]))  # −log D(x̃) over the fakes
        accuracy = jnp.mean((logits > 0) == (labels > 0.5))
        return bce, mi, adv, accuracy

    def losses(params, x, key):
        """(gradients, metrics, the decoder's and encoder's new batch-norm averages or None)."""
        def gen_loss(params_vae):
            net = training_network(vae, cfg.norm)
            mean, log_var, recon, images, labels, code = forward(net, {"vae": params_vae}, x, key)
            _, mi, adv, _ = disc_terms(jax.lax.stop_gradient(params["disc"]), images, labels, code)
            mse = jnp.mean(jnp.square(recon - x))
            kl = jnp.mean(weighted_kl(mean, log_var, cfg))
            loss = mse + kl + cfg.adversarial_weight * adv + cfg.mi_weight * mi
            metrics = {"loss": loss, "mse": mse, "weighted_kl": kl, "adversarial": adv,
                       "kl": jnp.mean(obj.kl_to_standard_normal(mean, log_var))}
            return loss, (images, labels, code, getattr(net, "updated", None), metrics)

        def disc_loss(params_disc, images, labels, code):
            bce, mi, _, accuracy = disc_terms(params_disc, jax.lax.stop_gradient(images), labels, code)
            return bce + cfg.mi_weight * mi, {"disc_loss": bce, "mi": mi, "disc_accuracy": accuracy}

        (g_loss, (images, labels, code, stats, g_metrics)), g_grads = jax.value_and_grad(gen_loss, has_aux=True)(
            params["vae"])
        (d_loss, d_metrics), d_grads = jax.value_and_grad(disc_loss, has_aux=True)(params["disc"], images, labels, code)
        return {"vae": g_grads, "disc": d_grads}, {**g_metrics, **d_metrics}, stats

    def step(state: GANState, data):
        rng, x, k_loss = draw_batch(state.rng, data, per_device_batch, axis, cfg.flip)
        grads, metrics, stats = losses(parallel.per_device(state.params, axis), x, k_loss)
        grads, metrics = parallel.pmean(grads, axis), parallel.pmean(metrics, axis)
        new_params, new_opt = adam_parts(optimizer, grads, state.params, state.opt_state)
        new_params["vae"] = with_batch_stats(new_params["vae"], stats, axis)
        skip = metrics["disc_accuracy"] > cfg.disc_skip_accuracy  # same on every device (pmean'd)
        new_params["disc"] = keep_if(skip, state.params["disc"], new_params["disc"])
        new_opt["disc"] = keep_if(skip, state.opt_state["disc"], new_opt["disc"])
        metrics["disc_skipped"] = skip.astype(jnp.float32)
        return GANState(new_params, new_opt, rng, state.step + 1), metrics

    run_chunk, place = chunk_runner(step, init, cfg, mesh, data)

    evaluate = reconstruction_mse(vae)

    return Trainer(cfg, vae, disc, lambda rng: place(jax.jit(init)(rng)), run_chunk, place, place, evaluate,
                   jax.jit(losses))
