"""VAE, convolutional VAE and channel-recurrent VAE networks (thesis §5.3, App. 5.A/5.B).

* ``vae``:   conv encoder → FC → z ∈ R^D → FC → deconv decoder (Kingma & Welling).
* ``cvae``:  fully convolutional; z ∈ R^{h×w×c} with a spatially independent prior (Sohn et al.).
* ``crvae``: the posterior mean from a conv (cVAE's, as §5.3.2 says and the thesis code's image models
  do) or, with ``mean_path="dense"``, from an FC layer on the whole encoder map (the thesis code's
  MNIST model), plus an element-wise addition (a learned offset per latent unit);
  the variance path's h×w×c map is cut into T blocks of c/T channels, each flattened, and an
  LSTM over the blocks gives the log-variances (σ^rnn); in generation z = [z_1 … z_T] passes
  through another LSTM, u = LSTM(z), a linear map from the LSTM's state back to the block size
  (shared by the blocks), and an element-wise addition before the decoder. App. 5.A: the LSTMs
  imitate the A and the additions the μ of a full-covariance draw z = Aε + μ. ``recurrent`` places
  the LSTM on the inference path, the generation path or both (Table 5.B.1); ``lstm_layers``
  stacks LSTMs (the thesis code uses 2), run layer by layer or as a wavefront (``lstm_schedule``).
* ``stochastic_layers=2`` (Table 5.B.1's "2 stochastic layers"; the thesis gives no layout, ours
  follows Burda et al. 2015): a top latent z2 ∈ R^{top_latent} with p(z2) = N(0, I), a learned
  Gaussian p(z1 | z2) over the model's latent z1, and q(z1, z2 | x) = q(z1 | x) q(z2 | z1), both
  extra conditionals an MLP with one hidden layer of 256 units.

The thesis defers layer sizes to its code release (App. 5.C.1; github.com/WendyShang/crVAE, Torch).
Its MNIST models are larger than ours: batch-normalised convs with CReLU to a 4×4×256 map, a 4×4×64
latent (D = 1024), 2-layer block LSTMs of h·w·256/T units (our ``lstm_layers=2``), and for crVAE
an FC mean path (our ``mean_path="dense"``; both the defaults of ``repthesis.algos.vae``), LSTM
forget-gate biases of 1 (our ``lstm_forget_bias``); its defaults train with Adam at 3e-3 (the LSTMs
at 3e-3/T with gradients clipped to ±5), halved every 50 of 150 epochs, on batches of 128
(``repthesis.algos.vae.make_optimizer``'s options; ours default to plain Adam at 1e-3). Ours are stated here, for ``width`` w (32 by default): encoder convs w-2w-4w
(4×4/2, 4×4/2, 3×3/2, LeakyReLU) to a ⌈S/8⌉² map; decoder a 3×3 conv (4w), a resize to S/4, and two ×2 sub-pixel upsamplings (a 3×3 conv to 4× the channels, then
depth-to-space: as expressive as a 4×4/2 transposed conv, whose gradient XLA:CPU runs 3–4× slower). Every model has the same latent size D = ⌈S/8⌉²·c (Table 5.B.1 keeps it
fixed). ``norm="batch"`` puts batch norm (without the conv's bias) before every hidden activation
of the encoder and decoder, as the thesis code's MNIST convs have it and as §6.5.1 describes the
author's next networks ("convolutional layers, batch normalization layers, and activation
layers"; App. 5.C.1 defers chapter 5's to the code); its running averages are the "batch_stats"
collection, updated by the training pass (``batch_statistics=True``) and used everywhere else.
``layout="thesis"`` follows that code's MNIST encoder and decoder instead (App. 5.C.1): each of the
encoder's three stages is a stride-2 conv (kernels 5, 3, 3) to half the stage's channels, the norm
(``norm``; the code's is batch norm), CReLU (doubling them), then a 3×3 conv, norm and
LeakyReLU(0.1); the decoder's first 3×3 conv (4w) is linear (norm only), and after it each
resolution has two 3×3 convs with norm and LeakyReLU(0.1), channels 4w at S/4 (after a
nearest-neighbour resize), 2w at S/2 and w at S (the first of each pair a sub-pixel upsampling,
standing in for the code's 4×4/2 transposed convs). The code's 4×4×256 map is w = 64. Its exact
paddings (28 → 15 → 8 → 4) are not copied: ours are "SAME" (28 → 14 → 7 → 4).
Modules are batched ([B, H, W, C] images) and never compute losses (STYLE.md §2).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

KINDS = ("vae", "cvae", "crvae")
RECURRENT = ("both", "inference", "generation")
MEAN_PATHS = ("dense", "conv")
NORMS = ("none", "batch")
LAYOUTS = ("compact", "thesis")
BN_MOMENTUM = 0.9  # running averages move 0.1 of the way each step (Torch's default, the thesis code's framework)


def _norm(norm: str, batch_statistics: bool):
    """The normalisation after a hidden conv: nothing, or batch norm (on the batch's statistics in
    training, on the running averages otherwise)."""
    if norm == "none":
        return lambda x: x
    return nn.BatchNorm(use_running_average=not batch_statistics, momentum=BN_MOMENTUM)


def latent_side(image_size: int) -> int:
    return math.ceil(image_size / 8)


def check_image_size(image_size: int) -> None:
    if image_size < 16 or image_size % 4:
        raise ValueError(f"image size {image_size} cannot be taken by the encoder/decoder; "
                         f"valid: a multiple of 4, at least 16 (e.g. 28, 32, 64, 128)")


def check_layout(layout: str, width: int) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is not valid; valid: {', '.join(LAYOUTS)}")
    if layout == "thesis" and width % 2:
        raise ValueError(f"width={width} must be even with layout=thesis (its CReLU doubles w/2 channels)")


class Encoder(nn.Module):
    width: int = 32
    norm: str = "none"  # none | batch: batch norm after every conv (the thesis code's, §6.5.1)
    batch_statistics: bool = False  # batch norm on the batch's statistics (training) or the running averages
    layout: str = "compact"  # compact | thesis: the thesis code's deeper MNIST layout with CReLU (module docstring)

    @nn.compact
    def __call__(self, x):
        norm = functools.partial(_norm, self.norm, self.batch_statistics)
        conv = functools.partial(nn.Conv, padding="SAME", use_bias=self.norm == "none")
        if self.layout == "compact":
            for features, kernel in ((self.width, 4), (2 * self.width, 4), (4 * self.width, 3)):
                x = nn.leaky_relu(norm()(conv(features, (kernel, kernel), (2, 2))(x)), 0.2)
            return x  # [B, ⌈S/8⌉, ⌈S/8⌉, 4w]
        for features, kernel in ((self.width, 5), (2 * self.width, 3), (4 * self.width, 3)):
            x = crelu(norm()(conv(features // 2, (kernel, kernel), (2, 2))(x)))  # CReLU doubles to `features`
            x = nn.leaky_relu(norm()(conv(features, (3, 3))(x)), 0.1)
        return x  # [B, ⌈S/8⌉, ⌈S/8⌉, 4w]


def crelu(x: jax.Array) -> jax.Array:
    """Concatenated ReLU (Shang et al. 2016): [relu(x), relu(−x)] along channels, twice as many."""
    return nn.relu(jnp.concatenate([x, -x], axis=-1))


def depth_to_space(h: jax.Array, factor: int = 2) -> jax.Array:
    """[B, H, W, f²·C] → [B, f·H, f·W, C]: channel group (i, j) fills sub-pixel (i, j)."""
    b, hh, ww, c = h.shape
    c //= factor * factor
    return h.reshape(b, hh, ww, factor, factor, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, hh * factor, ww * factor, c)


class Decoder(nn.Module):
    image_size: int
    channels: int
    width: int = 32
    norm: str = "none"  # none | batch: batch norm after every hidden conv
    batch_statistics: bool = False
    layout: str = "compact"  # compact | thesis (module docstring)

    @nn.compact
    def __call__(self, h):
        s = self.image_size // 4
        norm = functools.partial(_norm, self.norm, self.batch_statistics)
        conv = functools.partial(nn.Conv, kernel_size=(3, 3), padding="SAME", use_bias=self.norm == "none")
        thesis = self.layout == "thesis"
        h = norm()(conv(4 * self.width)(h))
        h = h if thesis else nn.leaky_relu(h, 0.2)  # the thesis code's first conv is linear
        h = jax.image.resize(h, (h.shape[0], s, s, h.shape[-1]), "nearest")
        if thesis:  # its first ×2 (transposed) conv and the 3×3 conv after it, at S/4
            for _ in range(2):
                h = nn.leaky_relu(norm()(conv(4 * self.width)(h)), 0.1)
        for features in (2 * self.width, self.width):  # two ×2 sub-pixel upsamplings to S
            h = nn.leaky_relu(norm()(depth_to_space(conv(4 * features)(h))), 0.1 if thesis else 0.2)
            if thesis:  # and a 3×3 conv after each
                h = nn.leaky_relu(norm()(conv(features)(h)), 0.1)
        return nn.Conv(self.channels, (3, 3), padding="SAME")(h)  # Bernoulli logits / Gaussian means


def to_blocks(z: jax.Array, blocks: int) -> jax.Array:
    """[B, h, w, c] → [B, T, h·w·c/T]: block t holds channels t·c/T … (t+1)·c/T − 1, flattened."""
    b, h, w, c = z.shape
    return z.reshape(b, h, w, blocks, c // blocks).transpose(0, 3, 1, 2, 4).reshape(b, blocks, -1)


def from_blocks(u: jax.Array, shape: tuple[int, int, int]) -> jax.Array:
    h, w, c = shape
    b, t, _ = u.shape
    return u.reshape(b, t, h, w, c // t).transpose(0, 2, 3, 1, 4).reshape(b, h, w, c)


def _lstm_forward(gates_x: jax.Array, w_h: jax.Array):
    """The LSTM recurrence from zero state over [B, T, 4n] input projections (gates i, f, g, o):
    the hidden states [B, T, n] and what the backward pass needs."""
    h = c = None
    hs, cs, acts = [], [], []
    for t in range(gates_x.shape[-2]):  # unrolled: T is small
        h, c, act = _cell(gates_x[..., t, :] if h is None else gates_x[..., t, :] + h @ w_h, c)
        hs.append(h)
        cs.append(c)
        acts.append(act)
    return jnp.stack(hs, axis=-2), (hs, cs, acts)


@jax.custom_vjp
def lstm_recurrence(gates_x: jax.Array, w_h: jax.Array) -> jax.Array:
    """[B, T, 4n] input projections, [n, 4n] recurrent kernel → [B, T, n] hidden states.

    Its gradient is written out so that the recurrent kernel's gradient is one matmul over all T
    steps (Σ_t h_{t−1}ᵀ·δ_t as [n, B·T]·[B·T, 4n]) after the backward recurrence, which then only
    carries δ_t·W_hᵀ: T − 1 small matmuls instead of 2(T − 1), fewer kernel launches on a GPU."""
    return _lstm_forward(gates_x, w_h)[0]


def _lstm_fwd(gates_x, w_h):
    hs, residuals = _lstm_forward(gates_x, w_h)
    return hs, (residuals, w_h)


def _lstm_bwd(saved, d_hs):
    (hs, cs, acts), w_h = saved
    steps = len(hs)
    d_pre = [None] * steps
    dh_next = dc_next = None
    for t in reversed(range(steps)):
        dh = d_hs[..., t, :] if dh_next is None else d_hs[..., t, :] + dh_next
        d_pre[t], dc_next = _cell_grad(dh, dc_next, acts[t], cs[t - 1] if t else None, cs[t])
        dh_next = d_pre[t] @ w_h.T if t else None
    d_gates = jnp.stack(d_pre, axis=-2)  # [B, T, 4n]
    if steps == 1:
        return d_gates, jnp.zeros_like(w_h)
    h_prev = jnp.stack(hs[:-1], axis=-2)  # h_{t−1} for t = 1 … T−1
    d_w_h = jnp.einsum("...tn,...tm->nm", h_prev, d_gates[..., 1:, :])
    return d_gates, d_w_h


lstm_recurrence.defvjp(_lstm_fwd, _lstm_bwd)


def _cell_grad(dh, dc_next, act, c_prev, c):
    """An LSTM cell's backward step: the gradient of its pre-activations [B, 4n] (gates i, f, g, o)
    and of its previous cell state, from the gradients of its hidden state and of its cell state."""
    i, f, g, o = act
    tanh_c = jnp.tanh(c)
    dc = dh * o * (1 - tanh_c ** 2) + (0 if dc_next is None else dc_next)
    df = dc * c_prev if c_prev is not None else jnp.zeros_like(dc)  # the first step has no previous cell
    d_pre = jnp.concatenate([dc * g * i * (1 - i), df * f * (1 - f), dc * i * (1 - g ** 2),
                             dh * tanh_c * o * (1 - o)], axis=-1)
    return d_pre, dc * f


def _cell(pre, c_prev):
    i, f, g, o = jnp.split(pre, 4, axis=-1)
    i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
    c = i * g if c_prev is None else f * c_prev + i * g
    return o * jnp.tanh(c), c, (i, f, g, o)


def _wavefront_plan(layers: int, steps: int):
    """Step k of the wavefront runs layers a … b (layer l at time k − l); the hidden states that
    layers r0 … r1 emitted at step k − 1 are its inputs (none at k = 0)."""
    for k in range(steps + layers - 1):
        a, b = max(0, k - steps + 1), min(layers - 1, k)
        yield k, a, b, max(a - 1, 0), min(b, k - 1)


def _step_kernel(w_big, n, a, b, r0, r1):
    """The block of ``w_big`` that step k uses: rows of layers r0 … r1, gate columns of layers a … b."""
    return w_big[r0 * n:(r1 + 1) * n, 4 * a * n:4 * (b + 1) * n]


def _wavefront_forward(gates_x, w_big, b_up, layers):
    n = w_big.shape[0] // layers
    h, c = [None] * layers, [None] * layers
    outs, saved = [], []
    for k, a, b, r0, r1 in _wavefront_plan(layers, gates_x.shape[-2]):
        x = jnp.concatenate(h[r0:r1 + 1], axis=-1) if r1 >= r0 else None
        pre = None if x is None else x @ _step_kernel(w_big, n, a, b, r0, r1)
        step = []
        for l in range(a, b + 1):
            own = gates_x[..., k, :] if l == 0 else b_up[4 * (l - 1) * n:4 * l * n]
            pre_l = own if pre is None else pre[..., 4 * (l - a) * n:4 * (l - a + 1) * n] + own
            c_prev = c[l]
            h[l], c[l], act = _cell(pre_l, c_prev)
            step.append((act, c_prev, c[l]))
            if l == layers - 1:
                outs.append(h[l])
        saved.append((x, step))
    return jnp.stack(outs, axis=-2), saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def wavefront_lstm(gates_x: jax.Array, w_big: jax.Array, b_up: jax.Array, layers: int) -> jax.Array:
    """``layers`` stacked LSTMs over [B, T, 4n] input projections of layer 0 → the top layer's
    [B, T, n] hidden states, computed as a wavefront: step k runs layer l at time k − l for every l
    at once, as ONE matmul of the hidden states of step k − 1 with ``w_big`` [L·n, L·4n] (block
    (l, l) layer l's recurrent kernel, block (l − 1, l) its input kernel, zero elsewhere; ``b_up``
    [(L − 1)·4n] the input biases of layers 1 …). The chain of dependent steps is T + L − 1 instead
    of L·T, with T + L − 2 matmuls in it instead of L·(T − 1) (plus L − 1 input projections): on
    a GPU each block step costs kernel launches rather than FLOPs. Its matmuls do more work than
    the layer-by-layer order's (for L = 2, 4/3 ×: the zero blocks, and layer 1's input projection
    inside the chain); measured slower on CPU and on an H200, so ``auto`` keeps that order
    (``resolve_lstm_schedule``). The gradient is
    written out as ``lstm_recurrence``'s is: the backward wavefront carries only δ·w_bigᵀ, and
    w_big's gradient is one matmul over all steps."""
    return _wavefront_forward(gates_x, w_big, b_up, layers)[0]


