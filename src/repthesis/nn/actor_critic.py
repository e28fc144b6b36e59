"""The A3C-LSTM family network of thesis chapter 2 (Fig. 2.1, Alg. 1–3, App. 2.E–2.G).

obs → torso → LSTM (h_t) → two FC pathways [FC1(h_t), FC2(h_t)] → value and policy heads.
Which pathway is stochastic is a switch:

* ``unit='none'``   A3C-LSTM: w_t = FC1(h_t), k_t = FC2(h_t) (Alg. 2).
* ``unit='sa'``     SA3C: z_t ~ N(FC1(h_t), σ²) with fixed log σ², k_t deterministic (Alg. 1).
* ``unit='fsa'``    FSA3C: both pathways Gaussian with fixed σ² (§2.4.1).
* ``unit='hp'``     HPA3C: z_t ~ N(μ_t, σ_t²) with learned σ_t, prior N(f^p(z_{t−1}), σ²),
                    KL returned for the ψ-weighted penalty, CReLU normalisation (Alg. 3, App. 2.E).
* ``unit='dropout'`` dropout units replace SA3C's Gaussian units (App. 2.F).

``placement`` routes the stochastic pathway to both heads ('shared', the thesis's design),
or to only the value / only the policy head, the other head seeing the mean (§2.6.1).
``noisy`` adds NoisyNet layers: 'v1' heads, 'v2' FC1/FC2, 'v3' both (App. 2.G, Fig. 2.G.1).
The module is per-example: callers vmap it over environments, each with its own rng.
``__call__`` is one step; ``encode`` / ``core`` / ``head`` are its stages (``head`` = ``draw``,
the activation samples, then ``readout``, HPA3C's KL and the heads), so a learner can run the
torso and heads batched over a whole rollout and only the LSTM in a scan; the stages draw
exactly the noise ``__call__`` draws for the same rngs.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from repthesis.nn.core import ResetLSTM
from repthesis.nn.stochastic import (
    NoisyDense,
    crelu,
    dropout_sample,
    gaussian_kl,
    gaussian_sample,
)
from repthesis.nn.torso import make_torso

UNITS = ("none", "sa", "fsa", "hp", "dropout")
PLACEMENTS = ("shared", "value", "policy")
NOISY = ("none", "v1", "v2", "v3")


class ActorCriticOutput(NamedTuple):
    logits: jax.Array  # [A] policy logits
    value: jax.Array  # [] state value V_t
    kl: jax.Array  # [] KL to the HPA3C prior (0 for other units)


class Draws(NamedTuple):
    """What ``ActorCritic.draw`` samples at one step (inputs of ``readout``)."""

    mean: jax.Array  # FC1(h_t): μ_t
    k_mean: jax.Array  # FC2(h_t)
    z: jax.Array  # the FC1 pathway's activation, sampled (or μ_t)
    k: jax.Array  # the FC2 pathway's activation, sampled for FSA3C (else FC2(h_t))
    log_var: jax.Array  # HPA3C's learned log σ_t² ([] zeros for other units)


class ActorCritic(nn.Module):
    num_actions: int
    torso: str = "mlp"
    torso_size: int = 256
    core_size: int = 128
    fc_size: int = 128  # units in each of FC1 and FC2 (thesis Atari: 512 + 512 = 1024)
    unit: str = "none"
    log_var: float = -4.0  # fixed log σ² of SA/FSA units, and HPA3C's prior variance
    placement: str = "shared"
    noisy: str = "none"
    noisy_factorised: bool = True
    dropout_rate: float = 0.25

    def setup(self):
        if self.unit not in UNITS:
            raise ValueError(f"unknown stochastic unit {self.unit!r}; valid: {', '.join(UNITS)}")
        noisy_fc = self.noisy in ("v2", "v3")
        noisy_heads = self.noisy in ("v1", "v3")
        self.encoder = make_torso(self.torso, self.torso_size)
        self.lstm = ResetLSTM(self.core_size)
        self.fc1 = self._dense(self.fc_size, noisy_fc)  # f_FC1 / f_mean
        self.fc2 = self._dense(self.fc_size, noisy_fc)  # f_FC2 / f_d
        if self.unit == "hp":
            # f_var: learned log σ_t². Its bias starts at the prior's log σ² (the thesis gives no init): with
            # the default zero bias (σ_t ≈ 1, where SA3C's is e^−3) HPA3C reached MAP 1.00 on Breakout-MinAtar
            # at 1M steps against 3.00 with this init (ablation_ch2 --budget=cpu, 3 seeds).
            self.fc_log_var = nn.Dense(self.fc_size, bias_init=nn.initializers.constant(self.log_var))
            self.prior_mean = nn.Dense(self.fc_size)  # μ^p_t = f^p(z_{t−1})
        self.value_head = self._dense(1, noisy_heads)
        self.policy_head = self._dense(self.num_actions, noisy_heads)

    def initial_carry(self):
        lstm = ResetLSTM.initial_carry(self.core_size)
        return (lstm, jnp.zeros((self.fc_size,), jnp.float32))  # (LSTM (c, h), z_{t−1} for HPA3C)

    def _dense(self, features: int, noisy: bool):
        if noisy:
            return NoisyDense(features, factorised=self.noisy_factorised)
        return nn.Dense(features)

    @staticmethod
    def _call(layer, x, deterministic: bool):
        return layer(x, deterministic) if isinstance(layer, NoisyDense) else layer(x)

    def __call__(self, carry, obs: jax.Array, reset: jax.Array, deterministic: bool = False):
        """One step. ``reset`` marks the first observation of an episode; returns (carry, output)."""
        lstm_carry, z_prev = carry
        lstm_carry, h = self.core(lstm_carry, self.encode(obs), reset)
        z_next, out = self.head(h, z_prev, reset, deterministic)
        return (lstm_carry, z_next), out

    def encode(self, obs: jax.Array) -> jax.Array:
        """The torso; deterministic."""
        return self.encoder(obs)

    def core(self, lstm_carry, x: jax.Array, reset: jax.Array):
        """The LSTM, its memory zeroed where ``reset``; returns (lstm_carry, h_t)."""
        return self.lstm(lstm_carry, x, reset)

    def head(self, h: jax.Array, z_prev: jax.Array, reset: jax.Array, deterministic: bool = False):
        """FC pathways, stochastic units and the two heads on h_t; returns (z_t for the carry, output)."""
        return self.readout(self.draw(h, deterministic), z_prev, reset, deterministic)

    def draw(self, h: jax.Array, deterministic: bool = False) -> Draws:
        """The FC pathways and every activation sample of ``head``; nothing here reads z_{t−1}."""
        mean = self._call(self.fc1, h, deterministic)
        k_mean = self._call(self.fc2, h, deterministic)
        k = k_mean
        log_var_t = jnp.zeros((), jnp.float32)
        if self.unit == "none":
            z = mean
        elif self.unit in ("sa", "fsa"):
            z = gaussian_sample(self, mean, self.log_var, deterministic)
            if self.unit == "fsa":
                k = gaussian_sample(self, k, self.log_var, deterministic)
        elif self.unit == "hp":
            log_var_t = self.fc_log_var(h)
            z = gaussian_sample(self, mean, log_var_t, deterministic)
        else:  # dropout
            z = dropout_sample(self, mean, self.dropout_rate, deterministic)
        return Draws(mean, k_mean, z, k, log_var_t)

    def readout(self, d: Draws, z_prev: jax.Array, reset: jax.Array, deterministic: bool = False):
        """HPA3C's prior KL and the two heads on the drawn activations; returns (z_t, output)."""
        z_next = jnp.where(reset, jnp.zeros_like(z_prev), z_prev)
        kl = jnp.zeros((), jnp.float32)
        activation = nn.leaky_relu
        if self.unit == "hp":
            kl = gaussian_kl(d.mean, d.log_var, self.prior_mean(z_next), self.log_var)
            z_next = d.z
            activation = crelu  # App. 2.E: CReLU normalises HPA3C's stochastic activations
        stochastic_features = jnp.concatenate([activation(d.z), activation(d.k)], -1)
        mean_features = jnp.concatenate([activation(d.mean), activation(d.k_mean)], -1)
        value_in = mean_features if self.placement == "policy" else stochastic_features
        policy_in = mean_features if self.placement == "value" else stochastic_features
        value = self._call(self.value_head, value_in, deterministic)[..., 0]
        logits = self._call(self.policy_head, policy_in, deterministic)
        return z_next, ActorCriticOutput(logits, value, kl)


