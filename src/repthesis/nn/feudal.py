"""The Feudal Manager of thesis chapter 3 (§3.4.1–3.4.2, Fig. 3.3, Alg. 7).

z_m = LSTM(encoder(s), position), then
* Wide-then-Narrow (``narrow > 0``): a wide policy π^w(g_w | s) over the K waypoints of V_p and a
  narrow policy π^n(g_n | s, g_w) over the N×N cells around the chosen waypoint (an embedding of
  g_w joins z_m), and the value V_m(s);
* plain Feudal (``narrow == 0``): one policy over every maze cell as the goal, and V_m(s).
The ``encoder`` is the state feature extractor shared in form with π_g (``StateEncoder``), which
App. 3.B copies from π_g. The Worker π^ω(a | s, g_n, g_w) is ``GoalPolicy`` given both goals.
The LSTM carry only advances when the Manager emits a goal (Alg. 7's h_{m, t_m}); the caller
decides, so this module is one step of the core plus heads.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from repthesis.nn.core import ResetLSTM
from repthesis.nn.world_graph import StateEncoder


class Manager(nn.Module):
    side: int  # maze side
    num_goals: int  # K waypoints (Wide-then-Narrow) or side² cells (plain Feudal)
    narrow: int = 0  # N of the narrow window; 0: plain Feudal
    hidden: int = 128
    goal_embed: int = 32

    def setup(self):
        self.encoder = StateEncoder(self.hidden)
        self.core = ResetLSTM(self.hidden)
        self.goal_head = nn.Dense(self.num_goals)
        self.value_head = nn.Dense(1)
        if self.narrow:
            self.wide_embed = nn.Embed(self.num_goals, self.goal_embed)
            self.narrow_hidden = nn.Dense(self.hidden)
            self.narrow_head = nn.Dense(self.narrow * self.narrow)

    def __call__(self, carry, obs: jax.Array, pos: jax.Array, reset: jax.Array, wide: jax.Array):
        """(new carry, goal logits [.., num_goals], value [..], narrow logits [.., N²] for ``wide``)."""
        carry, h = self.step(carry, obs, pos, reset)
        logits, value = self.heads(h)
        narrow = self.narrow_logits(h, wide) if self.narrow else jnp.zeros(h.shape[:-1] + (0,))
        return carry, logits, value, narrow

    def step(self, carry, obs, pos, reset):
        x = jnp.concatenate([self.encoder(obs), pos.astype(jnp.float32) / self.side], -1)
        return self.core(carry, x, reset)

    def heads(self, h):
        return self.goal_head(h), self.value_head(h)[..., 0]

    def narrow_logits(self, h, wide):
        x = nn.relu(self.narrow_hidden(jnp.concatenate([h, self.wide_embed(wide)], -1)))
        return self.narrow_head(x)
