"""n-step returns and GAE against hand-computed values, with terminations and truncations."""

import jax.numpy as jnp
import numpy as np
import pytest

from repthesis.rl.returns import nstep_returns_and_gae

G = 0.9


def run(rewards, values, next_values, terminated, truncated, tau):
    terminated = np.asarray(terminated, bool)
    truncated = np.asarray(truncated, bool)
    r, a = nstep_returns_and_gae(
        jnp.asarray(rewards, jnp.float32), jnp.asarray(values, jnp.float32),
        jnp.asarray(next_values, jnp.float32), jnp.asarray(G * (1 - terminated), jnp.float32),
        jnp.asarray(terminated | truncated), tau,
    )
    return np.asarray(r), np.asarray(a)


def test_no_episode_end_bootstraps_from_last_value():
    rewards, values = [1.0, 0.0, 2.0], [0.5, 0.4, 0.3]
    bootstrap = 10.0
    next_values = [0.4, 0.3, bootstrap]
    r, a = run(rewards, values, next_values, [0, 0, 0], [0, 0, 0], tau=1.0)
    r2 = 2.0 + G * 10.0
    r1 = 0.0 + G * r2
    r0 = 1.0 + G * r1
    np.testing.assert_allclose(r, [r0, r1, r2], rtol=1e-6)
    np.testing.assert_allclose(a, np.array([r0, r1, r2]) - values, rtol=1e-5)  # τ = 1: Â = R − V


def test_termination_does_not_bootstrap_nor_cross_episodes():
    # episode A ends (terminated) at t=1; episode B runs t=2..3 and is bootstrapped.
    rewards, values = [1.0, 2.0, 3.0, 4.0], [0.1, 0.2, 0.3, 0.4]
    next_values = [0.2, 99.0, 0.4, 5.0]  # 99 must be ignored: terminal
    r, _ = run(rewards, values, next_values, [0, 1, 0, 0], [0, 0, 0, 0], tau=1.0)
    np.testing.assert_allclose(r, [1 + G * 2, 2.0, 3 + G * (4 + G * 5), 4 + G * 5], rtol=1e-6)


def test_truncation_bootstraps_from_final_observation_value():
    rewards, values = [1.0, 2.0, 3.0], [0.1, 0.2, 0.3]
    final_value = 7.0  # V(final obs of the truncated episode)
    next_values = [0.2, final_value, 4.0]
    r, _ = run(rewards, values, next_values, [0, 0, 0], [0, 1, 0], tau=1.0)
    np.testing.assert_allclose(r, [1 + G * (2 + G * 7), 2 + G * 7, 3 + G * 4], rtol=1e-6)


@pytest.mark.parametrize("tau", [0.0, 0.5, 0.92])
def test_gae_matches_hand_recursion_with_truncation_and_termination(tau):
    rewards = [0.5, -1.0, 2.0, 0.0, 1.0]
    values = [0.3, 0.1, -0.2, 0.4, 0.6]
    next_values = [0.1, 3.0, 0.4, 0.6, 1.5]  # t=1 truncated: 3.0 is V(final obs)
    term = [0, 0, 0, 1, 0]
    trunc = [0, 1, 0, 0, 0]
    _, a = run(rewards, values, next_values, term, trunc, tau)
    d = [rewards[t] + G * (1 - term[t]) * next_values[t] - values[t] for t in range(5)]
    a4 = d[4]
    a3 = d[3]  # terminated: nothing flows back in, discount 0
    a2 = d[2] + G * tau * a3
    a1 = d[1]  # truncated: episode boundary
    a0 = d[0] + G * tau * a1
    np.testing.assert_allclose(a, [a0, a1, a2, a3, a4], rtol=1e-5, atol=1e-6)


def test_tau_zero_is_one_step_td():
    rewards, values, next_values = [1.0, 2.0], [0.5, 0.25], [0.25, 3.0]
    _, a = run(rewards, values, next_values, [0, 0], [0, 0], tau=0.0)
    np.testing.assert_allclose(a, [1 + G * 0.25 - 0.5, 2 + G * 3 - 0.25], rtol=1e-6)


def test_shape_mismatch_is_rejected():
    with pytest.raises(AssertionError):
        nstep_returns_and_gae(jnp.zeros(3), jnp.zeros(4), jnp.zeros(3), jnp.zeros(3), jnp.zeros(3), 1.0)
