"""Atari 2600 through envpool's XLA handle, stepped inside the same jitted program as the agent.

Thesis §2.5 preprocessing, on top of ALE as OpenAI Gym's ``<Game>-v0`` exposes it (sticky actions
with probability 0.25, no no-op starts, no life-loss episodes):

* stochastic frame skip: each action is repeated for k ~ U{2, 3, 4} frames, summing the rewards.
  envpool steps all emulators of a pool together, so k is drawn once per agent step for the
  whole batch (Gym draws it per env); envs keep their own seeds, sticky actions and episodes;
* the playing region, rows 34–193 of the 210×160 grey frame, halved to 80×80 by 2×2 averaging;
* normalised by a running mean and standard deviation of the frames (α = 0.9999, debiased),
  one estimate per env, kept in the env state (as universe-starter-agent / pytorch-a3c do).

Episode ends: envpool resets an env on the step *after* it ended. A frame on which an env ends
is therefore followed, within the same agent step, by its reset frame, so the agent's next
observation is always the first frame of the new episode; when an env ends on the last skipped
frame, one extra frame (the same action for the other envs) is played. Rewards after an end
within an agent step are not counted. Truncation (the frame limit) and termination are kept
apart. The emulators live outside JAX: a checkpoint cannot hold them, so a resumed run starts
new episodes (``Pool.reset`` with the saved normaliser); they also cannot be split over devices.

envpool's XLA calls are bound to one envpool object when traced: a ``Pool`` is one such object
with a fixed number of envs and seeds ``seed, seed+1, …``; programs using it compile once.
"""

from __future__ import annotations

import os
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np

from repthesis.envs.gymnax_env import StepResult

GAMES = ("Seaquest", "BeamRider", "MsPacman", "Boxing", "Breakout", "Qbert", "Freeway")
FRAME_LIMIT = 30_000  # emulator frames per episode (Gym v0: 10K agent steps × ~3 frames), then truncated
CROP_ROWS = (34, 194)  # playing region of the 210×160 frame
NORM_ALPHA = 0.9999  # running mean/std decay
MIN_STD = 1e-3  # floor of the estimated std (frames lie in [0, 1])
SKIP_RANGE = (2, 4)  # frames per action, inclusive
STICKY_ACTION_PROB = 0.25  # Gym v0


def envpool_available() -> bool:
    try:
        import envpool  # noqa: F401
    except ImportError:
        return False
    return True


@flax.struct.dataclass
class AtariState:
    handle: jax.Array  # envpool's XLA handle: orders the calls; the emulators live outside JAX
    norm_mean: jax.Array  # [N] running mean of frames (not yet debiased)
    norm_std: jax.Array  # [N] running std of frames (not yet debiased)
    norm_count: jax.Array  # [N] frames seen by the normaliser


def preprocess_frame(raw: jax.Array) -> jax.Array:
    """[N, 1, 210, 160] uint8 grey frames -> [N, 80, 80] floats in [0, 1]: crop, then 2×2 mean."""
    x = raw[:, 0, CROP_ROWS[0]:CROP_ROWS[1], :].astype(jnp.float32) / 255.0
    n = x.shape[0]
    return x.reshape(n, 80, 2, 80, 2).mean(axis=(2, 4))


def normalise(frames: jax.Array, state: AtariState, update: bool) -> tuple[jax.Array, AtariState]:
    """Subtract the estimated mean and divide by the estimated std (debiased EMAs, α = NORM_ALPHA)."""
    if update:
        a = NORM_ALPHA
        state = state.replace(
            norm_mean=state.norm_mean * a + frames.mean(axis=(1, 2)) * (1 - a),
            norm_std=state.norm_std * a + frames.std(axis=(1, 2)) * (1 - a),
            norm_count=state.norm_count + 1,
        )
    debias = -jnp.expm1(jnp.maximum(state.norm_count, 1.0) * np.log(NORM_ALPHA))  # 1 − αⁿ without cancellation
    mean, std = state.norm_mean / debias, state.norm_std / debias
    # A floor on the std: a blank first frame must not divide rounding error by 1e-8.
    out = (frames - mean[:, None, None]) / jnp.maximum(std[:, None, None], MIN_STD)
    return out[..., None], state  # [N, 80, 80, 1]: NHWC for the CNN torso


