"""The binary-latent VAE's networks (§3.3.1): what each one may see, and that the generation
network reads the move between two selected neighbours quickly enough to learn in phase 1."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from repthesis.envs import maze
from repthesis.nn.world_graph import BinaryLatentVAE
from repthesis.rl import world_graph as wg

ENV = maze.Maze("small", "multigoal")


def walks(rng, n=64, t=25):
    starts = np.argwhere(~ENV.walls)[rng.integers(0, int((~ENV.walls).sum()), n)]
    cells, actions = wg.random_walks(ENV.walls, starts, t, rng)
    return jnp.asarray(cells[..., 0] * ENV.side + cells[..., 1]), jnp.asarray(actions)


def test_masked_states_are_invisible_to_generation_and_the_prior_is_per_state():
    vae = BinaryLatentVAE(ENV.side ** 2, 4, side=ENV.side)
    states, actions = walks(np.random.default_rng(0), n=2)
    params = vae.init(jax.random.PRNGKey(0), states, actions)
    z = jnp.ones(states.shape).at[:, 10].set(0.0)
    other = states.at[:, 10].set(states[:, 3])
    np.testing.assert_array_equal(vae.apply(params, states, z, method=vae.decode),
                                  vae.apply(params, other, z, method=vae.decode))
    assert not np.allclose(vae.apply(params, states, jnp.ones(states.shape), method=vae.decode),
                           vae.apply(params, other, jnp.ones(states.shape), method=vae.decode))
    # the prior of a cell is the same in any trajectory, whatever its neighbours
    alpha, _ = vae.apply(params, states, method=vae.prior)
    alpha_alone, _ = vae.apply(params, states[:, 5], method=vae.prior)
    np.testing.assert_allclose(alpha[:, 5], alpha_alone, rtol=1e-6)


def test_generation_learns_random_walk_actions_from_every_state():
    """z = 1 everywhere: an action is the move between consecutive states except into a wall, so a
    decoder that reads both states should beat 70 % accuracy within 150 Adam steps (chance: 25 %)."""
    rng = np.random.default_rng(0)
    vae = BinaryLatentVAE(ENV.side ** 2, 4, side=ENV.side)
    states, actions = walks(rng)
    params = vae.init(jax.random.PRNGKey(0), states, actions)
    opt = optax.adam(1e-3)
    opt_state = opt.init(params)

    def loss(p, s, a):
        logits = vae.apply(p, s, jnp.ones(s.shape), method=vae.decode)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), a[..., None], -1)), logits

    @jax.jit
    def step(p, o, s, a):
        g = jax.grad(lambda p: loss(p, s, a)[0])(p)
        u, o = opt.update(g, o, p)
        return optax.apply_updates(p, u), o

    for _ in range(150):
        params, opt_state = step(params, opt_state, *walks(rng))
    states, actions = walks(rng, n=256)
    accuracy = float(jnp.mean(jnp.argmax(loss(params, states, actions)[1], -1) == actions))
    assert accuracy > 0.7, accuracy
