"""Atari through envpool's XLA handle: the in-program path against envpool's ordinary Python API."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("envpool")

from repthesis import envs  # noqa: E402
from repthesis.envs import atari  # noqa: E402

N = 4


def _python_api(pool: atari.Pool):
    """The same emulators' settings, driven through envpool's ordinary Python API."""
    py = pool._pool
    obs, info = py.reset()
    return py, obs, info


def test_xla_frames_match_the_python_api_rewards_env_ids_and_episode_ends():
    frames = 1500
    actions = np.random.default_rng(0).integers(0, 4, size=(frames, N)).astype(np.int32)
    xla_pool, py_pool = atari.Pool("Breakout", N, 11), atari.Pool("Breakout", N, 11)

    @jax.jit
    def run(actions):
        handle, (obs0, *_rest, info0) = xla_pool._recv(jnp.asarray(xla_pool._handle))  # recv once, then step

        def frame(handle, a):
            handle, (obs, reward, term, trunc, info) = xla_pool._step(handle, a)
            return handle, (reward, term, trunc, info["env_id"], obs.astype(jnp.int32).sum(axis=(1, 2, 3)))

        _, per_frame = jax.lax.scan(frame, handle, actions)
        return info0["env_id"], per_frame

    xla_pool.prepare()
    first_ids, (reward, term, trunc, env_id, checksum) = jax.device_get(run(jnp.asarray(actions)))
    py, _, info = _python_api(py_pool)
    np.testing.assert_array_equal(first_ids, info["env_id"])
    expected = [py.step(a) for a in actions]
    np.testing.assert_array_equal(reward, np.stack([e[1] for e in expected]))
    np.testing.assert_array_equal(term, np.stack([e[2] for e in expected]))
    np.testing.assert_array_equal(trunc, np.stack([e[3] for e in expected]))
    np.testing.assert_array_equal(env_id, np.stack([e[4]["env_id"] for e in expected]))
    np.testing.assert_array_equal(checksum, np.stack([e[0].astype(np.int64).sum(axis=(1, 2, 3)) for e in expected]))
    assert term.sum() >= 1 and reward.sum() > 0  # the comparison covered scoring and episode ends


def test_agent_steps_repeat_actions_2_to_4_frames_and_start_new_episodes_cleanly():
    """The frame-skip rule, replayed frame by frame through the Python API: k ~ U{2,3,4} frames
    with the same action; rewards after an episode end (within the step) are dropped; while an
    env shows its terminal frame, one more frame is played so the next observation is a reset one."""
    steps = 500
    keys = jax.vmap(lambda t: jax.random.split(jax.random.PRNGKey(t), N))(jnp.arange(steps))
    actions = np.random.default_rng(1).integers(0, 4, size=(steps, N)).astype(np.int32)
    pool, py_pool = atari.Pool("Breakout", N, 5), atari.Pool("Breakout", N, 5)

    @jax.jit
    def run(keys, actions):
        _, state = pool.reset(keys[0])

        def step(state, xs):
            step_keys, action = xs
            res = pool.step(step_keys, state, action)
            return res.state, (res.reward, res.terminated, res.truncated)

        return jax.lax.scan(step, state, (keys, jnp.asarray(actions)))[1]

    pool.prepare()
    reward, term, trunc = jax.device_get(run(keys, actions))
    py, _, _ = _python_api(py_pool)
    skips = [int(atari.Pool.frame_skip(keys[t])) for t in range(steps)]
    assert set(skips) == {2, 3, 4}
    exp_reward, exp_term, exp_trunc, ends_per_frame = np.zeros((steps, N)), np.zeros((steps, N), bool), \
        np.zeros((steps, N), bool), 0
    for t in range(steps):
        ended, shows_end, i = np.zeros(N, bool), np.zeros(N, bool), 0
        while i < skips[t] or shows_end.any():
            _, r, te, tr, _ = py.step(actions[t])
            alive = ~ended
            exp_reward[t] += np.where(alive, r, 0.0)
            exp_term[t] |= alive & te
            exp_trunc[t] |= alive & tr & ~te
            ended |= alive & (te | tr)
            shows_end = te | tr
            ends_per_frame += int((te | tr).sum())
            i += 1
    np.testing.assert_array_equal(reward, exp_reward)
    np.testing.assert_array_equal(term, exp_term)
    np.testing.assert_array_equal(trunc, exp_trunc)
    assert term.sum() >= 1 and term.sum() == ends_per_frame  # every episode end reported exactly once


def test_crop_halve_and_running_normalisation_by_hand():
    raw = np.zeros((1, 1, 210, 160), np.uint8)
    raw[0, 0, 33] = 255  # just above the playing region: cropped away
    raw[0, 0, 194] = 255  # just below it: cropped away
    raw[0, 0, 34, :2] = 255  # one 2×2 block half lit
    x = np.asarray(atari.preprocess_frame(jnp.asarray(raw)))
    assert x.shape == (1, 80, 80)
    assert x[0, 0, 0] == pytest.approx(0.5) and x.sum() == pytest.approx(0.5)

    state = atari.AtariState(jnp.zeros(8, jnp.uint8), jnp.zeros(2), jnp.zeros(2), jnp.zeros(2))
    frames = jnp.stack([jnp.full((80, 80), 0.25), jnp.linspace(0, 1, 6400).reshape(80, 80)])
    out, state = atari.normalise(frames, state, update=True)
    # One update: the debiased estimates are the frame's own mean and std.
    f = np.asarray(frames[1])
    np.testing.assert_allclose(out[1, ..., 0], (f - f.mean()) / f.std(), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(out[0], 0.0, atol=1e-3)  # blank frame: std floored, not 1e-8
    again, _ = atari.normalise(frames, state, update=True)
    np.testing.assert_allclose(again[1], out[1], rtol=1e-3, atol=1e-4)  # stationary frames: same normalisation


def test_make_knows_the_thesis_games_and_refuses_data_parallel():
    env = envs.make("atari:Seaquest")
    assert env.external and env.num_actions == 18 and env.obs_shape == (80, 80, 1)
    assert envs.make("atari:Breakout").num_actions == 4
    from repthesis import registry

    cfg = registry.make_config("a3c", {"env": "atari:Breakout", "num_envs": 4, "torso": "cnn_slim"})
    with pytest.raises(ValueError, match="cannot be split over devices; use --devices=1"):
        registry.get_algo("a3c").make_train(cfg, num_devices=2)
    with pytest.raises(ValueError, match="consecutive seeds"):
        env.pool_seed(np.array([3, 5]))
