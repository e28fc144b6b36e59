"""Tiny configs shared by the algorithm tests (Catch: 10×5 observations, 3 actions)."""

import jax
import numpy as np

TINY = dict(env="Catch-bsuite", num_envs=8, rollout_len=5, torso_size=32, core_size=16, fc_size=16,
            updates_per_chunk=4, checkpoint_every=1, val_episodes=2)
STEPS_PER_CHUNK = 8 * 5 * 4


def tiny_args(**extra) -> list[str]:
    cfg = {**TINY, **extra}
    return [f"--{k.replace('_', '-')}={v}" for k, v in cfg.items()]


def max_change(before, after):
    """Per leaf of two parameter trees of one structure, the largest absolute change (a float)."""
    return jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), before, after)
