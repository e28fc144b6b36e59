"""VAE / cVAE / crVAE / crIWAE training and NLL evaluation (thesis §5.3, App. 5.B, Table 5.B.1).

``make_train(cfg, dataset)`` returns the same kind of ``Trainer`` as the RL side: ``init(rng)``,
``run_chunk(state)`` (a jitted ``lax.scan`` over ``steps_per_chunk`` optimiser steps, batches drawn
on device from the training set, dynamically binarised for MNIST) and data-parallel gradients
(``pmean`` under ``shard_map``). ``log_weights`` and ``nll`` give the importance-sampled
log-likelihood of App. 5.B (10K samples in the thesis), in nats, batched over samples so that
memory is bounded by ``nll_chunk`` samples at a time.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from repthesis.gen import objectives as obj
from repthesis.nn.vae import KINDS, LAYOUTS, LSTM_SCHEDULES, MEAN_PATHS, NORMS, RECURRENT, VAE, check_image_size, check_layout
from repthesis.rl import parallel
from repthesis.utils.config import check_fields


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Hyper-parameters (Table 5.B.1 ablation on binarised MNIST)."""

    data: str = "mnist"  # repthesis.data name: mnist | shapes | folder:PATH
    model: str = "crvae"  # vae | cvae | crvae
    recurrent: str = "both"  # crvae's LSTM on the inference path, the generation path or both
    blocks: int = 8  # T, channel blocks (Table 5.B.1: 4, 8, 16)
    latent_channels: int = 16  # c of the latent map; every model has D = ⌈S/8⌉²·c latent units
    lstm_size: int = 256  # units of crvae's block LSTMs
    lstm_layers: int = 2  # stacked layers of each block LSTM (the thesis code's 2)
    lstm_forget_bias: float = 0.0  # initial forget-gate bias of the block LSTMs (the thesis code: 1)
    lstm_schedule: str = "auto"  # stacked LSTMs layer by layer or as a wavefront; auto: layer by layer (faster as measured)
    mean_path: str = "dense"  # crvae's posterior mean: dense (FC, the thesis code's MNIST crVAE) | conv (cVAE's)
    width: int = 32  # conv channels: encoder w-2w-4w, decoder 4w-2w-w
    norm: str = "none"  # batch: batch norm after the hidden convs (the thesis code's; running averages at evaluation)
    layout: str = "compact"  # thesis: the thesis code's deeper encoder/decoder (CReLU, extra 3×3 convs; nn/vae.py)
    stochastic_layers: int = 1  # 2: a top latent z2 above the model's latent (Table 5.B.1's 2-layer crVAE)
    top_latent: int = 64  # units of z2 when stochastic_layers=2
    iw_samples: int = 1  # K of the training bound: 1 = ELBO, > 1 = IWAE (crIWAE with model=crvae)
    image_size: int = 28  # images are resized to this (MNIST: 28)
    batch_size: int = 64  # per optimiser step (over all devices)
    learning_rate: float = 1e-3  # Adam
    recurrent_lr_scale: float = 1.0  # crvae's block LSTMs train at this × learning_rate (the thesis code: 1/T)
    recurrent_grad_clip: float = 0.0  # clip the block LSTMs' gradients element-wise to ±this; 0 = off (thesis code: 5)
    lr_decay_every: int = 0  # multiply every learning rate by lr_decay each this many steps; 0 = constant
    lr_decay: float = 0.5  # (the thesis code halves its rates every 50 epochs: lr_decay_every=39063 at batch 64)
    total_steps: int = 50_000  # optimiser steps; rounded up to whole chunks
    steps_per_chunk: int = 500  # optimiser steps per compiled chunk (logging/checkpoint granularity)
    checkpoint_every: int = 4  # chunks between checkpoints
    nll_samples: int = 1000  # K of the importance-sampled NLL at evaluation (thesis: 10,000)
    nll_chunk: int = 250  # samples per compiled NLL step: bounds memory
    update_loop: str = "auto"  # steps of a chunk: scan (one program) | python | auto (python on CPU, jax#12868)

    def __post_init__(self):
        check_fields(self, choices={"model": KINDS, "update_loop": parallel.UPDATE_LOOPS, "recurrent": RECURRENT,
                                    "stochastic_layers": (1, 2), "mean_path": MEAN_PATHS,
                                    "lstm_schedule": LSTM_SCHEDULES, "norm": NORMS, "layout": LAYOUTS},
                     positive=("width", "top_latent", "blocks", "latent_channels", "lstm_size", "lstm_layers", "iw_samples",
                               "batch_size", "total_steps", "steps_per_chunk", "checkpoint_every", "nll_samples",
                               "nll_chunk", "learning_rate", "recurrent_lr_scale", "lr_decay"),
                     non_negative=("recurrent_grad_clip", "lr_decay_every"), unit_interval=("lr_decay",))
        if self.model == "crvae" and self.latent_channels % self.blocks:
            raise ValueError(f"latent_channels={self.latent_channels} must be divisible by blocks={self.blocks}")
        check_layout(self.layout, self.width)
        check_image_size(self.image_size)

    @property
    def num_chunks(self) -> int:
        return max(1, math.ceil(self.total_steps / self.steps_per_chunk))


