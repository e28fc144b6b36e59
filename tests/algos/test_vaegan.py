"""VAE-GAN / crVAE-GAN: KL weights by block, the discriminator's batch, the >90 % skip rule
through the real update step, and gradients reaching every generator and discriminator parameter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from repthesis import registry
from repthesis.algos.vaegan import discriminator_batch, weighted_kl
from repthesis.data import make_shapes
from tests.algos.tiny import max_change

TINY = dict(image_size=16, latent_channels=8, blocks=4, lstm_size=16, batch_size=16, width=8,
            steps_per_chunk=2, total_steps=2)


def test_kl_weights_alpha1_on_the_first_blocks_alpha2_on_the_rest():
    cfg = registry.make_config("crvae-gan", {**TINY, "kl_first_blocks": 1, "kl_weight_first": 3.0, "kl_weight": 2.0})
    mean = jnp.array([1.0, 2.0, 0.0, 0.0, 1.0, 0.0, 0.0, 3.0]).reshape(1, 1, 1, 8)  # 4 blocks of 2 channels
    log_var = jnp.zeros_like(mean)
    # KL of N(μ, 1) to N(0, 1) is μ²/2: blocks (1+4)/2, 0, 1/2, 9/2 → 3·2.5 + 2·(0 + 0.5 + 4.5)
    np.testing.assert_allclose(weighted_kl(mean, log_var, cfg), [3 * 2.5 + 2 * 5.0], rtol=1e-6)
    flat = registry.make_config("vae-gan", {**TINY, "kl_weight": 2.0})
    np.testing.assert_allclose(weighted_kl(jnp.array([[1.0, 2.0]]), jnp.zeros((1, 2)), flat), [2 * 2.5], rtol=1e-6)


def test_discriminator_batch_is_half_real_quarter_prior_quarter_reconstructions():
    real, prior, post = (jnp.full((8, 2, 2, 1), v) for v in (1.0, 2.0, 3.0))
    images, labels = discriminator_batch(real, prior, post)
    np.testing.assert_array_equal(images[:, 0, 0, 0], [1, 1, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(labels, [1, 1, 1, 1, 0, 0, 0, 0])


def make(algo, **kw):
    cfg = registry.make_config(algo, {**TINY, **kw})
    trainer = registry.get_algo(algo).make_train(cfg, make_shapes(64, 16, 0), False)
    return trainer, trainer.init(jax.random.PRNGKey(0))


@pytest.mark.parametrize("threshold, skipped", [(0.0, True), (1.0, False)])
def test_discriminator_step_is_skipped_above_the_accuracy_threshold(threshold, skipped):
    # accuracy > 0 always holds (skip every step), accuracy > 1 never does (never skip)
    trainer, state = make("crvae-gan", disc_skip_accuracy=threshold)
    new, metrics = trainer.run_chunk(state)
    assert float(metrics["disc_skipped"]) == float(skipped)
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa: E731
    assert same(state.params["disc"], new.params["disc"]) == skipped
    assert same(state.opt_state["disc"], new.opt_state["disc"]) == skipped
    assert not same(state.params["vae"], new.params["vae"])  # the generator always learns


@pytest.mark.parametrize("algo", ["vae-gan", "crvae-gan"])
def test_gradients_reach_every_generator_and_discriminator_parameter(algo):
    trainer, state = make(algo, mi_weight=0.02)
    x = jnp.asarray(make_shapes(16, 16, 1))
    grads, metrics, stats = trainer.losses(state.params, x, jax.random.PRNGKey(1))
    assert stats is None  # no batch norm by default
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    dead = [jax.tree_util.keystr(path) for path, g in flat if not np.any(np.asarray(g) != 0)]
    assert not dead, f"no gradient reaches {dead}"
    assert all(np.isfinite(float(v)) for v in metrics.values())
    names = str(jax.tree_util.tree_structure(state.params["vae"]))
    assert ("generation_lstm" in names) == (algo == "crvae-gan")  # the MI code u = LSTM_gen(z) for crVAE-GAN


def test_crvae_gan_block_lstms_train_at_the_scaled_rate_and_the_schedule_reaches_both_networks():
    trainer, state = make("crvae-gan", recurrent_lr_scale=0.125, disc_skip_accuracy=1.0, steps_per_chunk=1,
                          lr_decay_every=1, lr_decay=0.5)
    new, _ = trainer.run_chunk(state)
    step = max_change(state.params, new.params)
    lr = trainer.cfg.learning_rate  # Adam's first step moves every parameter with a gradient by lr
    assert max(jax.tree.leaves(step["vae"]["params"]["generation_lstm"])) == pytest.approx(lr / 8, rel=1e-3)
    assert max(jax.tree.leaves(step["vae"]["params"]["encoder"])) == pytest.approx(lr, rel=1e-3)
    assert max(jax.tree.leaves(step["disc"])) == pytest.approx(lr, rel=1e-3)
    newer, _ = trainer.run_chunk(new)  # the second step runs at lr/2 (Adam's later steps are at most ~lr_t)
    second = max_change(new.params, newer.params)
    assert max(jax.tree.leaves(second["disc"])) <= lr / 2 * 1.01


def test_crvae_gan_with_batch_norm_trains_its_running_averages_and_evaluates_on_them():
    """norm="batch": gradients reach every parameter of the generator's batch-normalised pass, every
    running average moves (the recorder's chaining of the two decoder passes is tested in
    test_vae.py), a chunk writes them into the state, and decoding uses them: an image decodes the
    same alone as in a batch."""
    trainer, state = make("crvae-gan", norm="batch", mi_weight=0.02)
    x = jnp.asarray(make_shapes(16, 16, 1))
    grads, metrics, stats = trainer.losses(state.params, x, jax.random.PRNGKey(1))
    params_only = {"vae": grads["vae"]["params"], "disc": grads["disc"]}
    flat = jax.tree_util.tree_flatten_with_path(params_only)[0]
    dead = [jax.tree_util.keystr(path) for path, g in flat if not np.any(np.asarray(g) != 0)]
    assert not dead, f"no gradient reaches {dead}"
    assert all(np.isfinite(float(v)) for v in metrics.values())
    old = state.params["vae"]["batch_stats"]
    assert jax.tree.structure(stats) == jax.tree.structure(old)
    assert all(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(old)))
    new, _ = trainer.run_chunk(state)
    moved = max_change(state.params["vae"]["batch_stats"], new.params["vae"]["batch_stats"])
    assert all(c > 0 for c in jax.tree.leaves(moved))
    vae = trainer.network
    decode = jax.jit(lambda v, z: vae.apply(v, z, method=vae.decode))
    z = vae.apply(new.params["vae"], x, method=vae.encode)[0]
    np.testing.assert_allclose(decode(new.params["vae"], z)[:1], decode(new.params["vae"], z[:1]), rtol=1e-5, atol=1e-5)