def _wavefront_fwd(gates_x, w_big, b_up, layers):
    outs, saved = _wavefront_forward(gates_x, w_big, b_up, layers)
    return outs, (saved, w_big, b_up.shape)


def _wavefront_bwd(layers, res, d_hs):
    saved, w_big, b_shape = res
    n = w_big.shape[0] // layers
    steps = d_hs.shape[-2]
    carry_h, carry_c = [None] * layers, [None] * layers  # gradients of what step k emitted
    d_gates, xs, d_pres = [None] * steps, [], []
    d_b = [0.0] * layers
    pad = lambda parts, lo, hi, width: jnp.concatenate(  # noqa: E731  (zeros for absent blocks)
        [jnp.zeros(d_hs.shape[:-2] + (width * lo,), d_hs.dtype)] + parts
        + [jnp.zeros(d_hs.shape[:-2] + (width * (layers - 1 - hi),), d_hs.dtype)], axis=-1)
    for k, a, b, r0, r1 in reversed(list(_wavefront_plan(layers, steps))):
        x, step = saved[k]
        parts = []
        for l, (act, c_prev, c) in zip(range(a, b + 1), step):
            dh = carry_h[l]
            if l == layers - 1:
                dh = d_hs[..., k - l, :] if dh is None else dh + d_hs[..., k - l, :]
            d_pre, carry_c[l] = _cell_grad(dh, carry_c[l], act, c_prev, c)
            parts.append(d_pre)
            if l == 0:
                d_gates[k] = d_pre
            else:
                d_b[l] = d_b[l] + d_pre.reshape(-1, 4 * n).sum(0)
        carry_h = [None] * layers
        if x is not None:
            d_x = jnp.concatenate(parts, axis=-1) @ _step_kernel(w_big, n, a, b, r0, r1).T
            for r in range(r0, r1 + 1):
                carry_h[r] = d_x[..., (r - r0) * n:(r - r0 + 1) * n]
            xs.append(pad([x], r0, r1, n))
            d_pres.append(pad(parts, a, b, 4 * n))
    d_w = jnp.einsum("k...m,k...j->mj", jnp.stack(xs), jnp.stack(d_pres)) if xs else jnp.zeros_like(w_big)
    d_b_up = jnp.concatenate([jnp.broadcast_to(d_b[l], (4 * n,)) for l in range(1, layers)]) if layers > 1 \
        else jnp.zeros(b_shape, w_big.dtype)
    return jnp.stack(d_gates, axis=-2), d_w, d_b_up


