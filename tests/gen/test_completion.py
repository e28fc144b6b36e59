"""Completion by latent optimisation: masks occlude the named region, the objective falls, and the
known pixels are kept exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from repthesis.data import make_shapes
from repthesis.gen.completion import complete, completion_loss, make_mask
from repthesis.nn.vae import VAE, Discriminator


def test_masks_occlude_the_named_region():
    m = make_mask("lower", 8, 3)
    assert m.shape == (8, 8, 3) and m[:4].min() == 1 and m[4:].max() == 0
    c = make_mask("center", 8, 1)
    assert c[2:6, 2:6].max() == 0 and c.sum() == 64 - 16
    with pytest.raises(ValueError, match="valid: lower, upper"):
        make_mask("nose", 8, 1)


def test_completion_lowers_its_objective_and_keeps_known_pixels():
    x = jnp.asarray(make_shapes(4, 16, 0))
    vae = VAE(kind="crvae", image_size=16, channels=3, latent_channels=8, blocks=4, lstm_size=16, width=8)
    params = vae.init(jax.random.PRNGKey(0), x)
    disc = Discriminator(0, 8)
    d_params = disc.init(jax.random.PRNGKey(1), x)
    decode = lambda z: vae.apply(params, z, method=vae.decode)  # noqa: E731
    encode = lambda x: vae.apply(params, x, method=vae.encode)[0]  # noqa: E731
    discriminate = lambda x: disc.apply(d_params, x)[0]  # noqa: E731
    mask = jnp.asarray(make_mask("upper", 16, 3))
    filled, x_hat, history = complete(decode, encode, discriminate, x, mask, steps=30)
    assert history[-1] < 0.95 * history[0], history  # an untrained decoder: a modest but clear fall
    np.testing.assert_array_equal(np.asarray(filled) * mask, np.asarray(x) * mask)
    np.testing.assert_allclose(np.asarray(filled) * (1 - mask), np.asarray(x_hat) * (1 - mask))
    # the objective by hand at z = 0 without a discriminator: the masked squared error only
    z0 = jnp.zeros_like(encode(x))
    by_hand = np.sum(np.square((np.asarray(decode(z0)) - np.asarray(x)) * np.asarray(mask)), axis=(1, 2, 3))
    by_hand += 1e-5 * 0.5 * np.log(2 * np.pi) * z0[0].size
    np.testing.assert_allclose(completion_loss(decode, None, z0, x, mask, 1e-5, 0.003), by_hand, rtol=1e-5)


def test_traversals_sample_blocks_in_order_and_move_one_block_at_a_time():
    from repthesis.gen.traversal import interpolate_blocks, progressive

    z = jnp.arange(1, 9, dtype=jnp.float32).reshape(1, 1, 1, 8)  # 4 blocks of 2 channels
    rows = np.asarray(progressive(z, 4)).reshape(5, 8)
    np.testing.assert_array_equal(rows[0], 0)
    np.testing.assert_array_equal(rows[2], [1, 2, 3, 4, 0, 0, 0, 0])
    np.testing.assert_array_equal(rows[4], np.arange(1, 9))
    moves = np.asarray(interpolate_blocks(z[0], jnp.zeros_like(z[0]), 4, steps=3)).reshape(4, 3, 8)
    np.testing.assert_array_equal(moves[1, 2], [1, 2, 0, 0, 5, 6, 7, 8])  # block 1 moved all the way
    np.testing.assert_array_equal(moves[1, 1], [1, 2, 1.5, 2, 5, 6, 7, 8])  # halfway
    np.testing.assert_array_equal(moves[:, 0], np.tile(np.arange(1, 9), (4, 1)))  # every row starts at z


def test_quality_score_is_one_for_uninformative_and_k_for_confident_balanced_predictions():
    from repthesis.gen.quality import score_from_probs

    assert score_from_probs(np.full((30, 3), 1 / 3), splits=3) == pytest.approx((1.0, 0.0))
    confident = np.eye(3)[np.arange(36) % 3]  # each sample certain, classes balanced in every split
    assert score_from_probs(confident, splits=3)[0] == pytest.approx(3.0, rel=1e-6)
    collapsed = np.eye(3)[np.zeros(30, int)]  # every sample the same class: mode collapse
    assert score_from_probs(collapsed, splits=3)[0] == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="splits=40 must be in 1..36"):
        score_from_probs(confident, splits=40)
