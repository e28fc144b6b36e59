"""n-step returns and GAE-τ for one time-major trajectory (thesis Alg. 1–3).

Termination and truncation are separate inputs (STYLE.md pitfalls): a terminated step has
discount 0, so nothing is bootstrapped; a truncated step (time limit) bootstraps from the
value of its *final* observation, supplied in ``next_values``. Either way the recursion does
not flow across the episode boundary (``episode_ends``).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp


def nstep_returns_and_gae(
    rewards_t: jax.Array,
    values_t: jax.Array,
    next_values_t: jax.Array,
    discounts_t: jax.Array,
    episode_ends_t: jax.Array,
    gae_tau: float,
) -> tuple[jax.Array, jax.Array]:
    """Returns (R_t, Â_t), each [T].

    Args:
      rewards_t: r_t, [T].
      values_t: V(s_t), [T].
      next_values_t: V(s_{t+1}) where s_{t+1} is the next state *of the same episode*: the
        next step's value inside an episode, the final observation's value on truncation, the
        bootstrap value V_{t_max+1} at the last step (anything on termination: discounted to 0).
      discounts_t: γ·(1 − terminated_t), [T].
      episode_ends_t: terminated_t or truncated_t, [T] (bool or {0, 1}).
      gae_tau: τ, the GAE trace decay (Schulman et al., 2016); τ = 1 makes Â_t = R_t − V_t.

    Implements, backwards from t = T−1 (Alg. 1):
      R_t = r_t + γ_t · (next_values_t if the episode ends at t or t = T−1 else R_{t+1})
      δ_t = r_t + γ_t · next_values_t − V_t
      Â_t = δ_t + γ_t · τ · (1 − end_t) · Â_{t+1},  Â_T = 0.
    """
    chex.assert_rank([rewards_t, values_t, next_values_t, discounts_t, episode_ends_t], 1)
    chex.assert_equal_shape([rewards_t, values_t, next_values_t, discounts_t, episode_ends_t])
    continues_t = 1.0 - episode_ends_t.astype(rewards_t.dtype)
    deltas_t = rewards_t + discounts_t * next_values_t - values_t

    def backward(carry, xs):
        next_return, next_adv = carry
        reward, next_value, discount, cont, delta = xs
        ret = reward + discount * (cont * next_return + (1.0 - cont) * next_value)
        adv = delta + discount * gae_tau * cont * next_adv
        return (ret, adv), (ret, adv)

    init = (next_values_t[-1], jnp.zeros_like(next_values_t[-1]))
    _, (returns_t, advantages_t) = jax.lax.scan(
        backward, init, (rewards_t, next_values_t, discounts_t, continues_t, deltas_t), reverse=True
    )
    return returns_t, advantages_t