def unroll(network: ActorCritic, params, carry, obs: jax.Array, reset: jax.Array, keys: jax.Array, rngs_for,
           deterministic: bool = False) -> ActorCriticOutput:
    """Outputs [T, B] over a rollout, equal to stepping ``network`` T times from ``carry`` [B]
    with rngs ``rngs_for(keys[b], t)``, but with the torso and heads batched over all T×B steps
    and only the LSTM in a scan: a conv torso's backward pass inside a scan is ~15× slower on CPU,
    and one batched pass is cheaper on every backend. HPA3C's z_t does not depend on z_{t−1}
    (only its prior does), so every step's activations are drawn first and the readout (prior KL,
    heads) then runs with z_{t−1} known."""
    lstm0, z0 = carry
    x = jax.vmap(jax.vmap(lambda o: network.apply(params, o, method=network.encode)))(obs)
    core = jax.vmap(lambda c, x, r: network.apply(params, c, x, r, method=network.core))
    _, h = jax.lax.scan(lambda c, xs: core(c, *xs), lstm0, (x, reset))

    def per_step(method, *xs):  # xs [T, B, ...]; env b at step t draws with rngs_for(keys[b], t)
        def one(key, t, *x):
            return network.apply(params, *x, deterministic, rngs=rngs_for(key, t), method=method)

        per_env = jax.vmap(one, in_axes=(0, None) + (0,) * len(xs))
        return jax.vmap(per_env, in_axes=(None, 0) + (0,) * len(xs))(keys, jnp.arange(obs.shape[0]), *xs)

    draws = per_step(network.draw, h)
    if network.unit == "hp":
        z_prev = jnp.concatenate([z0[None], draws.z[:-1]], 0)
    else:
        z_prev = jnp.broadcast_to(z0, h.shape[:2] + z0.shape[1:])
    return per_step(network.readout, draws, z_prev, reset)[1]
