"""Networks of world-graph discovery (thesis §3.3, App. 3.A–3.B).

``BinaryLatentVAE``: over a trajectory of T+1 states and T actions,
* inference q_φ(z | a, s): a BiLSTM over (state embedding, action one-hot; a "no action" token at
  the last state) → per-step HardKuma parameter a_t (b fixed to 1, as App. 3.A reports best);
* prior p_ψ(z_t | s_t): an MLP of the state's own learned vector → Beta(α_t, β_t); its mean
  α/(α+β) ranks states as waypoints;
* generation p_θ(a | s, z): a BiLSTM over pairs of consecutive masked states (z_t · embedding,
  z_t) → logits of every action a_t.
States are maze cells (row·S + col), given as a learned vector per cell plus the cell's
coordinates: the graph belongs to one maze.
Layer sizes are ours (the thesis defers them to its code release).

``GoalPolicy``: π_g(a | s, g) and its value, on the agent-centric observation and the goal's
offset from the agent; its ``encoder`` (the state feature extractor) is what §3.4.1 / App. 3.B
copies into the Manager and Worker. The Feudal Worker is the same module given two goals.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

EPS = 1e-3  # floor of the Kuma / Beta parameters


class StateEncoder(nn.Module):
    """Agent-centric observation → features: the layers shared with the HRL policies."""

    hidden: int = 128

    @nn.compact
    def __call__(self, obs: jax.Array) -> jax.Array:
        x = obs.reshape(obs.shape[:-3] + (-1,)).astype(jnp.float32)
        x = nn.relu(nn.Dense(self.hidden, name="dense_0")(x))
        return nn.relu(nn.Dense(self.hidden, name="dense_1")(x))


class GoalPolicy(nn.Module):
    num_actions: int
    side: int  # maze side, to scale goal offsets
    hidden: int = 128

    def setup(self):
        self.encoder = StateEncoder(self.hidden)
        self.goal_layer = nn.Dense(self.hidden)
        self.policy_head = nn.Dense(self.num_actions)
        self.value_head = nn.Dense(1)

    def __call__(self, obs: jax.Array, offset: jax.Array):
        """(logits, value) for observations [..., k, k, C] and goal − position offsets [..., 2]
        (or several goals' offsets side by side, [..., 2m]: the Feudal Worker's narrow and wide
        goals, §3.4.2)."""
        h = self.encoder(obs)
        g = offset.astype(jnp.float32) / self.side
        h = nn.relu(self.goal_layer(jnp.concatenate([h, g, jnp.sign(g)], -1)))
        return self.policy_head(h), self.value_head(h)[..., 0]


class BinaryLatentVAE(nn.Module):
    num_cells: int
    num_actions: int
    embed: int = 64
    hidden: int = 128

    side: int = 0  # maze side: cell ids → (row, col) features (0: the embedding table alone)

    def setup(self):
        self.table = nn.Embed(self.num_cells, self.embed)
        bilstm = lambda: nn.Bidirectional(nn.RNN(nn.OptimizedLSTMCell(self.hidden)),  # noqa: E731
                                          nn.RNN(nn.OptimizedLSTMCell(self.hidden)))
        self.inference_rnn = bilstm()
        self.inference_head = nn.Dense(1)
        self.prior_hidden = nn.Dense(self.hidden)
        self.prior_head = nn.Dense(2)
        self.generation_rnn = bilstm()
        self.generation_head = nn.Dense(self.num_actions)

    def state_embed(self, states: jax.Array) -> jax.Array:
        """A learned vector per cell, and the cell's centred coordinates (so that consecutive states
        show the move between them directly)."""
        h = self.table(states)
        if not self.side:
            return h
        scale = self.side / 8
        coords = jnp.stack([states // self.side, states % self.side], -1).astype(jnp.float32)
        return jnp.concatenate([h, (coords - self.side / 2) / scale], -1)

    def __call__(self, states, actions):
        a = self.posterior(states, actions)
        return self.decode(states, jnp.ones_like(a)), a, self.prior(states)

    def posterior(self, states: jax.Array, actions: jax.Array) -> jax.Array:
        """HardKuma a_t [B, T+1] from states [B, T+1] and actions [B, T]."""
        none = jnp.full(actions.shape[:-1] + (1,), self.num_actions)
        acts = jax.nn.one_hot(jnp.concatenate([actions, none], -1), self.num_actions + 1)
        h = self.inference_rnn(jnp.concatenate([self.state_embed(states), acts], -1))
        return jax.nn.softplus(self.inference_head(h)[..., 0]) + EPS

    def prior(self, states: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(α, β) of the Beta prior of each state (any shape of cell ids)."""
        # the cell's own vector only: coordinates would let the prior extrapolate smoothly across
        # the maze (measured: the top 20 % then lined one edge of the maze)
        out = self.prior_head(nn.relu(self.prior_hidden(self.table(states))))
        return jax.nn.softplus(out[..., 0]) + EPS, jax.nn.softplus(out[..., 1]) + EPS

    def decode(self, states: jax.Array, z: jax.Array) -> jax.Array:
        """Action logits [B, T, A] from states [B, T+1] masked by z [B, T+1]. Step t's input is the
        pair of masked states (s_t, s_{t+1}): a move between two selected neighbours is then read
        off directly (measured with z = 1 on random walks, Adam 1e-3: 80 % action accuracy after 300
        steps, against 53 % from single states through the BiLSTM)."""
        x = jnp.concatenate([z[..., None] * self.state_embed(states), z[..., None]], -1)
        pairs = jnp.concatenate([x[..., :-1, :], x[..., 1:, :]], -1)
        return self.generation_head(self.generation_rnn(pairs))