@flax.struct.dataclass
class VAEState:
    params: Any
    opt_state: Any
    rng: jax.Array
    step: jax.Array


def make_network(cfg: VAEConfig, channels: int) -> VAE:
    """The config's network; with ``norm="batch"`` its batch norms use the running averages (the
    training pass uses the batch's statistics: ``BatchStatsRecorder``)."""
    return VAE(kind=cfg.model, image_size=cfg.image_size, channels=channels, latent_channels=cfg.latent_channels,
               blocks=cfg.blocks, recurrent=cfg.recurrent, lstm_size=cfg.lstm_size, width=cfg.width,
               stochastic_layers=cfg.stochastic_layers, top_latent=cfg.top_latent, mean_path=cfg.mean_path,
               lstm_layers=cfg.lstm_layers, lstm_forget_bias=cfg.lstm_forget_bias, lstm_schedule=cfg.lstm_schedule,
               norm=cfg.norm, layout=cfg.layout)


class BatchStatsRecorder:
    """Stands in for a network with batch norm in a training loss (``sample_terms`` and the
    functions above it, VAE-GAN's generator pass: each calls ``network.apply`` once per part:
    encoder, decoder, …): each ``apply`` normalises by the batch's statistics and moves the running
    averages of the layers it used; ``updated`` holds the averages after every call so far, each
    call starting from the last one's (a decoder run twice moves its averages twice, as in Torch)."""

    def __init__(self, network: VAE):
        self.network, self.updated = network.clone(batch_statistics=True), None

    def __getattr__(self, name):
        return getattr(self.network, name)

    def apply(self, variables, *args, method):
        stats = variables["batch_stats"] if self.updated is None else self.updated
        out, mutated = self.network.apply({**variables, "batch_stats": stats}, *args, method=method,
                                          mutable=["batch_stats"])
        self.updated = mutated["batch_stats"]
        return out


def training_network(network: VAE, norm: str):
    """What a training loss calls: the network, or with batch norm its ``BatchStatsRecorder``."""
    return BatchStatsRecorder(network) if norm == "batch" else network


def with_batch_stats(params, stats, axis):
    """``params`` with batch norm's new running averages (a recorder's ``updated``) averaged over
    devices; unchanged when ``stats`` is None (no batch norm). Adam leaves "batch_stats" as they
    were: they get no gradient."""
    return params if stats is None else {**params, "batch_stats": parallel.pmean(stats, axis)}


RECURRENT_MODULES = ("inference_lstm", "generation_lstm")  # crvae's block LSTMs (with their linear maps)


def learning_rate(cfg: VAEConfig, scale: float = 1.0):
    """``scale`` × ``cfg.learning_rate``, as a staircase schedule (× ``lr_decay`` every
    ``lr_decay_every`` steps) when ``lr_decay_every`` > 0."""
    if not cfg.lr_decay_every:
        return cfg.learning_rate * scale
    return optax.exponential_decay(cfg.learning_rate * scale, cfg.lr_decay_every, cfg.lr_decay, staircase=True)


