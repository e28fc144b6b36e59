"""VAE / cVAE / crVAE networks: shapes, the channel-recurrent latent's causality, gradients everywhere."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from repthesis.algos.vae import log_weights
from repthesis.gen import objectives as obj
from repthesis.nn.vae import VAE, BlockLSTM, crelu, from_blocks, to_blocks

X = (jax.random.uniform(jax.random.PRNGKey(0), (3, 16, 16, 1)) < 0.4).astype(jnp.float32)


def make(**kw):
    net = VAE(image_size=16, channels=1, latent_channels=8, blocks=4, lstm_size=16, **kw)
    return net, net.init(jax.random.PRNGKey(1), X)


def test_blocks_round_trip_and_hold_consecutive_channels():
    z = jnp.arange(2 * 2 * 3 * 8, dtype=jnp.float32).reshape(2, 2, 3, 8)
    blocks = to_blocks(z, 4)
    assert blocks.shape == (2, 4, 2 * 3 * 2)
    np.testing.assert_array_equal(from_blocks(blocks, (2, 3, 8)), z)
    np.testing.assert_array_equal(blocks[0, 1].reshape(2, 3, 2), z[0, :, :, 2:4])


@pytest.mark.parametrize("layers, forget_bias", [(1, 0.0), (2, 0.0), (2, 1.0)])
def test_block_lstm_is_flax_lstm_cell_with_the_same_weights(layers, forget_bias):
    """The hand-written recurrence (input projections hoisted out of it) computes flax's LSTMCell,
    and with ``layers`` = 2 two of them stacked (the second reads the first's hidden states);
    ``forget_bias`` starts every layer's forget gate (and only it) at that bias."""
    import flax.linen as nn

    blocks = jax.random.normal(jax.random.PRNGKey(3), (3, 5, 6))
    net = BlockLSTM(4, layers, forget_bias)
    params = net.init(jax.random.PRNGKey(4), blocks)["params"]
    for layer in range(layers):
        bias = params["input" + ("" if layer == 0 else f"_{layer}")]["bias"]
        np.testing.assert_array_equal(bias, [0.0] * 4 + [forget_bias] * 4 + [0.0] * 8)
    h = blocks
    for layer in range(layers):
        suffix = "" if layer == 0 else f"_{layer}"
        w_x, b, w_h = params["input" + suffix]["kernel"], params["input" + suffix]["bias"], params["recurrent" + suffix]
        gate = lambda w, k: w[..., 4 * k:4 * (k + 1)]  # noqa: E731  (gates i, f, g, o, 4 units each)
        cell = {f"i{name}": {"kernel": gate(w_x, k)} for k, name in enumerate("ifgo")}
        cell |= {f"h{name}": {"kernel": gate(w_h, k), "bias": gate(b, k)} for k, name in enumerate("ifgo")}
        h = nn.RNN(nn.LSTMCell(4)).apply({"params": {"cell": cell}}, h)
    assert len(params) == 2 * layers + 1  # input/recurrent per layer, then the output map
    expected = nn.Dense(6).apply({"params": params["Dense_0"]}, h)
    np.testing.assert_allclose(net.apply({"params": params}, blocks), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(h[:, 0], h[:, 1], atol=1e-3)  # the steps differ: the comparison is not vacuous


@pytest.mark.parametrize("layers, steps", [(2, 1), (2, 5), (3, 2), (3, 4)])
def test_wavefront_schedule_is_the_layer_by_layer_lstm(layers, steps):
    """The wavefront (layer l at time k − l, all layers in one matmul per step, hand-written
    backward) has the same parameters, outputs and gradients as the stacked layers run in turn."""
    blocks = jax.random.normal(jax.random.PRNGKey(3), (3, steps, 6))
    target = jax.random.normal(jax.random.PRNGKey(5), (3, steps, 6))
    nets = [BlockLSTM(4, layers, 1.0, schedule=s) for s in ("layers", "wavefront")]
    params = [net.init(jax.random.PRNGKey(4), blocks) for net in nets]
    jax.tree.map(np.testing.assert_array_equal, params[0], params[1])  # same names, shapes, initial values
    outs = [net.apply(params[0], blocks) for net in nets]
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-6)
    grads = [jax.grad(lambda p, x, net=net: jnp.sum(target * jnp.tanh(net.apply(p, x))), argnums=(0, 1))(params[0], blocks)
             for net in nets]
    jax.tree.map(lambda w, l: np.testing.assert_allclose(w, l, rtol=1e-4, atol=1e-6), grads[1], grads[0])
    top = grads[1][0]["params"][f"recurrent_{layers - 1}"]
    assert steps == 1 or np.abs(top).max() > 1e-3  # not vacuous: the top layer's recurrence has a gradient


def test_wavefront_runs_one_matmul_per_step():
    """What the wavefront is for: T + L − 1 recurrent matmuls in the forward pass (T = 8, L = 2: 9,
    against 2 · 7 recurrent and one input projection layer by layer)."""
    blocks = jnp.ones((2, 8, 6))

    def matmuls(schedule):
        net = BlockLSTM(4, 2, schedule=schedule)
        params = net.init(jax.random.PRNGKey(0), blocks)
        return str(jax.make_jaxpr(lambda p: net.apply(p, blocks))(params)).count("dot_general")

    assert matmuls("layers") == 2 + 2 * 7 + 1  # two input projections, 7 + 7 recurrent steps, the output map
    assert matmuls("wavefront") == 1 + 8 + 1  # layer 0's input projection, 8 wavefront steps, the output map


def test_lstm_schedule_auto_follows_the_backend_and_bad_names_are_refused():
    from repthesis.nn.vae import resolve_lstm_schedule

    assert resolve_lstm_schedule("auto") == "layers"  # faster on CPU and on an H200 (throughput_gen_gpu.md)
    assert resolve_lstm_schedule("wavefront") == "wavefront"
    with pytest.raises(ValueError, match="valid: auto, layers, wavefront"):
        resolve_lstm_schedule("diagonal")


@pytest.mark.parametrize("steps", [1, 5])
def test_lstm_recurrence_gradient_is_autodiffs(steps):
    """The hand-written backward pass (recurrent-kernel gradient batched over steps) equals
    autodiff through the same forward recurrence."""
    from repthesis.nn.vae import _lstm_forward, lstm_recurrence

    k = jax.random.split(jax.random.PRNGKey(5), 3)
    gates_x = jax.random.normal(k[0], (3, steps, 16))
    w_h = jax.random.normal(k[1], (4, 16))
    target = jax.random.normal(k[2], (3, steps, 4))
    mine = jax.grad(lambda a, b: jnp.sum(target * jnp.tanh(lstm_recurrence(a, b))), argnums=(0, 1))(gates_x, w_h)
    auto = jax.grad(lambda a, b: jnp.sum(target * jnp.tanh(_lstm_forward(a, b)[0])), argnums=(0, 1))(gates_x, w_h)
    for m, a in zip(mine, auto):
        np.testing.assert_allclose(m, a, rtol=1e-5, atol=1e-6)
    assert np.abs(mine[1]).max() > 1e-3 or steps == 1  # the recurrent kernel gets a gradient


@pytest.mark.parametrize("kind, latent_shape", [("vae", (3, 2 * 2 * 8)), ("cvae", (3, 2, 2, 8)), ("crvae", (3, 2, 2, 8))])
def test_shapes(kind, latent_shape):
    net, params = make(kind=kind)
    mean, log_var = net.apply(params, X, method=net.encode)
    assert mean.shape == log_var.shape == latent_shape
    assert net.apply(params, mean, method=net.decode).shape == X.shape


@pytest.mark.parametrize("layers", [1, 2])
def test_generation_block_t_depends_only_on_blocks_up_to_t(layers):
    net, params = make(kind="crvae", lstm_layers=layers)
    z = jax.random.normal(jax.random.PRNGKey(2), (1, 2, 2, 8))

    def u_blocks(zb):
        return to_blocks(net.apply(params, from_blocks(zb, (2, 2, 8)), method=net.transform), 4)[0]

    jac = jax.jacobian(u_blocks)(to_blocks(z, 4))  # [T, d, 1, T, d]
    dep = np.abs(np.asarray(jac)).sum(axis=(1, 2, 4))  # [t_out, t_in]
    assert np.all(dep[np.triu_indices(4, k=1)] == 0)  # no block sees a later one
    assert np.all(np.diag(dep) > 0) and np.all(dep[np.tril_indices(4, k=-1)] > 0)


@pytest.mark.parametrize("kw", [dict(kind="vae"), dict(kind="cvae"), dict(kind="crvae"),
                                dict(kind="crvae", recurrent="inference"), dict(kind="crvae", recurrent="generation"),
                                dict(kind="crvae", mean_path="dense", lstm_layers=2),
                                dict(kind="crvae", lstm_layers=2, lstm_schedule="wavefront"),
                                dict(kind="vae", stochastic_layers=2), dict(kind="crvae", layout="thesis", width=8)],
                         ids=lambda kw: "-".join(map(str, kw.values())))
def test_gradient_of_the_iwae_bound_reaches_every_parameter(kw):
    net, params = make(**kw)

    def loss(p):
        return -jnp.mean(obj.iwae_bound(log_weights(net, p, X, jax.random.PRNGKey(3), 2, True)))

    grads = jax.grad(loss)(params)
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    dead = [jax.tree_util.keystr(path) for path, g in flat if not np.any(np.asarray(g) != 0)]
    assert not dead, f"no gradient reaches {dead}"
    names = str(jax.tree_util.tree_structure(params))
    assert ("inference_lstm" in names) == (kw.get("kind") == "crvae" and kw.get("recurrent", "both") != "generation")
    assert ("generation_lstm" in names) == (kw.get("kind") == "crvae" and kw.get("recurrent", "both") != "inference")


def test_dense_mean_path_is_one_fc_layer_on_the_whole_feature_map():
    """mean_path="dense" (the thesis code's MNIST crVAE): the posterior mean is an FC layer on the
    flattened encoder map, then the element-wise addition; the log-variances keep the conv path."""
    net, params = make(kind="crvae", mean_path="dense")
    p = params["params"]
    features = net.apply(params, X, method=lambda m, x: m.encoder(x))  # [3, 2, 2, 4w]
    kernel, bias = p["enc_mean"]["kernel"], p["enc_mean"]["bias"]
    assert kernel.shape == (features[0].size, 2 * 2 * 8)
    offset = jax.random.normal(jax.random.PRNGKey(6), p["mean_offset"].shape)
    params = {"params": {**p, "mean_offset": offset}}
    expected = (features.reshape(3, -1) @ kernel + bias).reshape(3, 2, 2, 8) + offset
    mean, _ = net.apply(params, X, method=net.encode)
    np.testing.assert_allclose(mean, expected, rtol=1e-5, atol=1e-5)
    assert make(kind="crvae")[1]["params"]["enc_mean"]["kernel"].ndim == 4  # the default is the conv path


def test_thesis_layout_is_the_thesis_codes_conv_stack_with_crelu():
    """layout="thesis" (App. 5.C.1's code): each encoder stage is a stride-2 conv, CReLU (doubling its
    channels), then a 3×3 conv with LeakyReLU(0.1), checked against a hand-built chain; the decoder
    has a linear first conv and two 3×3 convs per resolution, and gives the image's shape."""
    np.testing.assert_array_equal(crelu(jnp.array([[1.0, -2.0, 0.0]])), [[1.0, 0.0, 0.0, 0.0, 2.0, 0.0]])
    net, params = make(kind="crvae", layout="thesis", width=8)
    enc, dec = params["params"]["encoder"], params["params"]["decoder"]
    assert [enc[f"Conv_{i}"]["kernel"].shape for i in range(6)] == [
        (5, 5, 1, 4), (3, 3, 8, 8), (3, 3, 8, 8), (3, 3, 16, 16), (3, 3, 16, 16), (3, 3, 32, 32)]
    assert [dec[f"Conv_{i}"]["kernel"].shape for i in range(8)] == [  # 4w at S/4, then sub-pixel 4·2w → 2w, 4·w → w
        (3, 3, 8, 32), (3, 3, 32, 32), (3, 3, 32, 32), (3, 3, 32, 64), (3, 3, 16, 16), (3, 3, 16, 32), (3, 3, 8, 8),
        (3, 3, 8, 1)]
    h = X
    for i, stride in enumerate([2, 1, 2, 1, 2, 1]):
        kernel = enc[f"Conv_{i}"]["kernel"]
        h = nn.Conv(kernel.shape[-1], kernel.shape[:2], (stride, stride), padding="SAME").apply(
            {"params": enc[f"Conv_{i}"]}, h)
        h = jnp.concatenate([jnp.maximum(h, 0), jnp.maximum(-h, 0)], -1) if stride == 2 else jnp.where(h > 0, h, 0.1 * h)
    np.testing.assert_allclose(net.apply(params, X, method=lambda m, x: m.encoder(x)), h, rtol=1e-5, atol=1e-5)
    mean, _ = net.apply(params, X, method=net.encode)
    assert net.apply(params, mean, method=net.decode).shape == X.shape
    big = VAE(kind="vae", image_size=28, width=8, layout="thesis")
    shapes = jax.eval_shape(big.init, jax.random.PRNGKey(0), jnp.zeros((2, 28, 28, 1)))
    assert shapes["params"]["encoder"]["Conv_5"]["kernel"].shape == (3, 3, 32, 32)
    assert jax.eval_shape(lambda v: big.apply(v, jnp.zeros((2, 28, 28, 1)))[0], shapes).shape == (2, 28, 28, 1)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="valid: a multiple of 4"):
        VAE(kind="cvae", image_size=30).init(jax.random.PRNGKey(0), jnp.zeros((1, 30, 30, 1)))
    with pytest.raises(ValueError, match="divisible by blocks"):
        VAE(image_size=16, latent_channels=6, blocks=4).init(jax.random.PRNGKey(0), X)
    with pytest.raises(ValueError, match="valid: dense, conv"):
        VAE(image_size=16, mean_path="fc").init(jax.random.PRNGKey(0), X)
    with pytest.raises(ValueError, match="layout='deep' is not valid; valid: compact, thesis"):
        VAE(image_size=16, layout="deep").init(jax.random.PRNGKey(0), X)
    with pytest.raises(ValueError, match="width=7 must be even with layout=thesis"):
        VAE(image_size=16, width=7, layout="thesis").init(jax.random.PRNGKey(0), X)
