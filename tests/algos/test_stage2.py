"""Stage 2 (§5.4.3): G doubles the side, the losses are the thesis's Stage2 objective (checked by
hand; γ weighs the perceptual term of G's loss only), gradients reach every G and D parameter,
f's targets, learning, bit-identical resume of the whole state (f included) and the CLI."""

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from repthesis import registry, train
from repthesis.algos.stage2 import feature_targets
from repthesis.algos.vae import make_network
from repthesis.data import make_shapes, shape_labels
from repthesis.gen import objectives as obj
from repthesis.nn.stage2 import Upsampler, downsample, upsample_nearest

S1 = dict(model="crvae", image_size=16, latent_channels=8, blocks=4, lstm_size=16, width=8)
TINY = dict(image_size=32, width=8, res_blocks=1, batch_size=8, feature_steps=30, steps_per_chunk=20, total_steps=20)


def stage1():
    cfg = registry.make_config("crvae", {**S1, "data": "shapes"})
    net = make_network(cfg, 3)
    return net, net.init(jax.random.PRNGKey(5), jnp.zeros((1, 16, 16, 3)))


def make(**kw):
    cfg = registry.make_config("stage2", {**TINY, **kw})
    trainer = registry.get_algo("stage2").make_train(cfg, make_shapes(64, 32, 0), False, stage1=stage1(),
                                                       labels=shape_labels(64, 0))
    return trainer, trainer.init(jax.random.PRNGKey(0))


def test_downsample_is_average_pooling_and_zero_g_is_the_nearest_upsample():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    np.testing.assert_allclose(downsample(x)[0, :, :, 0], [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_allclose(upsample_nearest(jnp.array([[1.0, 2.0]]).reshape(1, 1, 2, 1))[0, :, :, 0],
                               [[1, 1, 2, 2], [1, 1, 2, 2]])
    g = Upsampler(3, width=4, res_blocks=1)
    small = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, 3))
    params = jax.jit(g.init)(jax.random.PRNGKey(1), small)
    apply = jax.jit(g.apply)
    assert apply(params, small).shape == (2, 16, 16, 3)
    zero = jax.tree.map(jnp.zeros_like, params)  # every conv outputs 0: G is the skip path alone
    np.testing.assert_allclose(apply(zero, small), upsample_nearest(small))
    plain = Upsampler(3, width=4, res_blocks=1, skip=False)
    np.testing.assert_allclose(jax.jit(plain.apply)(zero, small), 0.0)


def test_losses_are_the_stage2_objective_by_hand_and_reach_every_parameter():
    trainer, state = make(perceptual_weight=3.0)
    s1_net, s1 = stage1()
    g, d = trainer.upsampler, trainer.discriminator
    x = jnp.asarray(make_shapes(8, 32, 1))
    key = jax.random.PRNGKey(7)
    _, metrics = trainer.losses(state.params, state.features, s1, x, key)
    # the same draws as the trainer: z ~ q(z | ↓x) with the first key, z ~ p(z) with the second
    from repthesis.gen.quality import Classifier

    f_net = Classifier(3)

    @jax.jit  # the networks' outputs, computed the long way (one program, to keep the test quick)
    def outputs(params, features):
        k_z, k_p = jax.random.split(key)
        mean, log_var = s1_net.apply(s1, downsample(x), method=s1_net.encode)
        recon = s1_net.apply(s1, obj.reparameterise(k_z, mean, log_var), method=s1_net.decode)
        prior = s1_net.apply(s1, s1_net.apply(s1, k_p, 8, method=s1_net.sample_prior), method=s1_net.decode)
        fake_p, fake_r = g.apply(params["g"], prior), g.apply(params["g"], recon)
        logit = lambda im: d.apply(params["disc"], im)[0]  # noqa: E731
        feat = lambda im: f_net.apply(features, im, method=f_net.features)  # noqa: E731
        return logit(x), logit(fake_p), logit(fake_r), feat(x), feat(fake_r)

    real, l_p, l_r, f_x, f_r = (np.asarray(v, np.float64) for v in outputs(state.params, state.features))
    softplus = lambda v: np.log1p(np.exp(v))  # noqa: E731
    perceptual = np.mean((f_x - f_r) ** 2)
    adversarial = np.mean(softplus(-l_p)) + np.mean(softplus(-l_r))  # −log D(G(x̃))
    disc = np.mean(softplus(-real)) + np.mean(softplus(l_p)) + np.mean(softplus(l_r))
    np.testing.assert_allclose(float(metrics["perceptual"]), perceptual, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["adversarial"]), adversarial, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["g_loss"]), adversarial + 3.0 * perceptual, rtol=1e-4)
    np.testing.assert_allclose(float(metrics["disc_loss"]), disc, rtol=1e-4)
    # gradients (of exactly these losses) reach every parameter of G and of D
    grads, _ = trainer.losses(state.params, state.features, s1, x, key)
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    dead = [jax.tree_util.keystr(path) for path, v in flat if not np.any(np.asarray(v) != 0)]
    assert not dead, f"no gradient reaches {dead}"


