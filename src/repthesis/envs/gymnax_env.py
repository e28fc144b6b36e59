"""gymnax environments behind a small functional interface used by every algorithm."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

# Discrete-action gymnax envs whose observations the MLP torso can take.
_DISCRETE = (
    "CartPole-v1", "Acrobot-v1", "MountainCar-v0",
    "Asterix-MinAtar", "Breakout-MinAtar", "Freeway-MinAtar", "Seaquest-MinAtar", "SpaceInvaders-MinAtar",
    "Catch-bsuite", "DeepSea-bsuite", "MemoryChain-bsuite", "UmbrellaChain-bsuite", "DiscountingChain-bsuite",
    "FourRooms-misc", "MetaMaze-misc", "Pong-misc",
)


@functools.cache
def gymnax_env_names() -> tuple[str, ...]:
    import gymnax

    return tuple(n for n in _DISCRETE if n in gymnax.registered_envs)


class StepResult(NamedTuple):
    obs: jax.Array  # next observation (the reset observation when the episode ended)
    state: Any
    reward: jax.Array
    terminated: jax.Array  # episode ended by the MDP: no bootstrap
    truncated: jax.Array  # episode ended by a time limit: bootstrap from final_obs
    final_obs: jax.Array  # the real last observation of an ended episode


class GymnaxEnv:
    """Unbatched gymnax env with auto-reset; ``open`` gives the batched form programs use."""

    external = False  # all state is JAX arrays: checkpointable, shardable, vmappable

    def __init__(self, name: str, env=None):
        """A gymnax id, or any gymnax ``Environment`` (``env``, e.g. a chapter-3 maze) named ``name``."""
        if env is None:
            import gymnax

            self._env, self.params = gymnax.make(name)
        else:
            self._env, self.params = env, env.default_params
        self.name = name
        self.num_actions = int(self._env.action_space(self.params).n)
        obs, _ = self._env.reset(jax.random.PRNGKey(0), self.params)
        self.obs_shape = tuple(obs.shape)
        self.max_episode_steps = int(getattr(self.params, "max_steps_in_episode", 1000))

    def reset(self, key: jax.Array):
        return self._env.reset(key, self.params)

    def step(self, key: jax.Array, state, action: jax.Array) -> StepResult:
        obs, state, reward, terminated, truncated, info = self._env.step(key, state, action, self.params)
        return StepResult(
            obs.astype(jnp.float32),
            state,
            reward.astype(jnp.float32),
            jnp.asarray(terminated, bool),
            jnp.logical_and(jnp.asarray(truncated, bool), jnp.logical_not(terminated)),
            info["final_observation"].astype(jnp.float32),
        )

    def open(self, num_envs: int, seed: int = 0) -> "GymnaxPool":
        del seed  # episodes are seeded by the keys passed to ``reset``
        return GymnaxPool(self, num_envs)


class GymnaxPool:
    """``reset``/``step`` over a batch of envs, each with its own key (the batched env interface)."""

    external = False

    def __init__(self, env: GymnaxEnv, num_envs: int):
        self.env, self.num_envs = env, num_envs

    def prepare(self) -> None:
        """Nothing to do: gymnax state lives in the program."""

    def reset(self, keys: jax.Array, previous=None):
        del previous
        obs, state = jax.vmap(self.env.reset)(keys)
        return obs.astype(jnp.float32), state

    def step(self, keys: jax.Array, state, action: jax.Array) -> StepResult:
        return jax.vmap(self.env.step)(keys, state, action)
