"""Orbax checkpoints of a whole learner state, kept as the latest N (never "best"), so
``--resume`` always finds the state it needs. Orbax writes each step to a temporary folder
and renames it when complete, so a crash mid-write never replaces a good checkpoint; a
newest checkpoint that still fails to restore is skipped with a warning.
"""

from __future__ import annotations

import logging
import os
import warnings

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp

logging.getLogger("absl").setLevel(logging.ERROR)


class CheckpointStore:
    def __init__(self, directory: str, max_to_keep: int = 3):
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def save(self, step: int, state) -> str:
        tree = jax.tree.map(np.asarray, flax.serialization.to_state_dict(state))
        self._manager.save(step, args=ocp.args.StandardSave(tree))
        self._manager.wait_until_finished()
        return os.path.join(self.directory, str(step))

    def restore(self, step: int, target):
        abstract = jax.tree.map(np.asarray, flax.serialization.to_state_dict(target))
        tree = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return flax.serialization.from_state_dict(target, jax.tree.map(np.asarray, tree))

    def restore_latest(self, target):
        """(step, state) from the newest checkpoint that restores; (None, None) if none does."""
        for step in reversed(self.steps()):
            try:
                return step, self.restore(step, target)
            except Exception as e:  # a truncated/corrupt checkpoint: fall back to an older one
                warnings.warn(f"checkpoint {step} in {self.directory} is unreadable ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200]}); falling back to the previous one")
        return None, None

    def close(self):
        self._manager.close()
