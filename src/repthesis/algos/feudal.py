"""Phase 2 of thesis chapter 3: Feudal HRL on a maze task with a world graph (§3.4, App. 3.B–3.C).

A Manager (``nn.feudal.Manager``) emits a goal whenever the Worker has reached its last one or
has spent ``horizon`` (c = 20) of its own steps on it; the Worker π^ω(a | s, g_n, g_w)
(``GoalPolicy`` given both goals) acts. Switches give every column of Tables 3.2 / 3.3:

* ``wide_narrow`` (WN, §3.4.2): the Manager picks a waypoint g_w of the world graph, then a
  narrow goal g_n among the open cells of the N×N window around it; off: plain Feudal, one goal
  among all open cells (``--algo=feudal``).
* ``traversal`` (§3.4.3, App. 3.C.2 step 2): when the agent stands on a waypoint that has a
  route in the graph to the active g_w (not yet met), it replays the planned route's actions
  (the edges' loop-erased actions; Dijkstra over the edge weights). The maze moves are
  deterministic in every task (lava ends episodes but moves nobody), so the replay follows
  the route; a blocked move (Door-Key's closed door, absent from the graph's maze) ends it early.
  The thesis uses π_g instead of replay in its stochastic maze; we replay there too.
* ``pi_g_init`` (App. 3.B): the Manager's and the Worker's state encoders start from π_g's;
  ``pi_g_worker`` (ours, not the thesis's): the Worker starts as π_g itself towards its narrow
  goal (``worker_from_pi_g``).
* ``waypoints``: ``learned`` (V_p of the ``--graph`` run) or ``random`` (V_rand, Table 3.3: as
  many random open cells, edges formed as in §3.3.3 with the graph run's π_g).

Rewards (App. 3.C.2): the Manager gets the task's reward at every step, traversal included; the
Worker gets ``worker_goal_reward`` for first reaching g_w and for reaching g_n (which ends its
horizon) and −``worker_step_penalty`` for each of its own actions (none during traversal).
Both learn by A2C with n-step returns (Alg. 7: the Manager's return runs over every step, its
losses only at the steps where it emitted a goal; its LSTM advances only there). One jitted
program per chunk: rollout ``lax.scan`` + update, gradients averaged with ``pmean``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, ClassVar, NamedTuple

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from repthesis.algos import world_graph
from repthesis.algos.vaegan import adam_parts
from repthesis.envs import maze
from repthesis.nn.core import ResetLSTM
from repthesis.nn.feudal import Manager
from repthesis.nn.world_graph import GoalPolicy
from repthesis.rl import parallel, world_graph as wg
from repthesis.rl.returns import nstep_returns_and_gae
from repthesis.utils.config import RolloutBudget, check_fields, read_run

WAYPOINT_KINDS = ("learned", "random")
EVAL_MODES = ("map", "sample", "random")


@dataclasses.dataclass(frozen=True)
class FeudalConfig(RolloutBudget):
    env: str = "maze-small-multigoal"  # a chapter-3 maze task (repthesis.envs name)
    graph: str = ""  # run directory of --algo=world-graph (graph.json, π_g checkpoint) for the same maze
    wide_narrow: bool = True  # Wide-then-Narrow goals (§3.4.2); False: one goal among all cells
    traversal: bool = True  # world-graph traversal towards the wide goal (§3.4.3); needs wide_narrow
    pi_g_init: bool = True  # state encoders initialised from π_g (App. 3.B)
    pi_g_worker: bool = False  # ours: the Worker also starts as π_g towards its narrow goal (goal layer, heads)
    waypoints: str = "learned"  # learned (V_p) | random (V_rand, Table 3.3)
    horizon: int = 20  # c: Worker steps per goal (App. 3.C.3)
    narrow_window: int = 0  # N of the narrow goal's window; 0: the thesis's (5 small/medium, 7 large)
    total_env_steps: int = 3_000_000  # agent steps over all envs (App. 3.C.3 trains up to 100K iterations)
    num_envs: int = 64  # synchronous agents
    rollout_len: int = 60  # steps per iteration (App. 3.C.3)
    gamma: float = 0.95  # γ of both levels
    learning_rate: float = 5e-4  # Adam, both levels (π_g's, App. 3.C.3 inherits them)
    adam_eps: float = 1e-3
    max_grad_norm: float = 40.0  # per level
    value_loss_coef: float = 0.5
    entropy_coef: float = 0.01  # β; the Manager's is on H(π^w) + H(π^n(·|g_w)) (App. 3.C.2)
    worker_goal_reward: float = 1.0  # Worker reward for reaching g_w (first time) and g_n
    worker_step_penalty: float = 0.01  # Worker cost per own action
    hidden: int = 128  # encoder / LSTM / head width (π_g's encoder width for the initialisation)
    updates_per_chunk: int = 20
    checkpoint_every: int = 4  # chunks
    val_episodes: int = 16  # validation episodes at each checkpoint (greedy Manager and Worker)
    val_max_steps: int = 0  # 0: the maze's own episode limit
    eval_modes: ClassVar[tuple] = EVAL_MODES  # ``repthesis.evaluate --modes`` for these runs

    def __post_init__(self):
        if not self.env.startswith("maze-") or self.env not in maze.env_names():
            raise ValueError(f"env={self.env!r}: Feudal HRL runs on the chapter-3 mazes; valid: "
                             f"maze-<{'|'.join(maze.SIZES)}>-<{'|'.join(maze.TASKS)}>[-full]")
        check_fields(
            self, choices={"waypoints": WAYPOINT_KINDS},
            positive=("horizon", "total_env_steps", "num_envs", "rollout_len", "learning_rate", "adam_eps",
                      "max_grad_norm", "hidden", "updates_per_chunk", "checkpoint_every"),
            non_negative=("value_loss_coef", "entropy_coef", "worker_goal_reward", "worker_step_penalty",
                          "val_episodes", "val_max_steps", "narrow_window"),
            unit_interval=("gamma",))
        if self.narrow_window and self.narrow_window % 2 == 0:
            raise ValueError(f"narrow_window={self.narrow_window} must be odd (a window centred on the waypoint)")
        if self.traversal and not self.wide_narrow:
            raise ValueError("traversal=true needs wide_narrow=true (traversals run towards the wide goal)")
        if self.pi_g_worker and not (self.pi_g_init and self.wide_narrow):
            raise ValueError("pi_g_worker=true needs pi_g_init=true and wide_narrow=true (the narrow goal is π_g's goal)")
        if self.waypoints == "random" and not self.wide_narrow:
            raise ValueError("waypoints=random needs wide_narrow=true (waypoints are the wide goals)")

    @property
    def size(self) -> str:
        return maze.parse_name(self.env)[0]

    @property
    def view(self) -> str:  # ego (7×7 window, the default) or full (the env name ends in -full)
        return maze.parse_name(self.env)[2]

    @property
    def narrow(self) -> int:
        """N of the narrow window, 0 without Wide-then-Narrow."""
        return (self.narrow_window or maze.NARROW_WINDOW[self.size]) if self.wide_narrow else 0

    @property
    def needs_graph(self) -> bool:
        return self.wide_narrow or self.pi_g_init


def check_graph(cfg: FeudalConfig) -> wg.WorldGraph | None:
    """One-line errors, before anything is built, for a missing or mismatched ``--graph`` run;
    returns the graph it read (Wide-then-Narrow), else None."""
    if not cfg.needs_graph:
        return None
    if not cfg.graph:
        why = "Wide-then-Narrow goals are its waypoints" if cfg.wide_narrow else "pi_g_init copies its π_g"
        raise ValueError(f"--graph=DIR is required ({why}): a run of --algo=world-graph --maze={cfg.size}")
    saved = read_run(cfg.graph, "--graph", ["world-graph"])
    if saved["config"]["maze"] != cfg.size:
        raise ValueError(f"--graph={cfg.graph!r} is a graph of the {saved['config']['maze']} maze, "
                         f"not {cfg.size} ({cfg.env}); valid: a world-graph run with --maze={cfg.size}")
    graph = None
    if cfg.wide_narrow:
        if not os.path.exists(os.path.join(cfg.graph, "graph.json")):
            raise ValueError(f"--graph={cfg.graph!r} has no graph.json (the world-graph run did not finish)")
        graph = wg.WorldGraph.load(os.path.join(cfg.graph, "graph.json"))
        if graph.walls_hash != wg.walls_hash(maze.make_layout(cfg.size)):
            raise ValueError(f"--graph={cfg.graph!r}: its graph.json belongs to another maze layout than {cfg.env}")
    graph_view = saved["config"].get("view", "ego")  # runs before the view switch were all ego
    if cfg.pi_g_init and graph_view != cfg.view:
        raise ValueError(f"--graph={cfg.graph!r}: its π_g sees the {graph_view} view, {cfg.env} the {cfg.view} view; "
                         f"valid: a world-graph run with --view={cfg.view}, or pi_g_init=false")
    if cfg.pi_g_init and cfg.hidden != GoalPolicy.hidden:
        raise ValueError(f"hidden={cfg.hidden}: pi_g_init copies π_g's encoder, {GoalPolicy.hidden} units wide; "
                         f"valid: hidden={GoalPolicy.hidden} or pi_g_init=false")
    ckpt = os.path.join(cfg.graph, "checkpoints")
    if (cfg.pi_g_init or cfg.waypoints == "random") and not (
            os.path.isdir(ckpt) and any(d.isdigit() for d in os.listdir(ckpt))):
        raise ValueError(f"--graph={cfg.graph!r} has no π_g checkpoint in {ckpt}")
    return graph


@flax.struct.dataclass
class FeudalState:
    params: Any  # {"manager", "worker"}
    opt_state: Any
    env_state: Any  # [B] maze states
    obs: jax.Array  # [B, k, k, C]
    reset: jax.Array  # [B] obs starts an episode
    carry: Any  # [B] Manager LSTM carry (advanced only when it emits a goal)
    goal: jax.Array  # [B] wide goal: waypoint index (WN) or cell index (plain Feudal)
    narrow: jax.Array  # [B, 2] narrow goal cell (plain Feudal: the goal cell)
    wide_met: jax.Array  # [B] g_w reached since the goal was emitted
    since: jax.Array  # [B] Worker steps on the current goal
    need_goal: jax.Array  # [B] the Manager emits a goal at the next step
    trav_from: jax.Array  # [B] waypoint the running traversal started on
    trav_step: jax.Array  # [B] actions replayed for the current goal
    trav_len: jax.Array  # [B] its length (0: no traversal)
    env_rng: jax.Array  # [B, 2]
    episode_return: jax.Array  # [B]
    update_step: jax.Array


_BATCHED = ("env_state", "obs", "reset", "carry", "goal", "narrow", "wide_met", "since", "need_goal", "trav_from",
            "trav_step", "trav_len", "env_rng", "episode_return")


def fresh_agents(env_state, obs, env_rng, hidden: int) -> dict:
    """The per-env fields of a FeudalState for B envs at the start of their episodes."""
    b = obs.shape[0]
    zeros_i = jnp.zeros((b,), jnp.int32)
    return dict(env_state=env_state, obs=obs, reset=jnp.ones((b,), bool), carry=ResetLSTM.initial_carry(hidden, (b,)),
                goal=zeros_i, narrow=jnp.zeros((b, 2), jnp.int32), wide_met=jnp.zeros((b,), bool), since=zeros_i,
                need_goal=jnp.ones((b,), bool), trav_from=zeros_i, trav_step=zeros_i, trav_len=zeros_i,
                env_rng=env_rng, episode_return=jnp.zeros((b,), jnp.float32))


def masked_choice(logits, ok, key, greedy, chosen=None):
    """Sample (the argmax if ``greedy``; or score ``chosen``) among the ``ok`` entries of ``logits``;
    returns (choice, its log-prob, the entropy over the ok entries)."""
    logits = jnp.where(ok, logits, -1e9)
    if chosen is None:
        chosen = jnp.where(greedy, jnp.argmax(logits, -1), jax.random.categorical(key, logits))
    log_p = jax.nn.log_softmax(logits)
    logp = jnp.take_along_axis(log_p, chosen[..., None], -1)[..., 0]
    return chosen, logp, -jnp.sum(jnp.exp(log_p) * jnp.where(ok, log_p, 0.0), -1)


def worker_from_pi_g(worker: dict, pi_g: dict) -> dict:
    """The Worker's goal layer and heads set to π_g's so that it starts as π_g towards its narrow goal:
    π_g's rows for (offset, sign) go to the narrow goal's, the wide goal's rows start at 0; actions π_g
    lacks (Door-Key's pick / toggle) keep their fresh columns. (GoalPolicy's goal layer reads
    [features (h), offsets (2 per goal), their signs (2 per goal)].)"""
    w = jax.tree.map(jnp.asarray, worker)
    src = jax.tree.map(jnp.asarray, pi_g)
    k, g = w["goal_layer"]["kernel"], src["goal_layer"]["kernel"]
    h = g.shape[0] - 4  # π_g's one goal: 2 offsets, 2 signs
    k = jnp.zeros_like(k).at[:h].set(g[:h]).at[h:h + 2].set(g[h:h + 2]).at[h + 4:h + 6].set(g[h + 2:h + 4])
    n = src["policy_head"]["kernel"].shape[-1]
    pol = w["policy_head"]
    return {**w, "goal_layer": {"kernel": k, "bias": src["goal_layer"]["bias"]},
            "policy_head": {"kernel": pol["kernel"].at[:, :n].set(src["policy_head"]["kernel"]),
                            "bias": pol["bias"].at[:n].set(src["policy_head"]["bias"])},
            "value_head": src["value_head"]}


class Trainer(NamedTuple):
    cfg: FeudalConfig
    env: Any
    graph: Any  # WorldGraph of the wide goals (None for plain Feudal)
    consts: wg.GoalTables
    init: Any
    run_chunk: Any
    place: Any
    restore: Any
    runner: Any  # (mode, max_steps=None) -> run(params, seeds) -> {"returns", "success", "lengths", ...}
    losses: Any  # (params, Manager carry at rollout start, trajectory, last, consts) -> (loss, metrics)
    rollout: Any  # (state, step keys [B, 2], consts) -> (state, trajectory, episode counts, stats)


class Trajectory(NamedTuple):
    obs: jax.Array  # [T, B, k, k, C]
    pos: jax.Array  # [T, B, 2]
    reset: jax.Array
    decided: jax.Array  # the Manager emitted (goal, narrow) at this step
    goal: jax.Array
    narrow_index: jax.Array  # index into the narrow window (WN)
    offsets: jax.Array  # [T, B, 4] Worker input: g_n − pos, g_w − pos
    action: jax.Array
    worker_acted: jax.Array  # not a traversal step
    reward: jax.Array  # the task's reward (the Manager's)
    worker_reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    worker_end: jax.Array  # the Worker's goal ends after this step (reached g_n, horizon, episode end)
    worker_discount: jax.Array  # γ, or 0 where g_n was reached or the episode terminated
    next_obs: jax.Array  # s_{t+1} of the same episode (the final observation where it ended)
    next_offsets: jax.Array  # the same goals' offsets from s_{t+1}
    manager_trunc_value: jax.Array  # V_m(final observation) where truncated


def make_train(cfg: FeudalConfig, num_devices: int = 1, env_seed: int = 0) -> Trainer:
    graph = check_graph(cfg)  # the waypoints of Wide-then-Narrow, else None
    if cfg.num_envs % num_devices:
        raise ValueError(f"num_envs={cfg.num_envs} must be divisible by --devices={num_devices}")
    env = maze.make(cfg.env)
    env_params = env.default_params
    walls, side = env.walls, env.side
    encoder = pi_g = None
    if cfg.pi_g_init or cfg.waypoints == "random":  # (random waypoints imply wide_narrow: FeudalConfig)
        graph_trainer, graph_state = world_graph.load_run(cfg.graph)
        if cfg.pi_g_init:  # its width is GoalPolicy.hidden = cfg.hidden, as check_graph required
            encoder = graph_state.params["policy"]["params"]["encoder"]
            pi_g = graph_state.params["policy"]["params"] if cfg.pi_g_worker else None
        if cfg.waypoints == "random":  # V_rand (Table 3.3): as many random cells, edges as §3.3.3
            graph = world_graph.random_graph(graph_trainer, graph_state, len(graph.waypoints), env_seed)
    consts = wg.goal_tables(graph, walls, cfg.narrow, cfg.traversal)
    k_goals = int(consts.waypoints.shape[0])
    manager = Manager(side, k_goals, cfg.narrow, cfg.hidden)
    worker = GoalPolicy(env.num_actions, side, cfg.hidden)
    opt = optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.learning_rate, eps=cfg.adam_eps))
    mesh = parallel.make_mesh(num_devices)
    axis = parallel.axis_name(mesh)
    mp = lambda params, *a, **kw: manager.apply(params["manager"], *a, **kw)  # noqa: E731

    def env_reset(key):
        obs, state = env.reset(key, env_params)
        return obs.astype(jnp.float32), state

    def env_step(key, state, action):
        """(obs, state, reward, terminated, truncated that is not also terminated, the pre-reset state,
        its observation)."""
        obs, state, reward, terminated, truncated, final, final_obs = env.step_with_final(key, state, action, env_params)
        return (obs.astype(jnp.float32), state, reward, terminated, truncated & ~terminated, final,
                final_obs.astype(jnp.float32))

    def manager_logits(params, consts, h, key, greedy, goal=None, narrow_index=None):
        """Sample (or take the argmax of) the goal and, with WN, the narrow cell (or score the given
        ones: ``key`` None); their log-prob and the entropy H(π^w) + H(π^n(·|g_w)) (App. 3.C.2)."""
        logits, value = mp(params, h, method=Manager.heads)
        k_goal, k_narrow = jax.random.split(key) if key is not None else (None, None)
        goal, logp, entropy = masked_choice(logits, consts.goal_ok, k_goal, greedy, goal)
        if not cfg.wide_narrow:
            return goal, jnp.zeros_like(goal), consts.waypoints[goal], logp, entropy, value
        n_logits = mp(params, h, goal, method=Manager.narrow_logits)
        narrow_index, n_logp, n_entropy = masked_choice(n_logits, consts.narrow_ok[goal], k_narrow, greedy,
                                                        narrow_index)
        narrow = consts.waypoints[goal] + consts.narrow_offsets[narrow_index]
        return goal, narrow_index, narrow, logp + n_logp, entropy + n_entropy, value

    def worker_offsets(consts, goal, narrow, pos):
        return jnp.concatenate([narrow - pos, consts.waypoints[goal] - pos], -1)

    def agent_step(params, consts, s, key, greedy):
        """One step of one env: Manager goal if due, traversal or Worker action, env step, rewards.
        ``s`` is a dict of the per-env fields of FeudalState; returns (new s, transition)."""
        k_m, k_w, k_env = jax.random.split(key, 3)
        pos = s["env_state"].pos
        # The Manager runs every step and its result is kept only where it decides: vmapped over
        # envs a cond becomes a select of both branches, and with c = 20 some env of 64 decides at
        # nearly every step, so skipping it where no env decides would save almost nothing.
        carry_new, h = mp(params, s["carry"], s["obs"], pos, s["reset"], method=Manager.step)
        goal, n_idx, narrow, _, _, _ = manager_logits(params, consts, h, k_m, greedy)
        decide = s["need_goal"]
        carry = jax.tree.map(lambda a, b: jnp.where(decide, a, b), carry_new, s["carry"])
        goal = jnp.where(decide, goal, s["goal"])
        n_idx = jnp.where(decide, n_idx, 0)
        narrow = jnp.where(decide, narrow, s["narrow"])
        wide_met = jnp.where(decide, jnp.all(pos == consts.waypoints[goal]), s["wide_met"])
        since = jnp.where(decide, 0, s["since"])
        trav_len = jnp.where(decide, 0, s["trav_len"])
        trav_step = jnp.where(decide, 0, s["trav_step"])
        trav_from = s["trav_from"]
        # §3.4.3: on a waypoint with a route to the unmet wide goal, start replaying it, once per goal
        # (trav_step = 0: none yet). A replay cut short (Door-Key's closed door on an edge learned
        # without it) hands over to the Worker; restarting it would stall the agent on the waypoint.
        here = consts.waypoint_at[pos[0], pos[1]]
        route = consts.route_len[jnp.maximum(here, 0), goal]
        start = (trav_step == 0) & ~wide_met & (here >= 0) & (here != goal) & (route > 0) & cfg.traversal
        trav_from = jnp.where(start, here, trav_from)
        trav_len = jnp.where(start, route, trav_len)
        traversing = trav_len > 0
        offsets = worker_offsets(consts, goal, narrow, pos)
        logits, _ = worker.apply(params["worker"], s["obs"], offsets)
        w_action = jnp.where(greedy, jnp.argmax(logits, -1), jax.random.categorical(k_w, logits))
        action = jnp.where(traversing, consts.route_actions[trav_from, goal, jnp.minimum(
            trav_step, consts.route_actions.shape[-1] - 1)], w_action)
        obs, env_state, reward, terminated, truncated, final, final_obs = env_step(k_env, s["env_state"], action)
        done = terminated | truncated
        new_pos = final.pos
        reached_w = jnp.all(new_pos == consts.waypoints[goal])
        reached_n = jnp.all(new_pos == narrow)
        first_w = reached_w & ~wide_met
        worker_reward = cfg.worker_goal_reward * (reached_n.astype(jnp.float32)
                                                  + (first_w & cfg.wide_narrow).astype(jnp.float32))
        worker_reward = worker_reward - cfg.worker_step_penalty * (~traversing)
        trav_step = trav_step + traversing
        blocked = jnp.all(new_pos == pos)  # routes are loop-erased: every replayed action moves
        trav_len = jnp.where(traversing & ((trav_step >= trav_len) | blocked | reached_w), 0, trav_len)
        since = since + (~traversing)
        worker_end = reached_n | (since >= cfg.horizon) | done
        next_offsets = worker_offsets(consts, goal, narrow, new_pos)
        new_s = dict(env_state=env_state, obs=obs, reset=done, carry=carry, goal=goal, narrow=narrow,
                     wide_met=wide_met | reached_w, since=since, need_goal=worker_end, trav_from=trav_from,
                     trav_step=trav_step, trav_len=jnp.where(done, 0, trav_len),
                     env_rng=s["env_rng"], episode_return=s["episode_return"])
        trans = dict(obs=s["obs"], pos=pos, reset=s["reset"], decided=decide, goal=goal, narrow_index=n_idx,
                     offsets=offsets, action=action, worker_acted=~traversing, reward=reward,
                     worker_reward=worker_reward, terminated=terminated, truncated=truncated, worker_end=worker_end,
                     worker_discount=cfg.gamma * (1.0 - (reached_n | terminated)), next_obs=final_obs,
                     next_offsets=next_offsets, carry=carry, final_pos=new_pos, started=start, reached_narrow=reached_n,
                     exited=terminated & jnp.all(new_pos == jnp.asarray(env.exit)))
        return new_s, trans

    def rollout(state: FeudalState, step_keys, consts: wg.GoalTables):
        params = state.params

        def step(c, t):
            s, ret_sum, episodes, exits = c
            keys = jax.vmap(lambda k: jax.random.fold_in(k, t))(step_keys)
            s, tr = jax.vmap(agent_step, in_axes=(None, None, 0, 0, None))(params, consts, s, keys, False)
            # V_m of the final observation where a time limit cut the episode (bootstrap, not 0)
            trunc_value = jax.lax.cond(
                jnp.any(tr["truncated"]),
                lambda: mp(params, mp(params, tr["carry"], tr["next_obs"], tr["final_pos"],
                                      jnp.zeros_like(s["reset"]), method=Manager.step)[1], method=Manager.heads)[1],
                lambda: jnp.zeros_like(tr["reward"]))
            ep = s["episode_return"] + tr["reward"]
            done = tr["terminated"] | tr["truncated"]
            ret_sum, episodes = ret_sum + jnp.where(done, ep, 0.0), episodes + done
            exits = exits + tr["exited"]
            s["episode_return"] = jnp.where(done, 0.0, ep)
            traj = Trajectory(**{f: tr[f] for f in Trajectory._fields if f in tr},
                              manager_trunc_value=jnp.where(tr["truncated"], trunc_value, 0.0))
            stats = (tr["decided"], tr["worker_acted"], tr["started"], tr["reached_narrow"])
            return (s, ret_sum, episodes, exits), (traj, stats)

        zeros = jnp.zeros_like(state.episode_return)
        agents = {f: getattr(state, f) for f in _BATCHED}
        (s, ret_sum, episodes, exits), (traj, stats) = jax.lax.scan(
            step, (agents, zeros, zeros.astype(jnp.int32), zeros.astype(jnp.int32)), jnp.arange(cfg.rollout_len))
        return state.replace(**s), traj, (ret_sum, episodes, exits), stats

    def manager_unroll(params, carry0, traj: Trajectory, last, consts: wg.GoalTables):
        """V_m and the goal log-probs / entropies over the rollout, the LSTM advanced only where
        the Manager emitted a goal (as in the rollout); ``last`` = (obs, pos, reset) after it."""

        def step(carry, x):
            obs, pos, reset, decided, goal, n_idx = x
            new, h = mp(params, carry, obs, pos, reset, method=Manager.step)
            _, _, _, logp, ent, value = manager_logits(params, consts, h, None, False, goal, n_idx)
            carry = jax.tree.map(lambda a, b: jnp.where(decided[:, None], a, b), new, carry)
            return carry, (value, logp, ent)

        carry, (values, logp, ent) = jax.lax.scan(step, carry0, (traj.obs, traj.pos, traj.reset, traj.decided,
                                                                 traj.goal, traj.narrow_index))
        _, h = mp(params, carry, *last, method=Manager.step)
        return values, logp, ent, mp(params, h, method=Manager.heads)[1]

    # n-step returns (τ = 1: Alg. 7's R ← r_t + γR), one time-major trajectory per env
    n_step = jax.vmap(lambda *a: nstep_returns_and_gae(*a, 1.0)[0], in_axes=1, out_axes=1)

    def global_count(mask):
        """Steps counted over all devices, per device: each device's sum divided by it makes the
        ``pmean`` of the gradients the gradient of the global mean (decision and Worker steps are
        not split evenly over devices, unlike A3C's T×B)."""
        return jnp.maximum(parallel.psum(mask.sum(), axis), 1.0) / mesh.size

    def losses(params, carry0, traj: Trajectory, last, consts: wg.GoalTables):
        """(loss, metrics) of one rollout: the Manager's A2C terms at its decision steps (Alg. 7), the
        Worker's at its own (not traversal) steps; the two parameter sets get disjoint gradients."""
        values, logp, ent, last_value = manager_unroll(params, carry0, traj, last, consts)
        sg = jax.lax.stop_gradient
        ends = traj.terminated | traj.truncated
        next_v = jnp.where(traj.truncated, traj.manager_trunc_value,
                           jnp.concatenate([sg(values[1:]), sg(last_value)[None]], 0))
        m_returns = n_step(traj.reward, sg(values), next_v, cfg.gamma * (1.0 - traj.terminated), ends)
        d = traj.decided.astype(jnp.float32)
        n_dec = global_count(d)
        m_adv = sg(m_returns - values)
        m_policy = -jnp.sum(d * logp * m_adv) / n_dec
        m_value = 0.5 * jnp.sum(d * (m_returns - values) ** 2) / n_dec
        m_entropy = jnp.sum(d * ent) / n_dec
        # Worker: V(s_t, g_t) and V(s_{t+1}, g_t) from one batched pass each; losses on its own steps
        logits, w_values = worker.apply(params["worker"], traj.obs, traj.offsets)
        _, w_next = worker.apply(params["worker"], traj.next_obs, traj.next_offsets)  # = V(s_{t+1}, g_{t+1}) mid-goal
        w_returns = n_step(traj.worker_reward, sg(w_values), sg(w_next), traj.worker_discount, traj.worker_end)
        a = traj.worker_acted.astype(jnp.float32)
        n_act = global_count(a)
        log_pi = jax.nn.log_softmax(logits)
        taken = jnp.take_along_axis(log_pi, traj.action[..., None], -1)[..., 0]
        w_policy = -jnp.sum(a * taken * sg(w_returns - w_values)) / n_act
        w_value = 0.5 * jnp.sum(a * (w_returns - w_values) ** 2) / n_act
        w_entropy = jnp.sum(a * -jnp.sum(jnp.exp(log_pi) * log_pi, -1)) / n_act
        manager_loss = m_policy + cfg.value_loss_coef * m_value - cfg.entropy_coef * m_entropy
        worker_loss = w_policy + cfg.value_loss_coef * w_value - cfg.entropy_coef * w_entropy
        metrics = {"loss": manager_loss + worker_loss, "policy_loss": m_policy + w_policy,
                   "value_loss": m_value + w_value, "entropy": w_entropy, "manager_entropy": m_entropy,
                   "manager_value_loss": m_value, "worker_value_loss": w_value,
                   "worker_return": jnp.sum(a * w_returns) / n_act}
        return manager_loss + worker_loss, metrics

    def init(rng) -> FeudalState:
        k_m, k_w, k_env = jax.random.split(rng, 3)
        env_rng = jax.random.split(k_env, cfg.num_envs)
        obs, env_state = jax.vmap(env_reset)(jax.vmap(lambda k: jax.random.fold_in(k, 0))(env_rng))
        carry1 = ResetLSTM.initial_carry(cfg.hidden)
        params = {"manager": manager.init(k_m, carry1, obs[0], jnp.zeros(2, jnp.int32), jnp.array(True),
                                          jnp.int32(0)),
                  "worker": worker.init(k_w, obs[0], jnp.zeros(4))}
        if encoder is not None:  # App. 3.B: both levels' state encoders start as π_g's
            for part in params:
                params[part]["params"]["encoder"] = jax.tree.map(jnp.asarray, encoder)
        if pi_g is not None:
            params["worker"]["params"] = worker_from_pi_g(params["worker"]["params"], pi_g)
        return FeudalState(params=params, opt_state={p: opt.init(params[p]) for p in params},
                           update_step=jnp.zeros((), jnp.int32), **fresh_agents(env_state, obs, env_rng, cfg.hidden))

    def update(state: FeudalState, consts: wg.GoalTables):
        keys = jax.vmap(lambda k: jax.random.split(k))(state.env_rng)
        env_rng, step_keys = keys[:, 0], keys[:, 1]
        carry0 = state.carry
        state, traj, (ret_sum, episodes, exits), stats = rollout(state, step_keys, consts)
        last = (state.obs, state.env_state.pos, state.reset)
        grads, metrics = jax.grad(losses, has_aux=True)(parallel.per_device(state.params, axis), carry0, traj, last,
                                                        consts)
        grads = parallel.pmean(grads, axis)
        metrics = parallel.pmean(metrics, axis)
        metrics["grad_norm"] = optax.tree.norm(grads)
        params, opt_state = adam_parts(opt, grads, state.params, state.opt_state)
        state = state.replace(params=params, opt_state=opt_state, env_rng=env_rng, update_step=state.update_step + 1)
        names = ("return_sum", "episodes", "exits", "decisions", "worker_steps", "traversals", "goals_reached")
        counts = {k: parallel.psum(jnp.sum(x), axis) for k, x in zip(names, (ret_sum, episodes, exits, *stats))}
        return state, (metrics, counts)

    def summarise(per_update) -> dict:
        metrics, counts = per_update
        out = jax.tree.map(jnp.mean, metrics)
        c = jax.tree.map(jnp.sum, counts)
        total = c["episodes"]
        out["episodes"] = total
        out["episode_return"] = jnp.where(total > 0, c["return_sum"] / jnp.maximum(total, 1), jnp.nan)
        out["success"] = jnp.where(total > 0, c["exits"] / jnp.maximum(total, 1), jnp.nan)
        steps = cfg.steps_per_update * cfg.updates_per_chunk
        out["traversal_fraction"] = 1.0 - c["worker_steps"] / steps
        out["traversals_per_episode"] = c["traversals"] / jnp.maximum(total, 1)
        out["goal_success"] = c["goals_reached"] / jnp.maximum(c["decisions"], 1)
        return out

    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    specs = jax.tree.map(lambda _: P(), abstract).replace(
        **{f: jax.tree.map(lambda _: P(parallel.DATA_AXIS), getattr(abstract, f)) for f in _BATCHED})
    run_chunk, _ = parallel.chunk_programs(update, cfg.updates_per_chunk, summarise, mesh, specs, False, consts)
    shardings = parallel.to_shardings(mesh, specs)

    def place(state):
        return jax.device_put(state, shardings)

    def runner(mode: str = "map", max_steps: int | None = None):
        """Episodes from given seeds (one each): greedy Manager and Worker (``map``), sampled
        (``sample``), or uniform random actions (``random``)."""
        if mode not in EVAL_MODES:
            raise ValueError(f"unknown evaluation mode {mode!r}; valid: {', '.join(EVAL_MODES)}")
        limit = max_steps or env_params.max_steps_in_episode

        @jax.jit
        def play(params, seeds, consts):
            keys = jax.vmap(jax.random.PRNGKey)(seeds)
            obs, env_state = jax.vmap(env_reset)(jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys))
            n = seeds.shape[0]
            zeros_i = jnp.zeros((n,), jnp.int32)
            s = fresh_agents(env_state, obs, keys, cfg.hidden)

            def step(c, t):
                s, done, ret, length, exited = c
                k = jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, 1), t))(keys)
                if mode == "random":
                    acts = jax.vmap(lambda k: jax.random.randint(jax.random.fold_in(k, 7), (), 0, env.num_actions))(k)
                    res = jax.vmap(env_step)(k, s["env_state"], acts)
                    s = {**s, "env_state": res[1], "obs": res[0]}
                    tr = {"reward": res[2], "terminated": res[3], "truncated": res[4],
                          "exited": res[3] & jnp.all(res[5].pos == jnp.asarray(env.exit), -1)}
                else:
                    s, tr = jax.vmap(agent_step, in_axes=(None, None, 0, 0, None))(params, consts, s, k, mode == "map")
                alive = ~done
                ret = ret + jnp.where(alive, tr["reward"], 0.0)
                length = length + alive
                exited = exited | (alive & tr["exited"])
                return (s, done | tr["terminated"] | tr["truncated"], ret, length, exited), None

            init_c = (s, jnp.zeros((n,), bool), jnp.zeros((n,), jnp.float32), zeros_i, jnp.zeros((n,), bool))
            (_, done, ret, length, exited), _ = jax.lax.scan(step, init_c, jnp.arange(limit))
            return {"returns": ret, "lengths": length, "finished": done, "success": exited.astype(jnp.float32)}

        return lambda params, seeds: play(params, jnp.asarray(seeds, jnp.uint32), consts)

    jit_init = jax.jit(init)
    return Trainer(cfg, env, graph, consts, lambda rng: place(jit_init(rng)), run_chunk, place, place, runner,
                   jax.jit(losses), jax.jit(rollout))
