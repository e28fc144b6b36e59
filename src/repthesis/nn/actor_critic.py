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

    def initial_carry(self):
        lstm = ResetLSTM.initial_carry(self.core_size)
        return (lstm, jnp.zeros((self.fc_size,), jnp.float32))  # (LSTM (c, h), z_{t−1} for HPA3C)

    def _dense(self, features: int, noisy: bool, deterministic: bool, name: str):
        if noisy:
            layer = NoisyDense(features, factorised=self.noisy_factorised, name=name)
            return lambda x: layer(x, deterministic)
        return nn.Dense(features, name=name)

    @nn.compact
    def __call__(self, carry, obs: jax.Array, reset: jax.Array, deterministic: bool = False):
        """One step. ``reset`` marks the first observation of an episode; returns (carry, output)."""
        lstm_carry, z_prev = carry
        z_prev = jnp.where(reset, jnp.zeros_like(z_prev), z_prev)
        x = make_torso(self.torso, self.torso_size)(obs)
        lstm_carry, h = ResetLSTM(self.core_size, name="core")(lstm_carry, x, reset)

        noisy_fc = self.noisy in ("v2", "v3")
        noisy_heads = self.noisy in ("v1", "v3")
        mean = self._dense(self.fc_size, noisy_fc, deterministic, "fc1")(h)  # f_FC1 / f_mean
        k_mean = self._dense(self.fc_size, noisy_fc, deterministic, "fc2")(h)  # f_FC2 / f_d
        k = k_mean
        kl = jnp.zeros((), jnp.float32)
        activation = nn.leaky_relu

        if self.unit == "none":
            z, z_next = mean, z_prev
        elif self.unit in ("sa", "fsa"):
            z = gaussian_sample(self, mean, self.log_var, deterministic)
            if self.unit == "fsa":
                k = gaussian_sample(self, k, self.log_var, deterministic)
            z_next = z_prev
        elif self.unit == "hp":
            log_var_t = nn.Dense(self.fc_size, name="fc_log_var")(h)  # f_var: learned log σ_t²
            prior_mean = nn.Dense(self.fc_size, name="prior_mean")(z_prev)  # μ^p_t = f^p(z_{t−1})
            z = gaussian_sample(self, mean, log_var_t, deterministic)
            kl = gaussian_kl(mean, log_var_t, prior_mean, self.log_var)
            z_next = z
            activation = crelu  # App. 2.E: CReLU normalises HPA3C's stochastic activations
        elif self.unit == "dropout":
            z = dropout_sample(self, mean, self.dropout_rate, deterministic)
            z_next = z_prev
        else:
            raise ValueError(f"unknown stochastic unit {self.unit!r}; valid: {', '.join(UNITS)}")

        stochastic_features = jnp.concatenate([activation(z), activation(k)], -1)
        mean_features = jnp.concatenate([activation(mean), activation(k_mean)], -1)
        value_in = mean_features if self.placement == "policy" else stochastic_features
        policy_in = mean_features if self.placement == "value" else stochastic_features
        value = self._dense(1, noisy_heads, deterministic, "value")(value_in)[..., 0]
        logits = self._dense(self.num_actions, noisy_heads, deterministic, "policy")(policy_in)
        return (lstm_carry, z_next), ActorCriticOutput(logits, value, kl)
