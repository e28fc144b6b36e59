"""Episode evaluation of recurrent actor-critic policies, with the thesis protocol's modes (§2.5.2).

* ``map``: stochastic units replaced by their means, NoisyNet weights by theirs, greedy action.
* ``random``: uniform random actions (the baseline a learning curve is compared with).
* ``vote-K``: K sampled activations give K policies; each picks its greedy action (or samples
  one, ``sample_actions``) and the majority wins (ties: lowest action index). ``vote-1`` is one sampled policy.
Each evaluation env plays one episode from its own seed; returns are unclipped.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

EVAL_BLOCK = 500  # steps per compiled evaluation block; episodes are checked for ends in between


def parse_mode(mode: str) -> int:
    """0 for 'map', K for 'vote-K', −1 for 'random'; raises ValueError naming the valid forms."""
    if mode == "map":
        return 0
    if mode == "random":
        return -1
    if mode.startswith("vote-") and mode[5:].isdigit() and int(mode[5:]) > 0:
        return int(mode[5:])
    raise ValueError(f"unknown evaluation mode {mode!r}; valid: map, vote-K (K >= 1, e.g. vote-1, vote-5, vote-50), random")


def make_episode_runner(env, policy, initial_carry, num_actions: int, mode: str, max_steps: int | None = None,
                        sample_actions: bool = False, record_obs: bool = False):
    """Returns ``run(params, seeds[N]) -> dict`` with per-episode returns and lengths,
    per-step value variance across the K sampled activations (Figs 2.4/2.5) and the entropy of
    the K actions' empirical distribution (Fig 2.6). ``sample_actions`` makes each sampled
    policy draw its action (Boltzmann exploration, as in training) instead of taking its argmax.
    ``record_obs`` also returns every observation ([T, N, ...]) for episode GIFs."""
    samples = parse_mode(mode)
    max_steps = max_steps or env.max_episode_steps
    block = min(max_steps, EVAL_BLOCK)

    def start(pool, seeds):
        n = seeds.shape[0]
        keys = jax.vmap(lambda s: jax.random.PRNGKey(s))(seeds)
        obs, env_state = pool.reset(jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys))
        carry = jax.tree.map(lambda c: jnp.broadcast_to(c, (n,) + c.shape), initial_carry)
        return (env_state, obs, carry, jnp.ones((n,), bool), jnp.zeros((n,), bool),
                jnp.zeros((n,), jnp.float32), jnp.zeros((n,), jnp.int32))

    def advance(pool, params, seeds, c, t0):
        """``block`` more steps from step ``t0``; steps at or past ``max_steps`` count for nothing."""
        n = seeds.shape[0]
        keys = jax.vmap(lambda s: jax.random.PRNGKey(s))(seeds)

        def step(c, t):
            env_state, obs, carry, reset, done, ret, length = c
            # Noise keys fixed per episode: the policy folds in t itself where noise is per step.
            step_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
            if samples == -1:  # uniform random policy: the reference a learning curve must beat
                new_carry = carry
                action = jax.vmap(lambda k: jax.random.randint(jax.random.fold_in(k, t), (), 0, num_actions))(
                    jax.vmap(lambda k: jax.random.fold_in(k, 4))(keys))
                value_var = action_entropy = jnp.zeros((n,), jnp.float32)
            elif samples == 0:
                new_carry, out = policy(params, carry, obs.astype(jnp.float32), reset, step_keys, t, True)
                action = jnp.argmax(out.logits, -1)
                value_var = jnp.zeros_like(out.value)
                action_entropy = jnp.zeros_like(out.value)
            else:
                sample_keys = jax.vmap(lambda k: jax.random.split(k, samples))(step_keys)  # [N, K, 2]
                outs = jax.vmap(
                    lambda k: policy(params, carry, obs.astype(jnp.float32), reset, k, t, False),
                    in_axes=1, out_axes=0,
                )(sample_keys)
                new_carry = jax.tree.map(lambda x: x[0], outs[0])
                if sample_actions:
                    action_keys = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(jax.random.fold_in(k, 3), t),
                                                                      samples))(keys)  # [N, K, 2]
                    choices = jax.vmap(jax.vmap(jax.random.categorical), in_axes=(1, 0))(action_keys, outs[1].logits)
                else:
                    choices = jnp.argmax(outs[1].logits, -1)  # [K, N]
                counts = jax.vmap(lambda a: jnp.bincount(a, length=num_actions), in_axes=1)(choices)  # [N, A]
                action = jnp.argmax(counts, -1)
                value_var = jnp.var(outs[1].value, axis=0, ddof=1) if samples > 1 else jnp.zeros(n)
                p = counts / samples
                action_entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(p), 0.0), -1)
            env_keys = jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, 2), t))(keys)
            res = pool.step(env_keys, env_state, action)
            alive = ~done & (t < max_steps)
            ret = ret + jnp.where(alive, res.reward, 0.0)
            length = length + alive
            ended = res.terminated | res.truncated
            new_done = done | ended
            per_step = (value_var, action_entropy, alive, obs if record_obs else jnp.zeros(()))
            return (res.state, res.obs, new_carry, ended, new_done, ret, length), per_step

        return jax.lax.scan(step, c, t0 + jnp.arange(block))

    programs = {}

    def compiled(num_envs, seeds):
        """gymnax: one program for any seeds. Emulators outside JAX (Atari): a new pool, hence a
        new compiled program, per call: emulators cannot be re-seeded, and a reused pool would
        play other episodes for the same seeds (runs compared on different games)."""
        if env.external:
            pool = env.open(num_envs, env.pool_seed(seeds))
            return pool, jax.jit(functools.partial(start, pool)), jax.jit(functools.partial(advance, pool))
        if num_envs not in programs:
            pool = env.open(num_envs)
            programs[num_envs] = (pool, jax.jit(functools.partial(start, pool)),
                                  jax.jit(functools.partial(advance, pool)))
        return programs[num_envs]

    def run(params, seeds):
        pool, start_fn, advance_fn = compiled(len(seeds), seeds)
        seeds = jnp.asarray(seeds)
        pool.prepare()
        c = start_fn(seeds)
        per_step = []
        for t0 in range(0, max_steps, block):  # stop early once every episode has ended
            c, out = advance_fn(params, seeds, c, jnp.int32(t0))
            per_step.append(out)
            if bool(jnp.all(c[4])):
                break
        value_var, entropy, alive, frames = (jnp.concatenate(x)[:max_steps] for x in zip(*per_step))
        pad = max_steps - alive.shape[0]  # steps not run: every episode had ended
        out = {"returns": c[5], "lengths": c[6], "finished": c[4],
               "value_var": jnp.pad(value_var, ((0, pad), (0, 0))),
               "action_entropy": jnp.pad(entropy, ((0, pad), (0, 0))),
               "alive": jnp.pad(alive, ((0, pad), (0, 0)))}
        if record_obs:
            out["obs"] = frames
        return out

    return run


def runner_for(trainer, mode: str, **kwargs):
    """``make_episode_runner`` for a trainer (anything with ``env``, ``policy`` and ``network``)."""
    return make_episode_runner(trainer.env, trainer.policy, trainer.network.initial_carry(),
                               trainer.env.num_actions, mode, **kwargs)