class Pool:
    """``num_envs`` emulators of one game with seeds ``seed + i``; batched, jittable reset/step.

    Call ``prepare()`` (outside jit) before each program that starts with ``reset``: it issues
    envpool's ``async_reset``, whose results ``reset`` receives inside the program. Stepping
    straight after ``async_reset`` without that receive corrupts the emulators."""

    external = True

    def __init__(self, game: str, num_envs: int, seed: int):
        import envpool

        self.num_envs = num_envs
        self._pool = envpool.make(
            f"{game}-v5", env_type="gymnasium", num_envs=num_envs, batch_size=num_envs, seed=int(seed),
            frame_skip=1, img_height=210, img_width=160, gray_scale=True, stack_num=1, noop_max=1,
            use_fire_reset=False, episodic_life=False, reward_clip=False, repeat_action_probability=STICKY_ACTION_PROB,
            max_episode_steps=FRAME_LIMIT, num_threads=min(num_envs, os.cpu_count() or 1),
        )
        self._handle, self._recv, _, self._step = self._pool.xla()

    def prepare(self) -> None:
        self._pool.async_reset()

    def reset(self, keys: jax.Array, previous: AtariState | None = None) -> tuple[jax.Array, AtariState]:
        """Receive the first frames after ``prepare()``. ``previous`` keeps a resumed run's normaliser."""
        del keys  # envpool seeds the emulators itself
        n = self.num_envs
        handle, (raw, *_) = self._recv(jnp.asarray(self._handle))
        if previous is None:
            state = AtariState(handle, jnp.zeros(n), jnp.zeros(n), jnp.zeros(n))
        else:
            state = previous.replace(handle=handle)
        obs, state = normalise(preprocess_frame(raw), state, update=True)
        return obs, state

    def _frame(self, handle, action):
        handle, (raw, reward, terminated, truncated, _info) = self._step(handle, action)
        return handle, raw, reward.astype(jnp.float32), terminated.astype(bool), truncated.astype(bool)

    @staticmethod
    def frame_skip(keys: jax.Array) -> jax.Array:
        """Frames this agent step repeats its action for: k ~ U{2, 3, 4}, one k for the batch."""
        return jax.random.randint(keys[0], (), SKIP_RANGE[0], SKIP_RANGE[1] + 1)

    def step(self, keys: jax.Array, state: AtariState, action: jax.Array) -> StepResult:
        n = self.num_envs
        skip = self.frame_skip(keys)
        action = action.astype(jnp.int32)
        raw0 = jnp.zeros((n, 1, 210, 160), jnp.uint8)
        no = jnp.zeros((n,), bool)

        def cond(c):
            i, _, _, _, _, _, _, _, pending = c
            return (i < skip) | jnp.any(pending)

        def body(c):
            i, handle, raw, final_raw, reward, terminated, truncated, ended, _ = c
            handle, raw, r, term, trunc = self._frame(handle, action)
            alive = ~ended  # not yet ended within this agent step
            end_now = alive & (term | trunc)
            reward = reward + jnp.where(alive, r, 0.0)
            final_raw = jnp.where(end_now[:, None, None, None], raw, final_raw)
            terminated, truncated = terminated | (end_now & term), truncated | (end_now & trunc & ~term)
            # An env whose latest frame ended an episode still shows that frame: play one more.
            pending = term | trunc
            return i + 1, handle, raw, final_raw, reward, terminated, truncated, ended | end_now, pending

        init = (jnp.zeros((), jnp.int32), state.handle, raw0, raw0, jnp.zeros((n,)), no, no, no, no)
        _, handle, raw, final_raw, reward, terminated, truncated, ended, _ = jax.lax.while_loop(cond, body, init)
        state = state.replace(handle=handle)
        obs, state = normalise(preprocess_frame(raw), state, update=True)
        final_obs, _ = normalise(preprocess_frame(final_raw), state, update=False)
        final_obs = jnp.where(ended[:, None, None, None], final_obs, obs)
        return StepResult(obs, state, reward, terminated, truncated, final_obs)


class AtariEnv:
    """One thesis game; ``open(num_envs, seed)`` makes the emulator pool a program steps."""

    external = True  # emulator state lives outside JAX (see module docstring)
    max_episode_steps = FRAME_LIMIT // SKIP_RANGE[0] + 1  # agent steps after which any episode has ended
    obs_shape = (80, 80, 1)

    def __init__(self, game: str):
        import envpool

        self.name = f"atari:{game}"
        self.game = game
        spec = envpool.make_spec(f"{game}-v5")
        self.num_actions = int(spec.action_space.n)

    def open(self, num_envs: int, seed: int) -> Pool:
        return Pool(self.game, num_envs, seed)

    @staticmethod
    def pool_seed(seeds: Any) -> int:
        """envpool seeds env i with ``seed + i``: one pool plays ``seeds`` only if they are consecutive."""
        seeds = np.asarray(seeds)
        if seeds.ndim != 1 or len(seeds) == 0 or np.any(np.diff(seeds.astype(np.int64)) != 1):
            raise ValueError(f"Atari episodes need consecutive seeds (envpool seeds env i with seed + i), got {seeds}")
        return int(seeds[0])