wavefront_lstm.defvjp(_wavefront_fwd, _wavefront_bwd)


def forget_gate_bias(value: float):
    """Bias initialiser of a [4n] gate projection (gates i, f, g, o): ``value`` on f, 0 elsewhere."""

    def init(key, shape, dtype=jnp.float32):
        n = shape[-1] // 4
        return jnp.zeros(shape, dtype).at[..., n:2 * n].set(value)

    return init


LSTM_SCHEDULES = ("auto", "layers", "wavefront")


def resolve_lstm_schedule(schedule: str) -> str:
    """``auto``: layer by layer on every backend, as measured. On CPU the wavefront's zero blocks
    cost 4/3 × the matmul work; on an H200 crVAE trained 3 % slower with it (938 against 966
    steps/s at width 32, ``benchmarks/results/throughput_gen_gpu.md``). ``wavefront`` stays
    selectable, e.g. to time it on TPUs."""
    if schedule not in LSTM_SCHEDULES:
        raise ValueError(f"lstm schedule {schedule!r} is not valid; valid: {', '.join(LSTM_SCHEDULES)}")
    return "layers" if schedule == "auto" else schedule


class _DenseParams(nn.Module):
    """The kernel and bias of an ``nn.Dense`` (the same names, shapes and initialisers), unapplied."""

    in_features: int
    features: int
    bias_init: Any

    @nn.compact
    def __call__(self):
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.in_features, self.features))
        return kernel, self.param("bias", self.bias_init, (self.features,))