def make_optimizer(cfg: VAEConfig) -> optax.GradientTransformation:
    """Adam at ``learning_rate``, multiplied by ``lr_decay`` every ``lr_decay_every`` steps when
    that is > 0. The parameters of crvae's block LSTMs (``RECURRENT_MODULES``) may train at
    ``recurrent_lr_scale`` × the rate, with their gradients first clipped element-wise to
    ±``recurrent_grad_clip``, as the thesis code trains its MNIST crVAE (lr/T, clip 5: the LSTMs
    receive the gradients of all T blocks). With the defaults this is plain ``optax.adam`` (and its
    optimiser state that of the checkpoints written before these options existed)."""

    if cfg.recurrent_lr_scale == 1.0 and not cfg.recurrent_grad_clip:
        return optax.adam(learning_rate(cfg))
    recurrent = optax.adam(learning_rate(cfg, cfg.recurrent_lr_scale))
    if cfg.recurrent_grad_clip:
        recurrent = optax.chain(optax.clip(cfg.recurrent_grad_clip), recurrent)

    def labels(params):
        in_lstm = lambda path: any(getattr(k, "key", None) in RECURRENT_MODULES for k in path)  # noqa: E731
        return jax.tree_util.tree_map_with_path(lambda path, _: "recurrent" if in_lstm(path) else "rest", params)

    return optax.multi_transform({"rest": optax.adam(learning_rate(cfg)), "recurrent": recurrent}, labels)


def describe_optimizer(cfg: VAEConfig) -> str:
    """``make_optimizer(cfg)`` in words, for reports."""
    words = f"Adam lr {cfg.learning_rate:g}"
    lstm = ([f"×{cfg.recurrent_lr_scale:g}"] if cfg.recurrent_lr_scale != 1.0 else []) + (
        [f"gradients clipped to ±{cfg.recurrent_grad_clip:g}"] if cfg.recurrent_grad_clip else [])
    if lstm:
        words += f" (crVAE's block LSTMs {', '.join(lstm)})"
    if cfg.lr_decay_every:
        words += f", ×{cfg.lr_decay:g} every {cfg.lr_decay_every:,} steps"
    return words


def log_likelihood(binary: bool, x: jax.Array, out: jax.Array) -> jax.Array:
    """Bernoulli (binary data) or unit-variance Gaussian log p(x|z) per example."""
    return obj.bernoulli_log_likelihood(x, out) if binary else obj.gaussian_log_likelihood(x, out)


def sample_terms(network: VAE, params, x, mean, log_var, key, binary: bool, analytic_kl: bool) -> dict:
    """One draw z ~ q(z|x) given q(z1|x) = N(mean, exp(log_var)): the reconstruction term
    log p(x|z1) and the KL term, so that ``reconstruction − kl`` is the ELBO's sample. With
    ``analytic_kl`` the Gaussian KLs to N(0, I) are in closed form (lower variance; for training),
    otherwise ``kl`` is the sample's log q(z|x) − log p(z) (the importance weight's parts). With two
    stochastic layers log q(z1|x) − log p(z1|z2) is always a sample."""
    k1, k2 = jax.random.split(key)
    z1 = obj.reparameterise(k1, mean, log_var)
    rec = log_likelihood(binary, x, network.apply(params, z1, method=network.decode))
    log_q1 = obj.gaussian_log_density(z1, mean, log_var)
    if network.stochastic_layers == 1:
        kl = obj.kl_to_standard_normal(mean, log_var) if analytic_kl else log_q1 - obj.standard_normal_log_density(z1)
        return {"reconstruction": rec, "kl": kl}
    mean2, log_var2 = network.apply(params, z1, method=network.encode_top)
    z2 = obj.reparameterise(k2, mean2, log_var2)
    prior_mean, prior_log_var = network.apply(params, z2, method=network.prior)
    kl1 = log_q1 - obj.gaussian_log_density(z1, prior_mean, prior_log_var)
    kl2 = (obj.kl_to_standard_normal(mean2, log_var2) if analytic_kl
           else obj.gaussian_log_density(z2, mean2, log_var2) - obj.standard_normal_log_density(z2))
    return {"reconstruction": rec, "kl": kl1 + kl2}


