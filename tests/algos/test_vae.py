"""VAE training: the single-sample ELBO and the K = 1 importance weight agree in expectation; a
tiny crVAE learns scikit-learn's binarised digits; the NLL estimate is finite, bounded by the ELBO, and K ≤ 0 fails;
the thesis code's optimiser options (block LSTMs at a scaled rate with clipped gradients, a halving
schedule) against Adam's hand-computed updates and a plain Adam on hand-clipped gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optax

from repthesis.algos.vae import VAEConfig, elbo_terms, log_weights, make_optimizer, make_train
from repthesis.data import make_shapes
from tests.algos.tiny import max_change


def binary_shapes(n, seed):
    grey = make_shapes(n, 16, seed).mean(-1, keepdims=True)
    return (grey > 0.25).astype(np.float32)


TINY = dict(data="shapes", image_size=16, latent_channels=8, blocks=4, lstm_size=32, batch_size=32,
            steps_per_chunk=100, nll_samples=64, nll_chunk=32, learning_rate=2e-3)


@pytest.mark.parametrize("layers", [1, 2])
def test_k1_importance_weight_equals_the_elbo_in_expectation(layers):
    cfg = VAEConfig(model="crvae", stochastic_layers=layers, total_steps=1, **TINY)
    images = binary_shapes(8, 0)
    trainer = make_train(cfg, images, binary=True)
    params = trainer.init(jax.random.PRNGKey(0)).params
    x = jnp.asarray(images[:2])
    w = log_weights(trainer.network, params, x, jax.random.PRNGKey(1), 1500, True).mean(0)
    elbo = jnp.mean(jax.vmap(lambda k: elbo_terms(trainer.network, params, x, k, True)["elbo"])(
        jax.random.split(jax.random.PRNGKey(2), 200)), 0)
    np.testing.assert_allclose(w, elbo, rtol=0.02)


# crvae-gan's update step runs in test_vaegan.py (and its CLI in test_stage2.py); stage2 in test_stage2.py
@pytest.mark.parametrize("algo", ["vae", "cvae", "crvae", "criwae", "crvae-2layer", "vae-gan"])
def test_smoke_every_generative_algo_updates_params(algo):
    from repthesis import registry

    cfg = registry.make_config(algo, {**TINY, "total_steps": 5, "steps_per_chunk": 5})
    trainer = registry.get_algo(algo).make_train(cfg, binary_shapes(64, 0), True)
    state = trainer.init(jax.random.PRNGKey(0))
    new, metrics = trainer.run_chunk(state)
    assert int(new.step) == 5 and all(np.isfinite(float(v)) for v in metrics.values())
    moved = jax.tree.map(lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))), state.params, new.params)
    assert all(jax.tree.leaves(moved))


def binary_digits():
    """scikit-learn's 1,797 8×8 digits, upsampled to 16×16, intensities in [0, 1]."""
    from sklearn.datasets import load_digits

    return np.kron(load_digits().images / 16.0, np.ones((1, 2, 2)))[..., None].astype(np.float32)


def test_tiny_crvae_learns_binarised_digits_and_its_nll_is_bounded_by_the_elbo():
    from repthesis.data import binarise

    cfg = VAEConfig(model="crvae", total_steps=600, **TINY)
    digits = binary_digits()
    train, held_out = digits[:1700], binarise(digits[1700:1764], 0)  # dynamic binarisation in training
    trainer = make_train(cfg, train, binary=True)
    state = trainer.init(jax.random.PRNGKey(0))
    before = trainer.evaluate(state.params, held_out, jax.random.PRNGKey(5))
    for _ in range(cfg.num_chunks):
        state, metrics = trainer.run_chunk(state)
    after = trainer.evaluate(state.params, held_out, jax.random.PRNGKey(5))
    assert before < -150 and after > -95, (before, after)  # 256 binary pixels: log ½ each is −177; seen: −81
    nll = trainer.nll(state.params, held_out[:16], jax.random.PRNGKey(6))
    assert np.all(np.isfinite(nll)) and nll.mean() <= -after + 5  # NLL ≤ −ELBO up to noise
    with pytest.raises(ValueError, match="must be > 0"):
        trainer.nll(state.params, held_out[:4], jax.random.PRNGKey(6), samples=-1)