class BlockLSTM(nn.Module):
    """LSTM over the T channel blocks, then a per-step linear map back to the block size.

    The cell is flax's LSTMCell (gates i, f, g, o; input kernels lecun-normal with zero bias,
    recurrent kernel orthogonal) written out so that the input projections of all T blocks are one
    matmul ahead of the recurrence (``lstm_recurrence``), which then adds only h·W_h per step: the
    recurrence is a chain of T small steps (forward and backward) that on a GPU costs kernel
    launches, not FLOPs. Stacked layers run layer by layer (``schedule="layers"``: L·T dependent
    steps) or as a wavefront (``"wavefront"``, ``wavefront_lstm``: T + L − 1 steps, one matmul
    each); both compute the same function from the same parameters (tested); ``auto`` is layer by
    layer, the faster as measured (``resolve_lstm_schedule``)."""

    hidden: int
    layers: int = 1  # stacked: layer l + 1 reads layer l's hidden states
    forget_bias: float = 0.0  # initial bias of every layer's forget gate (the thesis code's LSTMs: 1)
    schedule: str = "auto"  # auto | layers | wavefront (stacked layers only)

    @nn.compact
    def __call__(self, blocks: jax.Array) -> jax.Array:  # [B, T, F] -> [B, T, F]; u_t sees z_1..z_t
        n = self.hidden
        bias_init = forget_gate_bias(self.forget_bias)
        schedule = resolve_lstm_schedule(self.schedule)
        h = blocks
        if self.layers > 1 and schedule == "wavefront":
            gates_x = nn.Dense(4 * n, name="input", bias_init=bias_init)(h)
            w_h = [self.param("recurrent", nn.initializers.orthogonal(), (n, 4 * n))]
            w_x, b_x = [], []
            for layer in range(1, self.layers):  # the same parameters as the layer-by-layer order's
                kernel, bias = _DenseParams(n, 4 * n, bias_init, name=f"input_{layer}")()
                w_x.append(kernel)
                b_x.append(bias)
                w_h.append(self.param(f"recurrent_{layer}", nn.initializers.orthogonal(), (n, 4 * n)))
            zero = jnp.zeros((n, 4 * n), w_h[0].dtype)
            w_big = jnp.block([[w_h[r] if c == r else w_x[r] if c == r + 1 else zero for c in range(self.layers)]
                               for r in range(self.layers)])
            h = wavefront_lstm(gates_x, w_big, jnp.concatenate(b_x), self.layers)
        else:
            for layer in range(self.layers):
                suffix = "" if layer == 0 else f"_{layer}"  # layer 0 keeps the 1-layer parameter names
                gates_x = nn.Dense(4 * n, name="input" + suffix, bias_init=bias_init)(h)
                w_h = self.param("recurrent" + suffix, nn.initializers.orthogonal(), (n, 4 * n))
                h = lstm_recurrence(gates_x, w_h)
        return nn.Dense(blocks.shape[-1])(h)


