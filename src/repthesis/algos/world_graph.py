"""Phase 1 of thesis chapter 3: task-agnostic world-graph discovery (Alg. 6, §3.3, App. 3.A/3.C.1).

One jitted iteration, for ``batch_size`` agents at once (App. 3.C.1: 128):

1. each agent starts on a waypoint drawn from V_p (teleported there: the mazes are deterministic,
   so this is what the thesis's action replay achieves) and random-walks T steps: τʳ; its last
   state is the goal g;
2. from the same start, π_g acts T steps towards g: τ^π, rewarded 1[s_{t+1} = g] (the episode ends
   there) minus λ_c·p_θ(a_t | s, z), the VAE's probability of the action it took (the curiosity
   bonus of Alg. 6: actions the VAE already reconstructs well pay less);
3. an A2C update of π_g on τ^π; an update of the binary-latent VAE on τʳ and τ^π with
   recon + λ1·KL + λ2·L0 + λ3·LT (Eq. 3.12) and a gradient-ascent step of the λ's;
4. V_p ← the start plus the top ``waypoint_fraction`` of open cells by prior mean α/(α+β)
   (from iteration ``waypoint_warmup`` on; before it, V_p = {start} as Alg. 6 initialises it).

After training, ``build_graph`` forms the edges (§3.3.3) from random walks out of every waypoint
and from π_g's rollouts between waypoints.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from repthesis.algos.vaegan import adam_parts
from repthesis.envs import maze
from repthesis.gen import hardkuma as hk
from repthesis.nn.world_graph import BinaryLatentVAE, GoalPolicy
from repthesis.rl import parallel, world_graph as wg
from repthesis.rl.returns import nstep_returns_and_gae
from repthesis.utils.config import check_fields, read_run


@dataclasses.dataclass(frozen=True)
class WorldGraphConfig:
    maze: str = "small"  # small | medium | large
    view: str = "ego"  # π_g's observation: ego (7×7 window around the agent) | full (the whole maze)
    batch_size: int = 128  # agents exploring per iteration (App. 3.C.1)
    rollout_len: int = 25  # T, the BiLSTM's sequence length (App. 3.C.1)
    kl_terms: int = 5  # terms of Eq. 3.5's series (App. 3.A: 5); 0: the whole series (exact, as b = 1 here)
    l0_target: float = 5.0  # μ0: selected states out of T (5 for T = 25); LT's target is 2μ0
    learning_rate: float = 1e-4  # Adam of the VAE (ε 1e-3), App. 3.C.1
    max_grad_norm: float = 40.0
    lagrange_lr: float = 5e-4  # gradient ascent of λ1..3, initialised to 0.01, 0.06, 0.02
    waypoint_fraction: float = 0.2  # |V_p| / open cells
    waypoint_warmup: int = 50  # iterations with V_p = {start}
    policy_learning_rate: float = 5e-4  # π_g's Adam (A2C)
    curiosity_weight: float = 0.1  # λ_c of Alg. 6 (the thesis gives no value)
    gamma: float = 0.95
    entropy_weight: float = 0.01
    value_weight: float = 0.5
    total_iterations: int = 3600  # App. 3.C.1 (converges around 2400)
    iterations_per_chunk: int = 100
    checkpoint_every: int = 4  # chunks
    edge_walks: int = 64  # random walks from each waypoint for the edges

    def __post_init__(self):
        check_fields(self, choices={"maze": maze.SIZES, "view": maze.VIEWS}, unit_interval=("gamma",),
                     non_negative=("kl_terms",),
                     positive=("batch_size", "rollout_len", "learning_rate", "total_iterations",
                               "iterations_per_chunk", "checkpoint_every", "policy_learning_rate", "edge_walks"))
        if self.rollout_len < 3:
            raise ValueError(f"rollout_len={self.rollout_len} must be >= 3")
        if not 0 < self.l0_target < self.rollout_len - 1:
            raise ValueError(f"l0_target={self.l0_target} must be in (0, rollout_len − 1 = {self.rollout_len - 1})")
        if not 0 < self.waypoint_fraction <= 1:
            raise ValueError(f"waypoint_fraction={self.waypoint_fraction} must be in (0, 1]")

    @property
    def num_chunks(self) -> int:
        return max(1, math.ceil(self.total_iterations / self.iterations_per_chunk))

    @property
    def steps_per_chunk(self) -> int:  # iterations; the CLI's step unit for this algorithm
        return self.iterations_per_chunk


@flax.struct.dataclass
class GraphState:
    params: Any  # {"vae": ..., "policy": π_g}
    opt_state: Any
    multipliers: Any  # {"kl": λ1, "l0": λ2, "transitions": λ3}
    waypoints: jax.Array  # [K + 1, 2] cells: the start, then the top-K cells by prior mean
    num_waypoints: jax.Array  # int32: how many rows of ``waypoints`` are V_p (1 before the warm-up ends)
    rng: jax.Array
    step: jax.Array


class Trainer(NamedTuple):
    cfg: WorldGraphConfig
    env: maze.Maze
    vae: BinaryLatentVAE
    policy: GoalPolicy
    init: Any
    run_chunk: Any
    place: Any
    restore: Any
    losses: Any  # (params, multipliers, batch, key) -> (loss, (terms, metrics)); for tests
    prior_mean: Any  # params -> [S, S] prior mean α/(α+β) (NaN on walls)
    goal_success: Any  # (policy params, key, n, walk_len) -> fraction of random-walk goals reached in T steps
    build_graph: Any  # (state, rng) -> WorldGraph
    headline: str = "recon"


def make_train(cfg: WorldGraphConfig, num_devices: int = 1) -> Trainer:
    if num_devices != 1:
        raise ValueError(f"--devices={num_devices}: world-graph discovery runs on one device; valid: 1")
    env = maze.Maze(cfg.maze, "multigoal", view=cfg.view)
    walls = env.walls
    side, t_len, n = env.side, cfg.rollout_len, cfg.batch_size
    open_cells = np.argwhere(~walls).astype(np.int32)
    k_top = max(1, int(round(cfg.waypoint_fraction * len(open_cells))))
    vae = BinaryLatentVAE(side * side, 4, side=side)
    policy = GoalPolicy(4, side)
    vae_opt = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.learning_rate, eps=1e-3))
    pol_opt = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.policy_learning_rate))
    blank = env.reset_state(jax.random.PRNGKey(0)).replace(balls=jnp.full((env.n_balls, 2), maze.GONE, jnp.int32))
    walls_j = jnp.asarray(walls)

    obs_shape = env.observation_space().shape  # [7, 7, 7] (ego) or [side, side, 7] (full)

    def observe(pos):  # π_g's view of an empty maze (no task objects): [..., *obs_shape]
        return jax.vmap(lambda p: env.get_obs(blank.replace(pos=p)))(pos.reshape(-1, 2)).reshape(pos.shape[:-1] + obs_shape)

    def move(pos, action):
        target = pos + jnp.asarray(maze.MOVES)[action]
        return jnp.where(walls_j[target[..., 0], target[..., 1]][..., None], pos, target)

    def cell_id(pos):
        return pos[..., 0] * side + pos[..., 1]

    def init(rng) -> GraphState:
        k_vae, k_pol, k_run = jax.random.split(rng, 3)
        states = jnp.zeros((1, t_len + 1), jnp.int32)
        params = {"vae": vae.init(k_vae, states, jnp.zeros((1, t_len), jnp.int32)),
                  "policy": policy.init(k_pol, jnp.zeros((1, *obs_shape)), jnp.zeros((1, 2)))}
        opt_state = {"vae": vae_opt.init(params["vae"]), "policy": pol_opt.init(params["policy"])}
        waypoints = jnp.tile(jnp.asarray(env.start)[None], (k_top + 1, 1))
        return GraphState(params, opt_state, {k: jnp.float32(v) for k, v in hk.LAGRANGE_INIT.items()}, waypoints,
                          jnp.int32(1), k_run, jnp.zeros((), jnp.int32))

    def random_walk(key, starts):
        actions = jax.random.randint(key, (starts.shape[0], t_len), 0, 4)

        def step(pos, a):
            nxt = move(pos, a)
            return nxt, nxt

        _, cells = jax.lax.scan(step, starts, actions.T)
        return jnp.concatenate([starts[:, None], cells.transpose(1, 0, 2)], 1), actions  # [N, T+1, 2], [N, T]

    def policy_rollout(params, key, starts, goals):
        """π_g from ``starts`` towards ``goals`` for T steps: cells [N, T+1, 2], actions, log-probs, values,
        and whether each step reached the goal."""
        def step(pos, k):
            logits, value = policy.apply(params, observe(pos), goals - pos)
            a = jax.random.categorical(k, logits)
            nxt = move(pos, a)
            return nxt, (nxt, a, value, jnp.all(nxt == goals, -1))

        last, (cells, actions, values, reached) = jax.lax.scan(step, starts, jax.random.split(key, t_len))
        _, last_value = policy.apply(params, observe(last), goals - last)
        cells = jnp.concatenate([starts[:, None], cells.transpose(1, 0, 2)], 1)
        return cells, actions.T, values.T, reached.T, last_value

    def vae_terms(params_vae, multipliers, states, actions, key):
        a = vae.apply(params_vae, states, actions, method=vae.posterior)
        alpha, beta = vae.apply(params_vae, states, method=vae.prior)
        ones = jnp.ones_like(a)
        z = hk.hardkuma_sample(key, a, ones)
        z = z.at[:, 0].set(1.0).at[:, -1].set(1.0)  # z_0 = z_T = 1 (§3.3.1)
        logits = vae.apply(params_vae, states, z, method=vae.decode)
        log_p = jnp.take_along_axis(jax.nn.log_softmax(logits), actions[..., None], -1)[..., 0]  # [B, T]
        inner = slice(1, -1)  # z_1 .. z_{T-1}: the free latents
        steps = t_len - 1
        kl = hk.kl_kuma1_beta(a[:, inner], alpha[:, inner], beta[:, inner], cfg.kl_terms)
        p0 = hk.prob_zero(a[:, inner], ones[:, inner])
        seq_kl = jnp.sum(kl, 1)
        l0, lt = hk.l0_loss(p0, cfg.l0_target), hk.transition_loss(p0, 2 * cfg.l0_target)  # Eqs. 3.8, 3.10
        # The model's loss is Eq. 3.12 per trajectory (recon and KL summed over its steps, L0 and LT
        # the squared count deviations), summed over the batch (ours: with a batch mean, Adam's
        # ε = 1e-3 exceeds √v and the VAE barely moved: 1.36 nats after 1200 iterations, uniform
        # is 1.39). The λ step sees each term per step (KL per step, L0/LT as squared fractions
        # of the sequence): the λ's the thesis reports after training (App. 3.C.1: 0.067, 0.070,
        # 0.051 from 0.01, 0.06, 0.02 at lr 5e-4) imply terms of that order.
        terms = {"kl": jnp.mean(kl), "l0": jnp.mean(l0) / steps ** 2, "transitions": jnp.mean(lt) / steps ** 2}
        recon = -jnp.mean(log_p)  # nats per action
        per_trajectory = (-jnp.sum(log_p, 1) + multipliers["kl"] * seq_kl + multipliers["l0"] * l0
                          + multipliers["transitions"] * lt)
        loss = jnp.sum(per_trajectory)
        metrics = {"recon": recon, "action_accuracy": jnp.mean(jnp.argmax(logits, -1) == actions),
                   "selected": jnp.mean(hk.expected_l0(p0)), **terms}
        return loss, (terms, metrics, jnp.exp(log_p))

    def losses(params, multipliers, batch, key):
        return vae_terms(params["vae"], multipliers, batch["states"], batch["actions"], key)

    def policy_loss(params, cells, goals, actions, rewards, reached):
        logits, values = policy.apply(params, observe(cells[:, :-1]), goals[:, None] - cells[:, :-1])
        _, last_value = policy.apply(params, observe(cells[:, -1]), goals - cells[:, -1])
        done = jnp.cumsum(reached, 1) > 0  # the episode ended at the first arrival
        active = jnp.concatenate([jnp.ones_like(done[:, :1]), ~done[:, :-1]], 1).astype(jnp.float32)
        next_values = jnp.concatenate([values[:, 1:], last_value[:, None]], 1)
        first = reached & (active > 0)
        returns, adv = jax.vmap(lambda r, v, nv, d, e: nstep_returns_and_gae(r, v, nv, d, e, 1.0))(
            rewards * active, jax.lax.stop_gradient(values), jax.lax.stop_gradient(next_values),
            cfg.gamma * (1.0 - first), first)
        log_pi = jax.nn.log_softmax(logits)
        taken = jnp.take_along_axis(log_pi, actions[..., None], -1)[..., 0]
        entropy = -jnp.sum(jnp.exp(log_pi) * log_pi, -1)
        norm = jnp.maximum(active.sum(), 1.0)
        pg = -jnp.sum(active * taken * adv) / norm
        v_loss = jnp.sum(active * (returns - values) ** 2) / norm
        ent = jnp.sum(active * entropy) / norm
        return pg + cfg.value_weight * v_loss - cfg.entropy_weight * ent, {"policy_entropy": ent, "value_loss": v_loss}

    def prior_mean_cells(params_vae):
        alpha, beta = vae.apply(params_vae, cell_id(jnp.asarray(open_cells)), method=vae.prior)
        return alpha / (alpha + beta)

    def iteration(state: GraphState, consts):
        del consts
        rng, k_start, k_walk, k_pol, k_vae = jax.random.split(state.rng, 5)
        starts = state.waypoints[jax.random.randint(k_start, (n,), 0, state.num_waypoints)]
        walk_cells, walk_actions = random_walk(k_walk, starts)
        goals = walk_cells[:, -1]
        pol_cells, pol_actions, _, reached, _ = policy_rollout(state.params["policy"], k_pol, starts, goals)
        batch = {"states": cell_id(jnp.concatenate([walk_cells, pol_cells])),
                 "actions": jnp.concatenate([walk_actions, pol_actions])}
        (_, (terms, metrics, p_actions)), vae_grads = jax.value_and_grad(losses, has_aux=True)(
            state.params, state.multipliers, batch, k_vae)
        # curiosity: the (pre-update) VAE's probability of π_g's actions, from the same pass (no gradient)
        rewards = reached.astype(jnp.float32) - cfg.curiosity_weight * jax.lax.stop_gradient(p_actions[n:])
        (_, pol_metrics), pol_grads = jax.value_and_grad(policy_loss, has_aux=True)(
            state.params["policy"], pol_cells, goals, pol_actions, rewards, reached)
        new_params, new_opt = adam_parts({"vae": vae_opt, "policy": pol_opt}, {"vae": vae_grads["vae"], "policy": pol_grads},
                                         state.params, state.opt_state)
        multipliers = hk.lagrange_step(state.multipliers, terms, cfg.lagrange_lr)
        ready = state.step + 1 >= cfg.waypoint_warmup
        _, top = jax.lax.top_k(prior_mean_cells(new_params["vae"]), k_top)
        waypoints = jnp.where(ready, jnp.concatenate([jnp.asarray(env.start)[None], jnp.asarray(open_cells)[top]]),
                              state.waypoints)
        num = jnp.where(ready, jnp.int32(k_top + 1), state.num_waypoints)
        metrics = {**metrics, **pol_metrics, "goal_reached": jnp.mean(jnp.any(reached, 1)),
                   **{f"lambda_{k}": v for k, v in multipliers.items()}}
        return GraphState(new_params, new_opt, multipliers, waypoints, num, rng, state.step + 1), metrics

    mesh = parallel.make_mesh(1)
    specs = jax.tree.map(lambda _: parallel.P(), jax.eval_shape(init, jax.random.PRNGKey(0)))
    run_chunk, _ = parallel.chunk_programs(iteration, cfg.iterations_per_chunk, lambda m: jax.tree.map(jnp.mean, m),
                                           mesh, specs, False, jnp.zeros(()))
    shardings = parallel.to_shardings(mesh, specs)

    def place(state):
        return jax.device_put(state, shardings)

    def prior_mean(params) -> np.ndarray:
        grid = np.full(walls.shape, np.nan)
        grid[open_cells[:, 0], open_cells[:, 1]] = np.asarray(prior_mean_cells(params["vae"]))
        return grid

    def goal_success(params_policy, key, num: int = 256, walk_len: int = 10) -> float:
        """Fraction of goals (ends of ``walk_len``-step random walks from random open cells) that π_g
        reaches within T steps."""
        k_start, k_walk, k_pol = jax.random.split(key, 3)
        starts = jnp.asarray(open_cells)[jax.random.randint(k_start, (num,), 0, len(open_cells))]
        actions = jax.random.randint(k_walk, (walk_len, num), 0, 4)
        goals = jax.lax.scan(lambda p, a: (move(p, a), None), starts, actions)[0]
        keep = ~jnp.all(goals == starts, -1)
        reached = policy_rollout(params_policy, k_pol, starts, goals)[3]
        return float(jnp.sum(jnp.any(reached, 1) & keep) / jnp.maximum(jnp.sum(keep), 1))

    rollout_jit = jax.jit(policy_rollout)

    def build_graph(state: GraphState, seed: int = 0) -> wg.WorldGraph:
        """Edges (§3.3.3) from ``edge_walks`` random walks out of every waypoint and from π_g's rollouts
        from every waypoint to every other one."""
        waypoints = np.unique(np.asarray(state.waypoints)[:int(state.num_waypoints)], axis=0)
        start_row = np.flatnonzero(np.all(waypoints == env.start, -1))
        order = np.concatenate([start_row, np.setdiff1d(np.arange(len(waypoints)), start_row)])
        waypoints = waypoints[order]  # the start first
        rng = np.random.default_rng(seed)
        starts = np.repeat(waypoints, cfg.edge_walks, 0)
        cells, _ = wg.random_walks(walls, starts, t_len, rng)
        edges = wg.edges_from_rollouts(waypoints, cells)
        k = len(waypoints)
        src, dst = np.repeat(np.arange(k), k), np.tile(np.arange(k), k)
        pairs = src != dst
        if not pairs.any():  # V_p = {start} (the warm-up has not ended): no pairs for π_g
            return wg.WorldGraph(side, wg.walls_hash(walls), waypoints, edges)
        p_cells, _, _, _, _ = rollout_jit(state.params["policy"], jax.random.PRNGKey(seed),
                                                  jnp.asarray(waypoints[src[pairs]]), jnp.asarray(waypoints[dst[pairs]]))
        edges = wg.edges_from_rollouts(waypoints, np.asarray(p_cells), edges)
        return wg.WorldGraph(side, wg.walls_hash(walls), waypoints, edges)

    return Trainer(cfg, env, vae, policy, lambda rng: place(jax.jit(init)(rng)), run_chunk, place, place,
                   jax.jit(losses), prior_mean, goal_success, build_graph)


def load_run(run_dir: str) -> tuple[Trainer, GraphState]:
    """(trainer, newest state) of a ``--algo=world-graph`` run directory (for phase 2)."""
    from repthesis.utils.checkpoint import CheckpointStore

    saved = read_run(run_dir, "--graph", ["world-graph"])
    trainer = make_train(WorldGraphConfig(**saved["config"]))
    store = CheckpointStore(os.path.join(run_dir, "checkpoints"))
    _, state = store.restore_latest(trainer.init(jax.random.PRNGKey(0)))
    store.close()
    if state is None:
        raise ValueError(f"--graph={run_dir!r}: no readable π_g checkpoint")
    return trainer, state


def random_graph(trainer: Trainer, state: GraphState, size: int, seed: int) -> wg.WorldGraph:
    """V_rand of Table 3.3: the start and ``size`` − 1 random open cells, with edges formed as in
    §3.3.3 (random walks and the run's π_g)."""
    env = trainer.env
    open_cells = np.argwhere(~env.walls)
    others = open_cells[~np.all(open_cells == env.start, -1)]
    rng = np.random.default_rng(seed)
    cells = np.concatenate([env.start[None], others[rng.choice(len(others), size - 1, replace=False)]])
    return trainer.build_graph(state.replace(waypoints=jnp.asarray(cells, jnp.int32),
                                             num_waypoints=jnp.int32(len(cells))), seed=seed)
