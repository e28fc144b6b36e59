"""Orbax checkpoints of a whole learner state, kept as the latest N (never "best"), so
``--resume`` always finds the state it needs. Orbax writes each step to a temporary folder
and renames it when complete, so a crash mid-write never replaces a good checkpoint; a
newest checkpoint that still fails to restore is skipped with a warning.
"""

from __future__ import annotations

import logging
import os
import sys
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


def resume_run(store: CheckpointStore, state, restore, log, steps_per_chunk: int, num_chunks: int, unit: str):
    """(restored state, first chunk to run) for ``--resume``, with the metrics log cut back to the
    checkpoint; None (after a one-line error) when no checkpoint restores."""
    step, restored = store.restore_latest(state)
    if restored is None:
        print(f"repthesis.train: error: --resume: no readable checkpoint in {store.directory}", file=sys.stderr)
        return None
    state = restore(restored)
    start_chunk = int(state.step) // steps_per_chunk
    log.truncate_after(int(state.step))
    print(f"resumed from checkpoint at {unit} {step} ({start_chunk}/{num_chunks} chunks done)")
    return state, start_chunk


def report_non_finite(name: str, value: float, chunk: int, last_checkpoint, store: CheckpointStore) -> int:
    """The one-line stop message of a run whose loss went NaN/Inf; the exit code (1)."""
    print(f"repthesis.train: error: non-finite {name} at chunk {chunk + 1} ({value}); stopped. Last good checkpoint: "
          f"{last_checkpoint if last_checkpoint is not None else 'none'} in {store.directory}", file=sys.stderr)
    return 1
