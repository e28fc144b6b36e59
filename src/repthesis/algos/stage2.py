"""Stage 2 (thesis §5.4.3, App. 5.C/5.D "Stage2 objective"): an upsampler G from a trained,
frozen stage-1 model's 64×64 images to 128×128, trained adversarially with a perceptual loss.

With x a 128×128 training image, x̃_p = dec(z), z ~ p(z) and x̃_r = dec(z), z ~ q(z | ↓x) the
stage-1 prior sample and reconstruction (↓ = 2×2 average pooling, stage 1's view of x):

    L_D = −log D(x) − log(1 − D(G(x̃_p))) − log(1 − D(G(x̃_r)))          (each a batch mean)
    L_G = −log D(G(x̃_p)) − log D(G(x̃_r)) + γ·‖f(x) − f(G(x̃_r))‖²

The adversarial terms of L_G are the non-saturating form of the thesis's log(1 − D(·)). f is an
in-project feature network (the thesis used ImageNet VGG11 / ResNet50, which cannot be fetched
here): the conv trunk of a small classifier trained, before stage 2 starts, on the same
training images at 128×128, on their class labels where the dataset has them (the shapes set,
MNIST) and otherwise on the self-supervised task of predicting which of 4 rotations was applied
(Gidaris et al., 2018). The squared distance is averaged over the trunk's feature map. γ is
``perceptual_weight`` (thesis: 1 for Birds and CelebA, 10 for LSUN; 0 = without perceptual
loss, Fig. 5.9's comparison). Adam with StackGAN's lr 2e-4 and β1 0.5 (App. 5.C points to
StackGAN for stage 2 and gives no optimiser of its own).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from repthesis.algos.vae import chunk_runner, data_parallel, reconstruction_mse
from repthesis.algos.vaegan import adam_parts, draw_batch
from repthesis.gen import objectives as obj
from repthesis.gen.quality import Classifier, train_classifier
from repthesis.nn.stage2 import TwoStage, Upsampler, combine, downsample
from repthesis.nn.vae import Discriminator
from repthesis.rl import parallel
from repthesis.utils.config import check_fields, read_run

STAGE1_ALGOS = ("vae-gan", "crvae-gan", "cvae", "crvae", "vae")  # runs on RGB images (Gaussian likelihood)


@dataclasses.dataclass(frozen=True)
class Stage2Config:
    stage1: str = ""  # run directory of a finished stage-1 run (--algo=crvae-gan, vae-gan, ...) on RGB images
    data: str = "shapes"  # must be the stage-1 run's data; images are loaded at image_size
    image_size: int = 128  # 2 × the stage-1 run's image size
    width: int = 32  # G's and D's conv width
    res_blocks: int = 2  # G's residual blocks at S/4
    skip: bool = True  # G corrects the nearest-upsampled input (False: StackGAN's plain generator)
    perceptual_weight: float = 1.0  # γ (thesis: 1 Birds/CelebA, 10 LSUN; 0: no perceptual loss)
    feature_steps: int = 1000  # Adam steps that train the feature network f before stage 2 starts
    learning_rate: float = 2e-4  # Adam for G and D (StackGAN)
    beta1: float = 0.5
    batch_size: int = 32
    total_steps: int = 10_000
    steps_per_chunk: int = 250
    checkpoint_every: int = 4
    flip: bool = True  # random horizontal flips
    update_loop: str = "auto"

    def __post_init__(self):
        check_fields(self, choices={"update_loop": parallel.UPDATE_LOOPS},
                     positive=("width", "batch_size", "total_steps", "steps_per_chunk", "checkpoint_every",
                               "learning_rate"),
                     non_negative=("res_blocks", "perceptual_weight", "feature_steps"))
        if not 0 <= self.beta1 < 1:
            raise ValueError(f"beta1={self.beta1} must be in [0, 1)")
        if self.image_size % 8:
            raise ValueError(f"image_size={self.image_size} must be a multiple of 8 (2 × a stage-1 size that is a multiple of 4)")

    @property
    def num_chunks(self) -> int:
        return max(1, math.ceil(self.total_steps / self.steps_per_chunk))


def check_stage1(cfg: Stage2Config) -> dict:
    """The stage-1 run's saved config.json, after checking it fits ``cfg``; raises ValueError
    with a one-line message otherwise (before anything is built)."""
    if not cfg.stage1:
        raise ValueError("--algo=stage2 needs --stage1=DIR, the run directory of a trained stage-1 model "
                         f"(--algo={'|'.join(STAGE1_ALGOS)} on RGB images)")
    saved = read_run(cfg.stage1, "--stage1", STAGE1_ALGOS)
    s1 = saved["config"]
    if s1["data"] != cfg.data:
        raise ValueError(f"--data={cfg.data} but the stage-1 run was trained on {s1['data']}; pass --data={s1['data']}")
    if s1["data"] == "mnist":
        raise ValueError("stage 2 is for RGB images (Gaussian likelihood); the stage-1 run is on binarised MNIST")
    if cfg.image_size != 2 * s1["image_size"]:
        raise ValueError(f"--image-size={cfg.image_size}: stage 2 doubles the stage-1 size {s1['image_size']}; "
                         f"valid: {2 * s1['image_size']}")
    if not os.path.isdir(os.path.join(cfg.stage1, "checkpoints")):
        raise ValueError(f"--stage1={cfg.stage1!r} has no checkpoints yet")
    return saved


@flax.struct.dataclass
class Stage2State:
    params: Any  # {"g": G, "disc": D}
    opt_state: Any
    features: Any  # f's parameters: trained once by Trainer.prepare, then fixed
    rng: jax.Array
    step: jax.Array


def feature_targets(images: np.ndarray, labels: np.ndarray | None, seed: int = 0, rotations_of: int = 1024):
    """(images, labels, classes) that train f: the dataset's labels where it has them, otherwise
    4-way rotation prediction on ``rotations_of`` images (each in all 4 rotations)."""
    if labels is not None:
        return images, np.asarray(labels), int(np.max(labels)) + 1
    pick = np.random.default_rng(seed).permutation(len(images))[:rotations_of]
    base = images[pick]
    rotated = np.concatenate([np.rot90(base, k, axes=(1, 2)) for k in range(4)])
    return rotated, np.repeat(np.arange(4), len(base)), 4


class Trainer(NamedTuple):
    cfg: Stage2Config
    network: TwoStage  # stage 1 then G: what the sample grids, traversals and completion use
    upsampler: Upsampler
    discriminator: Discriminator
    init: Any
    prepare: Any  # state -> state with f trained (run once, before the first chunk of a new run)
    run_chunk: Any
    place: Any
    restore: Any
    evaluate: Any  # (TwoStage variables, 2S images, key) -> per-pixel MSE of the two-stage reconstruction
    losses: Any  # (params, features, x, key) -> (grads, metrics); for tests
    vae_params: Any  # state.params -> TwoStage variables
    headline: str = "g_loss"
    val_name: str = "val_mse"
    val_higher_is_better: bool = False
    curve: tuple = ("mse", "val_mse")
    nll: Any = None


def make_train(cfg: Stage2Config, train_images: np.ndarray, binary: bool = False, num_devices: int = 1, *,
               stage1=None, labels: np.ndarray | None = None) -> Trainer:
    """``stage1`` = (stage-1 VAE module, its variables), frozen; ``labels`` of ``train_images`` (or
    None) for the feature network."""
    if stage1 is None:
        raise ValueError("stage 2 needs the stage-1 model (stage1=(network, variables))")
    if binary:
        raise ValueError("stage 2 is for RGB images (Gaussian likelihood), not binarised data")
    mesh, axis, per_device_batch = data_parallel(cfg, train_images, num_devices)
    s1_net, s1_vars = stage1
    channels = train_images.shape[-1]
    g = Upsampler(channels, cfg.width, cfg.res_blocks, cfg.skip)
    disc = Discriminator(0, cfg.width)
    network = TwoStage(s1_net, g)
    f_classes = int(np.max(labels)) + 1 if labels is not None else 4  # the rotations' 4 otherwise
    feature_net = Classifier(f_classes)
    optimizer = optax.adam(cfg.learning_rate, b1=cfg.beta1)
    constants = {"data": jnp.asarray(train_images), "stage1": s1_vars}

    def features(f_params, x):
        return feature_net.apply(f_params, x, method=feature_net.features)

    def init(rng) -> Stage2State:
        k_g, k_d, k_f, k_run = jax.random.split(rng, 4)
        x = jnp.zeros((1, cfg.image_size, cfg.image_size, channels), jnp.float32)
        params = {"g": g.init(k_g, downsample(x)), "disc": disc.init(k_d, x)}
        return Stage2State(params, {k: optimizer.init(v) for k, v in params.items()}, feature_net.init(k_f, x),
                           k_run, jnp.zeros((), jnp.int32))

    def prepare(state: Stage2State) -> Stage2State:
        if cfg.feature_steps == 0:
            return state  # f stays at its random initialisation
        f_images, f_labels, _ = feature_targets(train_images, labels)  # built here, not for every trainer
        _, f_params = train_classifier(f_images, f_labels, f_classes, steps=cfg.feature_steps, batch=64,
                                       seed=int(jax.random.randint(state.rng, (), 0, 2**30)))
        return place(state.replace(features=f_params))

    def stage1_images(s1, x, key):
        """(prior samples, reconstructions) of stage 1 for a batch of 2S images x."""
        k_z, k_p = jax.random.split(key)
        mean, log_var = s1_net.apply(s1, downsample(x), method=s1_net.encode)
        recon = s1_net.apply(s1, obj.reparameterise(k_z, mean, log_var), method=s1_net.decode)
        z_prior = s1_net.apply(s1, k_p, x.shape[0], method=s1_net.sample_prior)
        prior = s1_net.apply(s1, z_prior, method=s1_net.decode)
        return jax.lax.stop_gradient(prior), jax.lax.stop_gradient(recon)

    def losses(params, f_params, s1, x, key):
        from_prior, from_recon = stage1_images(s1, x, key)
        target = features(f_params, x)

        def g_loss(p_g):
            fake_p, fake_r = g.apply(p_g, from_prior), g.apply(p_g, from_recon)
            logits_p, _ = disc.apply(params["disc"], fake_p)
            logits_r, _ = disc.apply(params["disc"], fake_r)
            adversarial = jnp.mean(jax.nn.softplus(-logits_p)) + jnp.mean(jax.nn.softplus(-logits_r))
            perceptual = jnp.mean(jnp.square(features(f_params, fake_r) - target))
            loss = adversarial + cfg.perceptual_weight * perceptual
            return loss, (fake_p, fake_r, {"g_loss": loss, "adversarial": adversarial, "perceptual": perceptual,
                                           "mse": jnp.mean(jnp.square(fake_r - x))})

        def d_loss(p_d, fake_p, fake_r):
            real, _ = disc.apply(p_d, x)
            logits_p, _ = disc.apply(p_d, fake_p)
            logits_r, _ = disc.apply(p_d, fake_r)
            loss = (jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(logits_p))
                    + jnp.mean(jax.nn.softplus(logits_r)))
            accuracy = jnp.mean(jnp.concatenate([real > 0, logits_p < 0, logits_r < 0]))
            return loss, {"disc_loss": loss, "disc_accuracy": accuracy}

        (_, (fake_p, fake_r, g_metrics)), g_grads = jax.value_and_grad(g_loss, has_aux=True)(params["g"])
        fake_p, fake_r = jax.lax.stop_gradient(fake_p), jax.lax.stop_gradient(fake_r)
        (_, d_metrics), d_grads = jax.value_and_grad(d_loss, has_aux=True)(params["disc"], fake_p, fake_r)
        return {"g": g_grads, "disc": d_grads}, {**g_metrics, **d_metrics}

    def step(state: Stage2State, consts):
        rng, x, k_loss = draw_batch(state.rng, consts["data"], per_device_batch, axis, cfg.flip)
        grads, metrics = losses(parallel.per_device(state.params, axis), state.features, consts["stage1"], x, k_loss)
        grads, metrics = parallel.pmean(grads, axis), parallel.pmean(metrics, axis)
        new_params, new_opt = adam_parts(optimizer, grads, state.params, state.opt_state)
        return state.replace(params=new_params, opt_state=new_opt, rng=rng, step=state.step + 1), metrics

    run_chunk, place = chunk_runner(step, init, cfg, mesh, constants)

    def vae_params(params):
        return combine(s1_vars, params["g"])

    evaluate = reconstruction_mse(network, batch=100)

    return Trainer(cfg, network, g, disc, lambda rng: place(jax.jit(init)(rng)), prepare, run_chunk, place, place,
                   evaluate, jax.jit(losses), vae_params)