def _updates(cfg, params, grads):
    opt = make_optimizer(cfg)
    state, out = opt.init(params), []
    for g in grads:
        u, state = opt.update(jax.tree.map(lambda p: jnp.full_like(p, g), params), state, params)
        out.append(u)
    return out


def test_block_lstms_train_at_a_scaled_rate_with_clipped_gradients():
    params = {"params": {"inference_lstm": {"input": {"kernel": jnp.zeros(3)}}, "generation_lstm": {"b": jnp.zeros(2)},
                         "encoder": {"kernel": jnp.zeros(4)}, "mean_offset": jnp.zeros(2)}}
    grads = (100.0, 1.0, -3.0)
    ups = _updates(VAEConfig(learning_rate=1e-2, recurrent_lr_scale=0.125, recurrent_grad_clip=5.0), params, grads)
    # Adam's first update is −lr·sign(g) whatever |g|: the LSTMs move 1/8 as far
    np.testing.assert_allclose(ups[0]["params"]["encoder"]["kernel"], -1e-2, rtol=1e-5)
    np.testing.assert_allclose(ups[0]["params"]["inference_lstm"]["input"]["kernel"], -1e-2 / 8, rtol=1e-5)
    # later steps: the LSTMs follow Adam on the clipped gradients (5, 1, −3), the rest on (100, 1, −3)
    plain = lambda lr, gs: _updates(VAEConfig(learning_rate=lr), {"p": jnp.zeros(1)}, gs)  # noqa: E731
    for t, (clipped, unclipped) in enumerate(zip(plain(1e-2 / 8, (5.0, 1.0, -3.0)), plain(1e-2, grads))):
        np.testing.assert_allclose(ups[t]["params"]["generation_lstm"]["b"], clipped["p"][0], rtol=1e-5)
        np.testing.assert_allclose(ups[t]["params"]["mean_offset"], unclipped["p"][0], rtol=1e-5)
    assert abs(float(ups[1]["params"]["encoder"]["kernel"][0]) - float(ups[1]["params"]["inference_lstm"]["input"]["kernel"][0]) * 8) > 1e-4


def test_learning_rate_halves_every_lr_decay_every_steps():
    # a constant gradient of 1 makes every Adam update −lr_t (m̂ = v̂ = 1)
    ups = _updates(VAEConfig(learning_rate=1e-2, lr_decay_every=2, lr_decay=0.5), {"w": jnp.zeros(2)}, [1.0] * 5)
    np.testing.assert_allclose([float(u["w"][0]) for u in ups], [-1e-2, -1e-2, -5e-3, -5e-3, -2.5e-3], rtol=1e-4)


def test_default_optimizer_is_plain_adam_and_bad_options_are_refused():
    params = {"w": jnp.zeros(2)}
    assert jax.tree.structure(make_optimizer(VAEConfig()).init(params)) == jax.tree.structure(
        optax.adam(1e-3).init(params))  # checkpoints written before these options still restore
    for bad, match in ((dict(recurrent_lr_scale=0.0), "recurrent_lr_scale=0.0 must be > 0"),
                       (dict(recurrent_grad_clip=-1.0), "recurrent_grad_clip=-1.0 must be >= 0"),
                       (dict(lr_decay=1.5), "lr_decay=1.5 must lie in"), (dict(lr_decay_every=-1), "must be >= 0")):
        with pytest.raises(ValueError, match=match):
            VAEConfig(**bad)


