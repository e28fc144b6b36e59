"""Flax linen building blocks. Modules here never compute losses (STYLE.md §2)."""

from repthesis.nn.actor_critic import ActorCritic, ActorCriticOutput
from repthesis.nn.core import ResetLSTM
from repthesis.nn.stochastic import (
    NoisyDense,
    gaussian_kl,
    crelu,
)
from repthesis.nn.torso import make_torso

__all__ = [
    "ActorCritic",
    "ActorCriticOutput",
    "ResetLSTM",
    "NoisyDense",
    "gaussian_kl",
    "crelu",
    "make_torso",
]