def log_weights(network: VAE, params, x: jax.Array, key: jax.Array, samples: int, binary: bool,
                sequential: bool = False) -> jax.Array:
    """[K, B] log p(x, z_k) − log q(z_k|x), z_k ~ q(z|x): the importance weights of the IWAE
    bound and of the NLL estimate. The encoder runs once; the K samples are decoded as one batch of
    K·B, or one sample at a time with ``sequential`` (memory-bounded evaluation; no gradient needed
    there, and XLA:CPU runs convolution gradients slowly inside loops, jax-ml/jax#12868)."""
    mean, log_var = network.apply(params, x, method=network.encode)

    def weights(x, mean, log_var, key):
        terms = sample_terms(network, params, x, mean, log_var, key, binary, analytic_kl=False)
        return terms["reconstruction"] - terms["kl"]

    if sequential:
        return jax.lax.map(lambda k: weights(x, mean, log_var, k), jax.random.split(key, samples))
    tile = lambda a: jnp.broadcast_to(a, (samples,) + a.shape).reshape((-1,) + a.shape[1:])  # noqa: E731
    return weights(tile(x), tile(mean), tile(log_var), key).reshape(samples, -1)


def elbo_terms(network: VAE, params, x: jax.Array, key: jax.Array, binary: bool) -> dict:
    """Single-sample ELBO = E_q log p(x|z) − KL(q‖p), Gaussian KLs to N(0, I) in closed form."""
    mean, log_var = network.apply(params, x, method=network.encode)
    terms = sample_terms(network, params, x, mean, log_var, key, binary, analytic_kl=True)
    return {"elbo": terms["reconstruction"] - terms["kl"], **terms}


def chunk_runner(step, init, cfg: VAEConfig, mesh, data):
    """(run_chunk, place) for ``step(state, data)`` with a replicated state (parameters, optimiser
    state, rng): ``steps_per_chunk`` steps a chunk, metrics averaged over them, the training set
    a program argument; ``place`` lays a state out as ``run_chunk`` returns it."""
    specs = jax.tree.map(lambda _: P(), jax.eval_shape(init, jax.random.PRNGKey(0)))
    run_chunk, _ = parallel.chunk_programs(step, cfg.steps_per_chunk, lambda m: jax.tree.map(jnp.mean, m), mesh,
                                           specs, parallel.python_update_loop(cfg.update_loop), data)
    shardings = parallel.to_shardings(mesh, specs)
    return run_chunk, lambda state: jax.device_put(state, shardings)


def reconstruction_mse(network, batch: int = 250):
    """``evaluate(variables, images, key=None) -> float``: per-pixel MSE of ``network``'s
    reconstructions from the posterior mean (the validation metric of the GAN-trained models)."""

    @jax.jit
    def squared_error(variables, x):
        mean, _ = network.apply(variables, x, method=network.encode)
        return jnp.sum(jnp.square(network.apply(variables, mean, method=network.decode) - x))

    def evaluate(variables, images, key=None) -> float:
        total = sum(float(squared_error(variables, jnp.asarray(images[i:i + batch])))
                    for i in range(0, len(images), batch))
        return total / images.size

    return evaluate


class Trainer(NamedTuple):
    cfg: VAEConfig
    network: VAE
    init: Any  # rng -> VAEState
    run_chunk: Any  # VAEState -> (VAEState, metrics)
    place: Any
    restore: Any
    evaluate: Any  # (params, images, key) -> mean ELBO (nats) on ``images``
    nll: Any  # (params, images[binary], key) -> per-example NLL estimate (nats)
    headline: str = "elbo"  # the training metric shown, and checked for NaN, by the CLI
    val_name: str = "val_elbo"  # what ``evaluate`` returns; the best checkpoint maximises it
    val_higher_is_better: bool = True
    curve: tuple = ()  # what curve.png shows: (headline, val_name) when empty

    @staticmethod
    def vae_params(params):
        return params


def data_parallel(cfg, train_images: np.ndarray, num_devices: int, groups: int = 1):
    """(mesh, collective axis, per-device batch) of an image model, after checking that the batch
    splits into ``groups`` equal parts on each of ``num_devices`` devices and that the images
    have the config's size."""
    if cfg.batch_size % (groups * num_devices):
        parts = f"{groups} × --devices={num_devices}" if groups > 1 else f"--devices={num_devices}"
        raise ValueError(f"batch_size={cfg.batch_size} must be divisible by {parts}")
    if train_images.shape[1] != cfg.image_size:
        raise ValueError(f"images are {train_images.shape[1]}px but image_size={cfg.image_size}")
    mesh = parallel.make_mesh(num_devices)
    return mesh, parallel.axis_name(mesh), cfg.batch_size // num_devices


