"""Batched synchronous A3C-LSTM and its stochastic-activation family (thesis chapter 2).

A3C-LSTM, SA3C, FSA3C, HPA3C, dropout units and NoisyNet-A3C (v1/v2/v3) are switches of
one config (``unit``, ``noisy``, ``placement``, …), not copies (STYLE.md §4). The whole run
is one XLA program: ``make_train(cfg).train(rng)`` scans over chunks, each a scan over
updates, each a rollout ``lax.scan`` over gymnax envs followed by one gradient step
(Alg. 1–3). The CLI drives the same program chunk by chunk (``run_chunk``) to log and
checkpoint in between. Updates average gradients with ``pmean`` over the device mesh.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import chex
import distrax
import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from repthesis import envs
from repthesis.nn import ActorCritic
from repthesis.nn.actor_critic import NOISY, PLACEMENTS, UNITS, unroll
from repthesis.nn.stochastic import NOISY_STREAM, STOCHASTIC_STREAM
from repthesis.nn.torso import TORSOS
from repthesis.rl import parallel
from repthesis.rl.returns import nstep_returns_and_gae
from repthesis.utils.config import RolloutBudget, check_fields

NOISE_RESAMPLE = ("step", "iteration")


@dataclasses.dataclass(frozen=True)
class A3CConfig(RolloutBudget):
    """Hyper-parameters; defaults are thesis App. 2.E except the network size (MinAtar-sized)."""

    env: str = "Breakout-MinAtar"  # repthesis.envs name
    total_env_steps: int = 6_000_000  # agent steps over all envs; rounded up to whole chunks
    num_envs: int = 64  # synchronous agents = batch size (App. 2.E: 64)
    rollout_len: int = 20  # t_max (Freeway: 30)
    gamma: float = 0.95  # γ, discount
    gae_tau: float = 1.0  # τ, GAE trace decay (Freeway: 0.92)
    learning_rate: float = 5e-4  # Adam learning rate
    adam_eps: float = 1e-3  # Adam ε
    max_grad_norm: float = 40.0  # gradients clipped to this global norm
    value_loss_coef: float = 5.0  # λ in Alg. 1 (Freeway: 0.5)
    entropy_coef: float = 0.01  # β in eq. 2.2
    kl_coef: float = 1e-4  # ψ, weight of HPA3C's prior KL (Alg. 3)
    log_var: float = -4.0  # log σ² of SA/FSA units and of HPA3C's prior (Seaquest/MsPacman/Breakout: −6)
    reward_clip: bool = True  # clip rewards to [−1, 1] (not for Freeway)
    unit: str = "none"  # stochastic unit: none | sa | fsa | hp | dropout
    placement: str = "shared"  # stochastic pathway feeds: shared | value | policy (§2.6.1)
    noisy: str = "none"  # NoisyNet layers: none | v1 (heads) | v2 (FC1/FC2) | v3 (both)  (App. 2.G)
    noisy_factorised: bool = True  # factorised (True) or independent (False) NoisyNet noise
    activation_noise: str = "step"  # resample stochastic activations every step | iteration (Table 2.5)
    weight_noise: str = "iteration"  # resample NoisyNet weights every step | iteration (Table 2.5)
    dropout_rate: float = 0.25  # dropout units' rate (App. 2.F)
    torso: str = "mlp"  # encoder: mlp (MinAtar) | cnn | cnn_slim (Table 2.G.2)
    torso_size: int = 256  # MLP torso width
    core_size: int = 128  # LSTM units (Atari: 512)
    fc_size: int = 128  # units of FC1 and of FC2 (Atari: 512 each)
    updates_per_chunk: int = 50  # updates per compiled chunk: the logging/checkpoint granularity
    checkpoint_every: int = 4  # chunks between checkpoints (the last chunk always checkpoints)
    val_episodes: int = 8  # episodes on the validation seed at each checkpoint (MAP policy)
    val_max_steps: int = 0  # validation episodes cut after this many agent steps (0: the env's own limit)
    update_loop: str = "auto"  # updates of a chunk: scan (one program) | python | auto (python on CPU)

    def __post_init__(self):
        check_fields(
            self,
            choices={"unit": UNITS, "placement": PLACEMENTS, "noisy": NOISY, "torso": TORSOS,
                     "activation_noise": NOISE_RESAMPLE, "weight_noise": NOISE_RESAMPLE,
                     "update_loop": parallel.UPDATE_LOOPS},
            positive=("total_env_steps", "num_envs", "rollout_len", "torso_size", "core_size", "fc_size",
                      "updates_per_chunk", "checkpoint_every", "learning_rate", "adam_eps", "max_grad_norm"),
            unit_interval=("gamma", "gae_tau"),
            non_negative=("value_loss_coef", "entropy_coef", "kl_coef", "val_episodes", "val_max_steps"))
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate={self.dropout_rate!r} must lie in [0, 1)")

    @property
    def python_update_loop(self) -> bool:
        """On CPU, updates run from Python: inside a scan over updates XLA:CPU runs convolution
        gradients several times slower (jax-ml/jax#12868), and A3C on Freeway-MinAtar and
        SpaceInvaders-MinAtar at 2.3-2.5× fewer env-steps/s (Breakout, Asterix, Seaquest: 5-15%
        more); measured with ``benchmarks/throughput.py --loops``."""
        return parallel.python_update_loop(self.update_loop)


@flax.struct.dataclass
class LearnerState:
    """Everything a run needs to continue bit-identically; checkpointed whole (STYLE.md §5)."""

    params: Any
    opt_state: Any
    env_state: Any  # [B] env states (Atari: envpool handle + frame normaliser)
    obs: jax.Array  # [B, ...] current observation
    carry: Any  # [B] recurrent state before ``obs``
    reset: jax.Array  # [B] ``obs`` starts an episode
    env_rng: jax.Array  # [B, 2] per-env PRNG keys: results do not depend on the device count
    episode_return: jax.Array  # [B] unclipped return so far of the running episode
    update_step: jax.Array  # [] updates done


# Which LearnerState fields are split over environments (the rest are replicated).
_BATCHED_FIELDS = ("env_state", "obs", "carry", "reset", "env_rng", "episode_return")


def state_specs(state: LearnerState) -> LearnerState:
    return jax.tree.map(lambda _: P(), state).replace(
        **{f: jax.tree.map(lambda _: P(parallel.DATA_AXIS), getattr(state, f)) for f in _BATCHED_FIELDS}
    )


class Trajectory(NamedTuple):
    obs: jax.Array  # [T, B, ...]
    reset: jax.Array  # [T, B]
    action: jax.Array  # [T, B]
    reward: jax.Array  # [T, B] unclipped
    terminated: jax.Array  # [T, B]
    truncated: jax.Array  # [T, B]
    truncation_value: jax.Array  # [T, B] V(final obs) where truncated, else 0


def make_network(cfg: A3CConfig, num_actions: int) -> ActorCritic:
    return ActorCritic(
        num_actions=num_actions, torso=cfg.torso, torso_size=cfg.torso_size, core_size=cfg.core_size,
        fc_size=cfg.fc_size, unit=cfg.unit, log_var=cfg.log_var, placement=cfg.placement, noisy=cfg.noisy,
        noisy_factorised=cfg.noisy_factorised, dropout_rate=cfg.dropout_rate,
    )


def noise_rngs(cfg: A3CConfig, iteration_key: jax.Array, t) -> dict:
    """Named rng streams for step t of a rollout: per-step keys, or one key per iteration (Table 2.5)."""
    act_key, weight_key = jax.random.split(iteration_key)
    return {
        STOCHASTIC_STREAM: jax.random.fold_in(act_key, t) if cfg.activation_noise == "step" else act_key,
        NOISY_STREAM: jax.random.fold_in(weight_key, t) if cfg.weight_noise == "step" else weight_key,
    }


class Trainer(NamedTuple):
    cfg: A3CConfig
    env: Any
    network: ActorCritic
    init: Any  # rng -> LearnerState
    run_chunk: Any  # LearnerState -> (LearnerState, metrics), jitted, data-parallel
    place: Any  # LearnerState -> the same, laid out on the device mesh
    restore: Any  # LearnerState read from disk -> a state to continue from (new episodes for Atari)
    train: Any  # rng -> (LearnerState, per-chunk metrics): the whole run, one jitted program
    policy: Any  # (params, carry[B], obs[B], reset[B], keys[B], deterministic) -> (carry, out)


def make_train(cfg: A3CConfig, num_devices: int = 1, env_seed: int = 0) -> Trainer:
    """``env_seed`` seeds envs that live outside JAX (Atari emulators); gymnax envs take their
    keys from the ``rng`` given to ``init``/``train``."""
    env = envs.make(cfg.env)
    if cfg.num_envs % num_devices:
        raise ValueError(f"num_envs={cfg.num_envs} must be divisible by --devices={num_devices}")
    if env.external and num_devices > 1:
        raise ValueError(f"env {cfg.env!r} runs its emulators outside JAX and cannot be split over devices; "
                         f"use --devices=1")
    pool = env.open(cfg.num_envs, env_seed)
    mesh = parallel.make_mesh(num_devices)
    axis = parallel.axis_name(mesh)  # the update's axis_name for collectives (None on one device)
    network = make_network(cfg, env.num_actions)
    optimizer = optax.chain(
        optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(cfg.learning_rate, eps=cfg.adam_eps)
    )

    def policy(params, carry, obs, reset, iteration_keys, t, deterministic=False):
        """Batched single step: each env has its own noise key (its own sampled activations)."""

        def one(carry, obs, reset, key):
            return network.apply(params, carry, obs, reset, deterministic, rngs=noise_rngs(cfg, key, t))

        return jax.vmap(one)(carry, obs, reset, iteration_keys)

    def init(rng: jax.Array) -> LearnerState:
        param_key, env_key = jax.random.split(rng)
        env_rng = jax.random.split(env_key, cfg.num_envs)
        reset_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(env_rng)
        obs, env_state = pool.reset(reset_keys)
        p_keys = jax.random.split(param_key, 3)
        carry1 = network.initial_carry()
        params = network.init(
            {"params": p_keys[0], STOCHASTIC_STREAM: p_keys[1], NOISY_STREAM: p_keys[2]},
            carry1, obs[0], jnp.array(True),
        )
        carry = jax.tree.map(lambda c: jnp.broadcast_to(c, (cfg.num_envs,) + c.shape), carry1)
        return LearnerState(
            params=params, opt_state=optimizer.init(params), env_state=env_state, obs=obs, carry=carry,
            reset=jnp.ones((cfg.num_envs,), bool), env_rng=env_rng,
            episode_return=jnp.zeros((cfg.num_envs,), jnp.float32), update_step=jnp.zeros((), jnp.int32),
        )

    def rollout(state: LearnerState, iteration_keys, step_keys):
        params = state.params

        def step(c, t):
            env_state, obs, carry, reset, ep_return, return_sum, episodes = c
            keys = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, t)))(step_keys)
            carry, out = policy(params, carry, obs, reset, iteration_keys, t)
            action = jax.vmap(jax.random.categorical)(keys[:, 0], out.logits)
            res = pool.step(keys[:, 1], env_state, action)
            # Time-limit bootstrap: V(final obs) in the same episode, computed only when needed.
            t_next = t + 1
            trunc_value = jax.lax.cond(
                jnp.any(res.truncated),
                lambda: policy(params, carry, res.final_obs, jnp.zeros_like(reset), iteration_keys, t_next)[1].value,
                lambda: jnp.zeros_like(out.value),
            )
            done = res.terminated | res.truncated
            ep_return = ep_return + res.reward
            return_sum = return_sum + jnp.where(done, ep_return, 0.0)  # per env: no cross-device sums here
            episodes = episodes + done
            ep_return = jnp.where(done, 0.0, ep_return)
            trans = Trajectory(obs, reset, action, res.reward, res.terminated, res.truncated,
                               jnp.where(res.truncated, trunc_value, 0.0))
            return (res.state, res.obs, carry, done, ep_return, return_sum, episodes), trans

        init_c = (state.env_state, state.obs, state.carry, state.reset, state.episode_return,
                  jnp.zeros_like(state.episode_return), jnp.zeros_like(state.reset, jnp.int32))
        c, traj = jax.lax.scan(step, init_c, jnp.arange(cfg.rollout_len))
        env_state, obs, carry, reset, ep_return, return_sum, episodes = c
        _, last_out = policy(params, carry, obs, reset, iteration_keys, cfg.rollout_len)
        new_state = state.replace(env_state=env_state, obs=obs, carry=carry, reset=reset, episode_return=ep_return)
        return new_state, traj, last_out.value, (return_sum, episodes)

    def loss_fn(params, init_carry, traj: Trajectory, bootstrap_value, iteration_keys):
        # The rollout's forward pass again (same noise), torso and heads batched over T×B.
        out = unroll(network, params, init_carry, traj.obs, traj.reset, iteration_keys,
                     lambda key, t: noise_rngs(cfg, key, t))
        values = out.value  # [T, B]
        chex.assert_equal_shape([values, traj.reward])
        values_sg = jax.lax.stop_gradient(values)
        next_values = jnp.concatenate([values_sg[1:], bootstrap_value[None]], 0)
        next_values = jnp.where(traj.truncated, traj.truncation_value, next_values)
        rewards = jnp.clip(traj.reward, -1.0, 1.0) if cfg.reward_clip else traj.reward
        discounts = cfg.gamma * (1.0 - traj.terminated.astype(jnp.float32))
        ends = traj.terminated | traj.truncated
        estimator = jax.vmap(nstep_returns_and_gae, in_axes=(1, 1, 1, 1, 1, None), out_axes=1)
        returns, advantages = estimator(rewards, values_sg, next_values, discounts, ends, cfg.gae_tau)
        dist = distrax.Categorical(logits=out.logits)
        # Alg. 1 accumulates λ ∂A_t²/∂θ; we keep the conventional ½ (λ·½A²) and average over T×B.
        value_loss = 0.5 * jnp.mean(jnp.square(returns - values))
        policy_loss = -jnp.mean(dist.log_prob(traj.action) * advantages)  # eq. 2.2
        entropy = jnp.mean(dist.entropy())
        kl = jnp.mean(out.kl)  # Alg. 3: ψ · KL(N(μ_t, σ_t²) ‖ N(μ_t^p, σ²))
        loss = policy_loss + cfg.value_loss_coef * value_loss - cfg.entropy_coef * entropy + cfg.kl_coef * kl
        metrics = {"loss": loss, "policy_loss": policy_loss, "value_loss": value_loss, "entropy": entropy,
                   "kl": kl, "value_mean": jnp.mean(values)}
        return loss, metrics

    def update(state: LearnerState, _):
        keys = jax.vmap(lambda k: jax.random.split(k, 3))(state.env_rng)
        env_rng, iteration_keys, step_keys = keys[:, 0], keys[:, 1], keys[:, 2]
        init_carry = state.carry
        state, traj, bootstrap_value, (return_sum, episodes) = rollout(state, iteration_keys, step_keys)
        grads, metrics = jax.grad(loss_fn, has_aux=True)(parallel.per_device(state.params, axis), init_carry, traj,
                                                          bootstrap_value, iteration_keys)
        grads = parallel.pmean(grads, axis)  # the gradient all-reduce of data-parallel training
        metrics = parallel.pmean(metrics, axis)
        metrics["grad_norm"] = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        state = state.replace(params=params, opt_state=opt_state, env_rng=env_rng,
                              update_step=state.update_step + 1)
        return state, (metrics, parallel.psum(jnp.sum(return_sum), axis), parallel.psum(jnp.sum(episodes), axis))

    def summarise(per_update) -> dict:
        metrics, return_sums, episodes = per_update
        metrics = jax.tree.map(jnp.mean, metrics)
        total = jnp.sum(episodes)
        metrics["episodes"] = total
        metrics["episode_return"] = jnp.where(total > 0, jnp.sum(return_sums) / jnp.maximum(total, 1), jnp.nan)
        return metrics

    abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
    specs = state_specs(abstract)
    run_chunk, scan_chunk = parallel.chunk_programs(update, cfg.updates_per_chunk, summarise, mesh, specs,
                                                    cfg.python_update_loop)
    shardings = parallel.to_shardings(mesh, specs)

    def place(state: LearnerState) -> LearnerState:
        """Lay a state out as ``run_chunk`` returns it, so the chunk compiles exactly once."""
        return jax.device_put(state, shardings)

    @jax.jit
    def train(rng):
        def body(state, _):
            return scan_chunk(state)  # the whole run as one program, whatever ``update_loop`` says

        return jax.lax.scan(body, init(rng), None, cfg.num_chunks)

    def reattach(state: LearnerState) -> LearnerState:
        """New episodes for envs whose state a checkpoint cannot hold; the rest is kept."""
        reset_keys = jax.vmap(lambda k: jax.random.fold_in(k, 0))(state.env_rng)
        obs, env_state = pool.reset(reset_keys, state.env_state)
        carry1 = network.initial_carry()
        return state.replace(
            env_state=env_state, obs=obs, reset=jnp.ones_like(state.reset),
            carry=jax.tree.map(lambda c: jnp.broadcast_to(c, (cfg.num_envs,) + c.shape), carry1),
            episode_return=jnp.zeros_like(state.episode_return),
        )

    jit_init, jit_reattach = jax.jit(init), jax.jit(reattach)

    def start(rng):
        pool.prepare()  # Atari: async_reset, received by the program's first reset
        return place(jit_init(rng))

    def restore(state: LearnerState) -> LearnerState:
        if not env.external:
            return place(state)  # gymnax: the checkpoint holds everything: bit-identical resume
        pool.prepare()
        return place(jit_reattach(state))

    def train_whole(rng):
        pool.prepare()
        return train(rng)

    return Trainer(cfg, env, network, start, run_chunk, place, restore, train_whole, policy)