def test_feature_targets_are_labels_or_the_four_rotations():
    images = np.random.default_rng(0).random((5, 4, 4, 1)).astype(np.float32)
    same, labels, classes = feature_targets(images, np.array([0, 2, 1, 2, 0]))
    assert same is images and classes == 3
    rotated, labels, classes = feature_targets(images, None, rotations_of=3)
    assert classes == 4 and rotated.shape == (12, 4, 4, 1)
    np.testing.assert_array_equal(labels, np.repeat(np.arange(4), 3))
    for k in range(4):
        np.testing.assert_array_equal(rotated[3 * k:3 * k + 3], np.rot90(rotated[:3], k, axes=(1, 2)))


def test_stage2_learns_its_perceptual_target():
    # γ = 100: the perceptual term leads G's loss. Without it (γ = 0) the adversarial game alone
    # moves this distance 0.33 → 1.61, 0.26, 0.78, 0.25 over the same four chunks.
    trainer, state = make(perceptual_weight=100.0, feature_steps=100, learning_rate=1e-3, steps_per_chunk=25)
    state = trainer.prepare(state)
    _, s1 = stage1()
    x, key = jnp.asarray(make_shapes(64, 32, 0)), jax.random.PRNGKey(7)  # one fixed batch, fixed draws

    def perceptual(state):
        return float(trainer.losses(state.params, state.features, s1, x, key)[1]["perceptual"])

    before, after = perceptual(state), []
    for _ in range(4):
        state, _ = trainer.run_chunk(state)
        after.append(perceptual(state))
    assert np.mean(after) < 0.75 * before, (before, after)


def run_cli(argv, capsys):
    code = train.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, needle", [
    ([], "needs --stage1=DIR"),
    (["--stage1=/no/such/run"], "holds no run"),
])
def test_stage2_bad_input_is_one_line(tmp_path, capsys, argv, needle):
    code, out, err = run_cli(["--algo=stage2", *argv, f"--out={tmp_path / 'x'}"], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x" / "config.json").exists()


def test_stage2_state_with_its_feature_network_resumes_bit_identically(tmp_path):
    from repthesis.utils.checkpoint import CheckpointStore

    trainer, state = make(steps_per_chunk=3, feature_steps=5)
    state = trainer.prepare(state)
    straight, _ = trainer.run_chunk(trainer.run_chunk(state)[0])
    half, _ = trainer.run_chunk(state)
    store = CheckpointStore(str(tmp_path / "ckpt"))
    store.save(3, half)
    fresh = trainer.init(jax.random.PRNGKey(9))  # another init: everything must come from the checkpoint
    resumed, _ = trainer.run_chunk(trainer.restore(store.restore_latest(fresh)[1]))
    store.close()
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_stage2_cli_trains_on_a_stage1_run(tmp_path, capsys):
    s1 = tmp_path / "s1"
    code, out, err = run_cli(["--algo=crvae-gan", "--data=shapes", "--image-size=16", "--width=8", "--latent-channels=8",
                              "--blocks=4", "--lstm-size=16", "--batch-size=8", "--total-steps=10",
                              "--steps-per-chunk=10", f"--out={s1}", "--no-progress"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["--algo=stage2", f"--stage1={s1}", "--image-size=64", f"--out={tmp_path / 'x'}"], capsys)
    assert code == 2 and "valid: 32" in err, err
    common = ["--algo=stage2", f"--stage1={s1}", "--image-size=32", "--width=8", "--res-blocks=1", "--batch-size=8",
              "--feature-steps=10", "--steps-per-chunk=10", "--checkpoint-every=1", "--no-progress"]
    run = tmp_path / "a"
    code, out, err = run_cli([*common, "--total-steps=10", f"--out={run}"], capsys)
    assert code == 0 and "preparing" in out, err
    for name in ("samples.png", "reconstructions.png", "traversal.png", "curve.png"):
        assert (run / name).exists(), name
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [10] and float(rows[0]["val_mse"]) > 0


def test_a_batch_normalised_stage1_decodes_with_its_running_averages():
    """A stage 1 trained with norm="batch": the two-stage model's variables carry its running
    averages, and its decode uses them (other averages, another image)."""
    cfg = registry.make_config("crvae", {**S1, "data": "shapes", "norm": "batch"})
    s1_net = make_network(cfg, 3)
    s1 = jax.jit(s1_net.init)(jax.random.PRNGKey(5), jnp.zeros((1, 16, 16, 3)))
    s2 = registry.make_config("stage2", {**TINY, "feature_steps": 0})
    trainer = registry.get_algo("stage2").make_train(s2, make_shapes(64, 32, 0), False, stage1=(s1_net, s1))
    state = trainer.init(jax.random.PRNGKey(0))
    two, variables = trainer.network, trainer.vae_params(state.params)
    assert jax.tree.structure(variables["batch_stats"]["stage1"]) == jax.tree.structure(s1["batch_stats"])
    decode = jax.jit(lambda v, z: two.apply(v, z, method=two.decode))
    z = jax.random.normal(jax.random.PRNGKey(1), (2, 2, 2, 8))
    out = decode(variables, z)
    assert out.shape == (2, 32, 32, 3) and np.all(np.isfinite(out))
    shifted = {**variables, "batch_stats": jax.tree.map(lambda a: a + 0.5, variables["batch_stats"])}
    assert not np.allclose(decode(shifted, z), out)
