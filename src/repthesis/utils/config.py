"""Checks and derived sizes shared by the algorithms' frozen config dataclasses (STYLE.md §4).

``check_fields`` gives every config the same one-line errors for out-of-range fields, raised in
``__post_init__`` before anything is built or compiled. ``RolloutBudget`` derives the chunk
arithmetic of the RL configs (``num_envs`` × ``rollout_len`` agent steps per update) once.
"""

from __future__ import annotations

import json
import math
import os
from typing import Iterable, Mapping


def check_fields(cfg, *, choices: Mapping[str, Iterable] | None = None, positive: Iterable[str] = (),
                 non_negative: Iterable[str] = (), unit_interval: Iterable[str] = ()) -> None:
    """Raise ``ValueError`` naming the first field that is not one of its ``choices``, not > 0
    (``positive``), not >= 0 (``non_negative``) or outside [0, 1] (``unit_interval``)."""
    for name, valid in (choices or {}).items():
        valid = tuple(valid)
        if getattr(cfg, name) not in valid:
            raise ValueError(f"{name}={getattr(cfg, name)!r} is not valid; valid: {', '.join(map(str, valid))}")
    for name in positive:
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{name}={getattr(cfg, name)!r} must be > 0")
    for name in non_negative:
        if not getattr(cfg, name) >= 0:
            raise ValueError(f"{name}={getattr(cfg, name)!r} must be >= 0")
    for name in unit_interval:
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"{name}={getattr(cfg, name)!r} must lie in [0, 1]")


class RolloutBudget:
    """Derived sizes of an RL config with ``total_env_steps``, ``num_envs``, ``rollout_len`` and
    ``updates_per_chunk`` fields (a mixin: properties only, nothing stored)."""

    @property
    def steps_per_update(self) -> int:  # agent steps of one update, over all envs
        return self.num_envs * self.rollout_len

    @property
    def num_chunks(self) -> int:  # total_env_steps rounded up to whole chunks
        return max(1, math.ceil(self.total_env_steps / (self.steps_per_update * self.updates_per_chunk)))

    @property
    def steps_per_chunk(self) -> int:  # the CLI's progress unit
        return self.steps_per_update * self.updates_per_chunk


def read_run(run_dir: str, flag: str, algos: Iterable[str]) -> dict:
    """The saved ``config.json`` of a training run given as ``flag=run_dir`` (e.g. ``--graph``),
    whose ``--algo`` must be one of ``algos``; one-line ``ValueError`` otherwise."""
    algos = tuple(algos)
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"{flag}={run_dir!r} holds no run (no config.json)")
    with open(path) as f:
        saved = json.load(f)
    if saved.get("algo") not in algos:
        raise ValueError(f"{flag}={run_dir!r} is a --algo={saved.get('algo')} run; valid: {', '.join(algos)}")
    return saved
