"""Pure RL estimators and losses over time-major trajectories."""

from repthesis.rl.returns import nstep_returns_and_gae

__all__ = ["nstep_returns_and_gae"]