class GaussianMLP(nn.Module):
    """x → hidden 256 (LeakyReLU) → (mean, log_var) of a diagonal Gaussian with ``features`` units."""

    features: int

    @nn.compact
    def __call__(self, x):
        h = nn.leaky_relu(nn.Dense(256)(x), 0.2)
        return nn.Dense(self.features)(h), nn.Dense(self.features)(h)


class VAE(nn.Module):
    kind: str = "crvae"
    image_size: int = 28
    channels: int = 1  # image channels
    latent_channels: int = 16  # c of the latent map; vae uses D = ⌈S/8⌉²·c units
    blocks: int = 8  # T, channel blocks of crvae
    recurrent: str = "both"  # where crvae's LSTM sits: both | inference | generation
    lstm_size: int = 256
    width: int = 32  # w: encoder channels w-2w-4w, decoder 4w-2w-w
    stochastic_layers: int = 1  # 1, or 2: a top latent z2 above z1 (Table 5.B.1)
    top_latent: int = 64  # units of z2 when stochastic_layers=2
    mean_path: str = "conv"  # crvae's posterior mean: conv (cVAE's, §5.3.2) | dense (an FC layer, as VAE's)
    lstm_layers: int = 1  # stacked LSTM layers in each of crvae's block LSTMs
    lstm_forget_bias: float = 0.0  # initial forget-gate bias of the block LSTMs
    lstm_schedule: str = "auto"  # stacked block LSTMs: layers | wavefront | auto (by backend; same function)
    norm: str = "none"  # none | batch: batch norm after the encoder's and decoder's hidden convs
    batch_statistics: bool = False  # batch norm on the batch's statistics (the training pass; it updates
    # the running averages in the "batch_stats" collection) rather than on those averages
    layout: str = "compact"  # encoder/decoder convs: compact | thesis (the thesis code's, with CReLU)

    def setup(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown model {self.kind!r}; valid: {', '.join(KINDS)}")
        if self.recurrent not in RECURRENT:
            raise ValueError(f"recurrent={self.recurrent!r} is not valid; valid: {', '.join(RECURRENT)}")
        if self.kind == "crvae" and self.latent_channels % self.blocks:
            raise ValueError(f"latent_channels={self.latent_channels} must be divisible by blocks={self.blocks}")
        if self.mean_path not in MEAN_PATHS:
            raise ValueError(f"mean_path={self.mean_path!r} is not valid; valid: {', '.join(MEAN_PATHS)}")
        if self.stochastic_layers not in (1, 2):
            raise ValueError(f"stochastic_layers={self.stochastic_layers!r} is not valid; valid: 1, 2")
        if self.norm not in NORMS:
            raise ValueError(f"norm={self.norm!r} is not valid; valid: {', '.join(NORMS)}")
        check_layout(self.layout, self.width)
        check_image_size(self.image_size)
        side = latent_side(self.image_size)
        self.latent_shape = (side, side, self.latent_channels)
        self.encoder = Encoder(self.width, self.norm, self.batch_statistics, self.layout)
        self.decoder = Decoder(self.image_size, self.channels, self.width, self.norm, self.batch_statistics, self.layout)
        d = side * side * self.latent_channels
        if self.kind == "vae":
            self.enc_mean, self.enc_log_var = nn.Dense(d), nn.Dense(d)
            self.dec_in = nn.Dense(side * side * 4 * self.width)
        else:
            dense_mean = self.kind == "crvae" and self.mean_path == "dense"
            self.enc_mean = nn.Dense(d) if dense_mean else nn.Conv(self.latent_channels, (3, 3), padding="SAME")
            self.enc_log_var = nn.Conv(self.latent_channels, (3, 3), padding="SAME")
        if self.kind == "crvae":  # App. 5.A: an LSTM imitates z = Aε + μ's A, an element-wise addition its μ
            zeros = nn.initializers.zeros
            if self.recurrent in ("both", "inference"):
                self.inference_lstm = BlockLSTM(self.lstm_size, self.lstm_layers, self.lstm_forget_bias, self.lstm_schedule)
                self.mean_offset = self.param("mean_offset", zeros, self.latent_shape)
            if self.recurrent in ("both", "generation"):
                self.generation_lstm = BlockLSTM(self.lstm_size, self.lstm_layers, self.lstm_forget_bias, self.lstm_schedule)
                self.generation_offset = self.param("generation_offset", zeros, self.latent_shape)
        self.z_shape = (d,) if self.kind == "vae" else self.latent_shape  # one example's z1
        if self.stochastic_layers == 2:
            self.top_encoder = GaussianMLP(self.top_latent)  # q(z2 | z1)
            self.top_prior = GaussianMLP(d)  # p(z1 | z2)

    def __call__(self, x):
        """Posterior parameters and the decoder output at the posterior mean (for init)."""
        mean, log_var = self.encode(x)
        if self.stochastic_layers == 2:  # create the top layer's parameters too
            self.prior(self.encode_top(mean)[0])
        return self.decode(mean), (mean, log_var)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """q(z|x) = N(mean, exp(log_var)); both [B, D] (vae) or [B, h, w, c]."""
        h = self.encoder(x)
        if self.kind == "vae":
            h = h.reshape(h.shape[0], -1)
            return self.enc_mean(h), self.enc_log_var(h)
        log_var = self.enc_log_var(h)
        if isinstance(self.enc_mean, nn.Dense):  # crvae's dense mean path: an FC layer on the whole map
            mean = self.enc_mean(h.reshape(h.shape[0], -1)).reshape(log_var.shape)
        else:
            mean = self.enc_mean(h)
        if self.kind == "crvae" and self.recurrent in ("both", "inference"):
            mean = mean + self.mean_offset
            log_var = from_blocks(self.inference_lstm(to_blocks(log_var, self.blocks)), self.latent_shape)  # σ^rnn
        return mean, log_var

    def encode_top(self, z1: jax.Array) -> tuple[jax.Array, jax.Array]:
        """q(z2 | z1) = N(mean, exp(log_var)), [B, top_latent] (stochastic_layers=2)."""
        return self.top_encoder(z1.reshape(z1.shape[0], -1))

    def prior(self, z2: jax.Array) -> tuple[jax.Array, jax.Array]:
        """p(z1 | z2) = N(mean, exp(log_var)) in z1's shape (stochastic_layers=2)."""
        mean, log_var = self.top_prior(z2)
        shape = (z2.shape[0],) + self.z_shape
        return mean.reshape(shape), log_var.reshape(shape)

    def sample_prior(self, key: jax.Array, n: int) -> jax.Array:
        """n draws of z1 from the model's prior: N(0, I), or z2 ~ N(0, I) then z1 ~ p(z1 | z2)."""
        if self.stochastic_layers == 1:
            return jax.random.normal(key, (n,) + self.z_shape)
        k2, k1 = jax.random.split(key)
        mean, log_var = self.prior(jax.random.normal(k2, (n, self.top_latent)))
        return mean + jnp.exp(0.5 * log_var) * jax.random.normal(k1, mean.shape)

    def transform(self, z: jax.Array) -> jax.Array:
        """u = LSTM_gen(z) for crvae with generation recurrency, else z (what the decoder sees)."""
        if self.kind == "crvae" and self.recurrent in ("both", "generation"):
            u = from_blocks(self.generation_lstm(to_blocks(z, self.blocks)), self.latent_shape)
            return u + self.generation_offset
        return z

    def decode(self, z: jax.Array) -> jax.Array:
        """p(x|z): Bernoulli logits or Gaussian means, [B, S, S, channels]."""
        u = self.transform(z)
        if self.kind == "vae":
            u = self.dec_in(u).reshape((u.shape[0],) + self.latent_shape[:2] + (4 * self.width,))
        return self.decoder(u)


class Discriminator(nn.Module):
    """D of VAE-GAN / crVAE-GAN (§5.3.3): the encoder's conv trunk, then a real/fake logit and,
    sharing the trunk (Chen et al., 2016b), q_ψ's mean of the latent code u for the MI term."""

    code_size: int  # units of u (the MI regression target); 0: no q_ψ head (MI off)
    width: int = 32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
        h = Encoder(self.width)(x)
        h = h.reshape(h.shape[0], -1)
        code = nn.Dense(self.code_size)(h) if self.code_size else None  # [B, code_size]
        return nn.Dense(1)(h)[:, 0], code  # logits [B]