def test_crvae_trainer_gives_its_real_block_lstms_the_scaled_rate():
    cfg = VAEConfig(model="crvae", total_steps=1, **{**TINY, "steps_per_chunk": 1}, recurrent_lr_scale=0.125)
    trainer = make_train(cfg, binary_shapes(64, 0), binary=True)
    state = trainer.init(jax.random.PRNGKey(0))
    new, _ = trainer.run_chunk(state)
    step = max_change(state.params, new.params)
    lr = cfg.learning_rate  # Adam's first step moves every parameter with a gradient by lr
    for name in ("inference_lstm", "generation_lstm"):
        assert max(jax.tree.leaves(step["params"][name])) == pytest.approx(lr / 8, rel=1e-3)
    assert max(jax.tree.leaves(step["params"]["encoder"])) == pytest.approx(lr, rel=1e-3)


def test_lstm_forget_bias_reaches_every_layer_of_both_block_lstms():
    from repthesis.algos.vae import make_network

    cfg = VAEConfig(model="crvae", lstm_forget_bias=1.0, **TINY)
    params = make_network(cfg, 1).init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 1)))["params"]
    n = cfg.lstm_size
    for name in ("inference_lstm", "generation_lstm"):
        for layer in ("input", "input_1"):
            bias = np.asarray(params[name][layer]["bias"])
            assert np.all(bias[n:2 * n] == 1.0) and not np.any(np.delete(bias, np.s_[n:2 * n]))


def test_batch_norm_trains_on_batch_statistics_and_evaluates_on_running_averages():
    """norm="batch" (the thesis code's batch-normalised convs): the training loss normalises by the batch's
    statistics and moves every running average 0.1 of the way to them (the first encoder layer's
    checked by hand, the first decoder layer's against a direct call on the same z); gradients reach
    every parameter; a training step moves parameters and averages; evaluation uses the averages,
    so an image's output does not depend on its batch."""
    from flax import linen as nn

    from repthesis.algos.vae import BatchStatsRecorder
    from repthesis.gen import objectives as obj

    with pytest.raises(ValueError, match="norm='layer' is not valid; valid: none, batch"):
        VAEConfig(norm="layer")
    cfg = VAEConfig(model="crvae", norm="batch", total_steps=5, width=8, lstm_layers=1, **{**TINY, "steps_per_chunk": 5})
    trainer = make_train(cfg, binary_shapes(64, 0), True)
    state = trainer.init(jax.random.PRNGKey(0))
    network, x, key = trainer.network, jnp.asarray(binary_shapes(8, 1)), jax.random.PRNGKey(1)
    variables = {**state.params, "batch_stats": jax.tree.map(lambda a: a + 0.5, state.params["batch_stats"])}

    def loss(params):
        recorder = BatchStatsRecorder(network)
        elbo = elbo_terms(recorder, {**variables, "params": params}, x, key, True)["elbo"]
        return -jnp.mean(elbo), recorder.updated

    grads, stats = jax.jit(jax.grad(loss, has_aux=True))(variables["params"])
    dead = [jax.tree_util.keystr(p) for p, g in jax.tree_util.tree_flatten_with_path(grads)[0] if not np.any(g != 0)]
    assert not dead, f"no gradient reaches {dead}"

    conv = variables["params"]["encoder"]["Conv_0"]
    h = nn.Conv(cfg.width, (4, 4), (2, 2), padding="SAME", use_bias=False).apply({"params": conv}, x)
    old = variables["batch_stats"]["encoder"]["BatchNorm_0"]
    np.testing.assert_allclose(stats["encoder"]["BatchNorm_0"]["mean"], 0.9 * old["mean"] + 0.1 * h.mean((0, 1, 2)),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["encoder"]["BatchNorm_0"]["var"], 0.9 * old["var"] + 0.1 * h.var((0, 1, 2)),
                               rtol=1e-4, atol=1e-6)
    training = network.clone(batch_statistics=True)  # the recorder's encoder pass, then its decoder's on that z
    run = jax.jit(training.apply, static_argnames=("method", "mutable"))
    (mean, log_var), _ = run(variables, x, method=network.encode, mutable=("batch_stats",))
    z = obj.reparameterise(jax.random.split(key)[0], mean, log_var)
    _, direct = run(variables, z, method=network.decode, mutable=("batch_stats",))
    for got, want in zip(jax.tree.leaves(stats["decoder"]), jax.tree.leaves(direct["batch_stats"]["decoder"])):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    before = variables["batch_stats"]["decoder"]["BatchNorm_0"]["mean"]
    assert not np.allclose(stats["decoder"]["BatchNorm_0"]["mean"], before)

    decode = jax.jit(lambda v, z: network.apply(v, z, method=network.decode))
    np.testing.assert_allclose(decode(variables, z)[:1], decode(variables, z[:1]), rtol=1e-5, atol=1e-5)

    new, metrics = trainer.run_chunk(state)
    assert int(new.step) == 5 and np.isfinite(float(metrics["elbo"]))
    assert all(c > 0 for c in jax.tree.leaves(max_change(state.params, new.params)))
    assert len(jax.tree.leaves(new.params["batch_stats"])) == 12  # mean and var of 3 + 3 layers


