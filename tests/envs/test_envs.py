"""Environment layer: one make(), auto-reset with the final observation, truncation vs termination."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from repthesis import envs


def test_make_lists_and_rejects():
    assert "Breakout-MinAtar" in envs.list_envs() and "Catch-bsuite" in envs.list_envs()
    with pytest.raises(envs.EnvError, match="valid: CartPole-v1"):
        envs.make("Pong-v5")
    assert "atari:Seaquest" in envs.list_envs()
    with pytest.raises(envs.EnvError, match="unknown Atari game 'Pong'; valid: Seaquest"):
        envs.make("atari:Pong")


def test_catch_terminates_and_auto_resets_with_final_observation():
    env = envs.make("Catch-bsuite")
    obs, state = env.reset(jax.random.PRNGKey(0))
    assert obs.shape == env.obs_shape == (10, 5)
    step = jax.jit(env.step)
    for t in range(20):
        res = step(jax.random.PRNGKey(t + 1), state, jnp.int32(1))
        if bool(res.terminated):
            break
        np.testing.assert_array_equal(res.obs, res.final_obs)  # mid-episode: the same observation
        state = res.state
    else:
        pytest.fail("Catch never terminated")
    assert t == 8 and not bool(res.truncated) and float(res.reward) in (-1.0, 1.0)
    assert not np.array_equal(res.obs, res.final_obs)  # next obs is the reset one; final is the last


def test_time_limit_is_truncation_not_termination():
    env = envs.make("Breakout-MinAtar")
    env.params = env.params.replace(max_steps_in_episode=3)
    obs, state = env.reset(jax.random.PRNGKey(0))
    flags = []
    for t in range(3):
        res = env.step(jax.random.PRNGKey(t), state, jnp.int32(0))
        flags.append((bool(res.terminated), bool(res.truncated)))
        state = res.state
    assert flags == [(False, False), (False, False), (False, True)]
    assert not np.array_equal(res.obs, res.final_obs)
