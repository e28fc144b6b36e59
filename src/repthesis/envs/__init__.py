"""One ``make(name)`` for every environment the library trains on.

* gymnax games by their gymnax id (``Breakout-MinAtar``, ``Catch-bsuite``, …), pure JAX,
  stepped inside ``lax.scan``.
* chapter 3's grid-world mazes (``maze-small-multigoal`` …, agent-centric 7×7 view; ``…-full``:
  the whole maze; ``envs/maze.py``), pure JAX behind the same gymnax interface.
* Atari (``atari:Seaquest`` …, the seven thesis games) through envpool's XLA handle inside the
  same jitted program, with the thesis preprocessing (``envs/atari.py``); needs the ``atari`` extra.

Both give ``open(num_envs, seed) -> pool`` with batched, jittable ``pool.reset(keys)`` and
``pool.step(keys, state, actions)``; ``env.external`` says whether env state lives outside JAX.
"""

from __future__ import annotations

from repthesis.envs import atari, maze
from repthesis.envs.gymnax_env import GymnaxEnv, gymnax_env_names


class EnvError(ValueError):
    """Unknown or unavailable environment; the message is one line naming the valid choices."""


def list_envs() -> list[str]:
    return list(gymnax_env_names()) + list(maze.env_names()) + [f"atari:{g}" for g in atari.GAMES]


def make(name: str) -> GymnaxEnv | atari.AtariEnv:
    if name in gymnax_env_names():
        return GymnaxEnv(name)
    if name.startswith("maze-"):
        try:
            env = maze.make(name)
        except ValueError as e:
            raise EnvError(str(e)) from None
        return GymnaxEnv(name, env)
    if name.startswith("atari:"):
        game = name[len("atari:"):]
        if game not in atari.GAMES:
            raise EnvError(f"unknown Atari game {game!r}; valid: {', '.join(atari.GAMES)}")
        if not atari.envpool_available():
            raise EnvError(f"env {name!r} needs envpool: pip install -e '.[atari]'")
        return atari.AtariEnv(game)
    raise EnvError(f"unknown env {name!r}; valid: {', '.join(list_envs())}")


__all__ = ["make", "list_envs", "EnvError", "GymnaxEnv"]
