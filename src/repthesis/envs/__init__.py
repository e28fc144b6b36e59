"""One ``make(name)`` for every environment the library trains on.

* gymnax games by their gymnax id (``Breakout-MinAtar``, ``Catch-bsuite``, …), pure JAX,
  stepped inside ``lax.scan``.
* Atari (``atari:Seaquest`` …) through envpool's XLA handle: not available yet; ``make``
  says so in one line instead of failing later.
"""

from __future__ import annotations

from repthesis.envs.gymnax_env import GymnaxEnv, gymnax_env_names


class EnvError(ValueError):
    """Unknown or unavailable environment; the message is one line naming the valid choices."""


def list_envs() -> list[str]:
    return list(gymnax_env_names())


def make(name: str) -> GymnaxEnv:
    if name in gymnax_env_names():
        return GymnaxEnv(name)
    if name.startswith("atari:"):
        raise EnvError(
            f"env {name!r}: Atari through envpool is not implemented in this version of repthesis; "
            f"use a gymnax env: {', '.join(list_envs())}"
        )
    raise EnvError(f"unknown env {name!r}; valid: {', '.join(list_envs())}")


__all__ = ["make", "list_envs", "EnvError", "GymnaxEnv"]
