"""The A3C-family network: every switch gets gradients everywhere, resets, MAP determinism."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from repthesis.nn import ActorCritic
from repthesis.nn.actor_critic import unroll as batched_unroll
from repthesis.nn.stochastic import NOISY_STREAM, STOCHASTIC_STREAM

OBS = jnp.linspace(-1, 1, 10 * 10 * 4).reshape(10, 10, 4)


def make(**kw):
    net = ActorCritic(num_actions=3, torso_size=16, core_size=8, fc_size=8, **kw)
    rngs = {"params": jax.random.PRNGKey(0), STOCHASTIC_STREAM: jax.random.PRNGKey(1), NOISY_STREAM: jax.random.PRNGKey(2)}
    params = net.init(rngs, net.initial_carry(), OBS, jnp.array(True))
    return net, params


def unroll(net, params, key, steps=3, deterministic=False):
    """Two-step-dependent loss so recurrent parameters (and HPA3C's prior) get gradients."""
    carry, total = net.initial_carry(), 0.0
    for t in range(steps):
        rngs = {STOCHASTIC_STREAM: jax.random.fold_in(key, t), NOISY_STREAM: jax.random.fold_in(key, 100 + t)}
        carry, out = net.apply(params, carry, OBS * (t + 1), jnp.array(t == 0), deterministic, rngs=rngs)
        total = total + jnp.sum(out.logits ** 2) + out.value ** 2 + out.kl
    return total


CASES = [dict(unit=u) for u in ("none", "sa", "fsa", "hp", "dropout")] + [
    dict(noisy=v) for v in ("v1", "v2", "v3")] + [dict(unit="sa", noisy="v1", noisy_factorised=False)]


@pytest.mark.parametrize("kw", CASES, ids=lambda kw: "-".join(f"{v}" for v in kw.values()))
def test_gradient_reaches_every_parameter(kw):
    net, params = make(**kw)
    grads = jax.grad(unroll, argnums=1)(net, params, jax.random.PRNGKey(3))
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    dead = [jax.tree_util.keystr(path) for path, g in flat if not np.any(np.asarray(g) != 0)]
    assert not dead, f"no gradient reaches {dead}"


@pytest.mark.parametrize("kw", [dict(unit="sa"), dict(unit="fsa"), dict(unit="hp"), dict(unit="dropout"),
                                dict(noisy="v3")], ids=str)
def test_same_rng_same_output_different_rng_different_output_map_deterministic(kw):
    net, params = make(**kw)
    f = lambda key, det=False: unroll(net, params, key, deterministic=det)  # noqa: E731
    assert f(jax.random.PRNGKey(7)) == f(jax.random.PRNGKey(7))
    assert f(jax.random.PRNGKey(7)) != f(jax.random.PRNGKey(8))
    assert f(jax.random.PRNGKey(7), True) == f(jax.random.PRNGKey(8), True)


def test_reset_zeroes_the_memory():
    net, params = make(unit="hp")
    carry, _ = net.apply(params, net.initial_carry(), OBS, jnp.array(True), True)
    _, fresh = net.apply(params, net.initial_carry(), -OBS, jnp.array(True), True)
    _, after_reset = net.apply(params, carry, -OBS, jnp.array(True), True)
    _, continued = net.apply(params, carry, -OBS, jnp.array(False), True)
    np.testing.assert_allclose(after_reset.logits, fresh.logits, rtol=1e-6)
    assert not np.allclose(continued.logits, fresh.logits)


def test_hp_starts_with_the_prior_variance():
    """f_var's bias starts at the prior's log σ², so HPA3C's first activation noise is the SA3C scale
    (a zero bias, σ_t ≈ 1, learned much more slowly on Breakout-MinAtar)."""
    net, params = make(unit="hp", log_var=-6.0)
    h = jnp.tanh(jnp.linspace(-2, 2, 5 * 8).reshape(5, 8))
    draws = net.apply(params, h, True, method=net.draw)
    assert draws.log_var.shape == (5, 8)
    assert abs(float(jnp.mean(draws.log_var)) + 6.0) < 0.5


@pytest.mark.parametrize("placement", ["value", "policy"])
def test_placement_routes_noise_to_one_head_only(placement):
    net, params = make(unit="sa", placement=placement, log_var=0.0)
    outs = [net.apply(params, net.initial_carry(), OBS, jnp.array(True), rngs={STOCHASTIC_STREAM: jax.random.PRNGKey(k)})[1]
            for k in (1, 2)]
    value_noisy = not np.allclose(outs[0].value, outs[1].value)
    policy_noisy = not np.allclose(outs[0].logits, outs[1].logits)
    assert (value_noisy, policy_noisy) == ((True, False) if placement == "value" else (False, True))


@pytest.mark.parametrize("kw", CASES + [dict(unit="hp", noisy="v3")], ids=lambda kw: "-".join(f"{v}" for v in kw.values()))
def test_batched_unroll_equals_stepping_with_the_same_noise(kw):
    """The learner's batched forward must see the very activations the rollout sampled."""
    net, params = make(**kw)
    T, B = 4, 3
    obs = jax.random.normal(jax.random.PRNGKey(5), (T, B) + OBS.shape)
    reset = jnp.array([[True, True, True], [False, True, False], [False, False, False], [True, False, False]])
    keys = jax.random.split(jax.random.PRNGKey(9), B)
    rngs_for = lambda key, t: {STOCHASTIC_STREAM: jax.random.fold_in(key, t), NOISY_STREAM: key}  # noqa: E731
    carry = jax.tree.map(lambda c: jnp.broadcast_to(c, (B,) + c.shape) + 0.1, net.initial_carry())
    batched = batched_unroll(net, params, carry, obs, reset, keys, rngs_for)
    stepped = []
    for t in range(T):
        carry, out = jax.vmap(lambda c, o, r, k: net.apply(params, c, o, r, rngs=rngs_for(k, t)))(
            carry, obs[t], reset[t], keys)
        stepped.append(out)
    for name in ("logits", "value", "kl"):
        np.testing.assert_allclose(getattr(batched, name), np.stack([getattr(o, name) for o in stepped]),
                                   rtol=2e-5, atol=2e-5, err_msg=name)
    if kw.get("unit") in ("sa", "hp", "dropout"):  # and the noise really differs between steps
        assert not np.allclose(batched.logits[1], batched.logits[2])