def test_thesis_layout_trains_with_batch_norm():
    """layout="thesis" with norm="batch" (the thesis code's MNIST convs): a chunk moves every parameter
    and the running averages of all 13 norms (6 encoder, 7 decoder); an odd width is refused."""
    with pytest.raises(ValueError, match="width=9 must be even with layout=thesis"):
        VAEConfig(layout="thesis", width=9)
    with pytest.raises(ValueError, match="layout='deep' is not valid; valid: compact, thesis"):
        VAEConfig(layout="deep")
    cfg = VAEConfig(model="vae", norm="batch", layout="thesis", width=8, total_steps=5, **{**TINY, "steps_per_chunk": 5})
    trainer = make_train(cfg, binary_shapes(64, 0), True)
    state = trainer.init(jax.random.PRNGKey(0))
    new, metrics = trainer.run_chunk(state)
    assert int(new.step) == 5 and np.isfinite(float(metrics["elbo"]))
    assert all(c > 0 for c in jax.tree.leaves(max_change(state.params, new.params)))
    assert len(jax.tree.leaves(new.params["batch_stats"])) == 26


def test_batch_stats_recorder_chains_its_calls():
    """A network part run twice in one loss (VAE-GAN's decoder: reconstructions, then prior samples)
    moves its running averages twice, the second move from the first's result, as sequential
    training-mode calls do; parts a call does not use keep their averages."""
    from repthesis.algos.vae import BatchStatsRecorder
    from repthesis.nn.vae import VAE

    net = VAE(kind="cvae", image_size=16, latent_channels=8, width=8, norm="batch")
    x = jnp.asarray(binary_shapes(4, 0))
    variables = jax.jit(net.init)(jax.random.PRNGKey(0), x)
    variables = {**variables, "batch_stats": jax.tree.map(lambda a: a + 0.5, variables["batch_stats"])}
    z1, z2 = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 2, 2, 8))

    def recorded(v):
        recorder = BatchStatsRecorder(net)
        recorder.apply(v, z1, method=net.decode)
        recorder.apply(v, z2, method=net.decode)
        return recorder.updated

    def sequential(v):
        training = net.clone(batch_statistics=True)
        _, once = training.apply(v, z1, method=net.decode, mutable=["batch_stats"])
        _, twice = training.apply({**v, **once}, z2, method=net.decode, mutable=["batch_stats"])
        return once["batch_stats"], twice["batch_stats"]

    got = jax.jit(recorded)(variables)
    once, twice = jax.jit(sequential)(variables)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(twice)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    old = variables["batch_stats"]["decoder"]["BatchNorm_0"]["mean"]
    assert not np.allclose(got["decoder"]["BatchNorm_0"]["mean"], once["decoder"]["BatchNorm_0"]["mean"])
    assert not np.allclose(once["decoder"]["BatchNorm_0"]["mean"], old)
    for a, b in zip(jax.tree.leaves(got["encoder"]), jax.tree.leaves(variables["batch_stats"]["encoder"])):
        np.testing.assert_array_equal(a, b)