def make_train(cfg: VAEConfig, train_images: np.ndarray, binary: bool, num_devices: int = 1) -> Trainer:
    mesh, axis, per_device_batch = data_parallel(cfg, train_images, num_devices)
    network = make_network(cfg, train_images.shape[-1])
    optimizer = make_optimizer(cfg)
    data = jnp.asarray(train_images)

    def init(rng) -> VAEState:
        k_params, k_run = jax.random.split(rng)
        params = network.init(k_params, jnp.zeros((1,) + data.shape[1:], jnp.float32))
        return VAEState(params, optimizer.init(params), k_run, jnp.zeros((), jnp.int32))

    def loss_fn(params, x, key):
        net = training_network(network, cfg.norm)
        if cfg.iw_samples == 1:
            terms = elbo_terms(net, params, x, key, binary)
            bound = terms["elbo"]
            metrics = {k: jnp.mean(v) for k, v in terms.items()}
        else:
            bound = obj.iwae_bound(log_weights(net, params, x, key, cfg.iw_samples, binary))
            metrics = {"iwae": jnp.mean(bound)}
        return -jnp.mean(bound), (metrics, getattr(net, "updated", None))

    def step(state: VAEState, data):
        rng, k_batch, k_bin, k_loss = jax.random.split(state.rng, 4)
        # Each device draws its own batch (its index folded in), so K devices see K× the examples.
        device = jax.lax.axis_index(axis) if axis else 0
        k_batch, k_bin, k_loss = (jax.random.fold_in(k, device) for k in (k_batch, k_bin, k_loss))
        idx = jax.random.randint(k_batch, (per_device_batch,), 0, data.shape[0])
        x = data[idx]
        if binary:  # dynamic binarisation: a fresh Bernoulli draw of every training image
            x = (jax.random.uniform(k_bin, x.shape) < x).astype(jnp.float32)
        grads, (metrics, stats) = jax.grad(loss_fn, has_aux=True)(parallel.per_device(state.params, axis), x, k_loss)
        grads = parallel.pmean(grads, axis)
        metrics = parallel.pmean(metrics, axis)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = with_batch_stats(optax.apply_updates(state.params, updates), stats, axis)
        return VAEState(params, opt_state, rng, state.step + 1), metrics

    run_chunk, place = chunk_runner(step, init, cfg, mesh, data)

    @jax.jit
    def _elbo_batch(params, x, key):
        return elbo_terms(network, params, x, key, binary)["elbo"]

    def evaluate(params, images, key, batch: int = 500) -> float:
        total = 0.0
        for i in range(0, len(images), batch):
            total += float(jnp.sum(_elbo_batch(params, jnp.asarray(images[i:i + batch]), jax.random.fold_in(key, i))))
        return total / len(images)

    @jax.jit
    def _weights_chunk(params, x, key):
        return log_weights(network, params, x, key, cfg.nll_chunk, binary, sequential=True)

    def nll(params, images, key, samples: int | None = None, batch: int = 100) -> np.ndarray:
        """−log p(x) ≈ −log (1/K) Σ_k p(x, z_k)/q(z_k|x), K = ``samples`` (default ``nll_samples``),
        drawn ``nll_chunk`` at a time and combined by a streaming log-sum-exp."""
        samples = samples or cfg.nll_samples
        if samples <= 0:
            raise ValueError(f"samples={samples} must be > 0")
        chunks = math.ceil(samples / cfg.nll_chunk)
        out = []
        for i in range(0, len(images), batch):
            x = jnp.asarray(images[i:i + batch])
            parts = (_weights_chunk(params, x, jax.random.fold_in(jax.random.fold_in(key, i), c)) for c in range(chunks))
            out.append(-np.asarray(obj.streaming_log_mean_exp(parts)))
        return np.concatenate(out)

    return Trainer(cfg, network, lambda rng: place(jax.jit(init)(rng)), run_chunk, place, place, evaluate, nll,
                   "elbo" if cfg.iw_samples == 1 else "iwae")
