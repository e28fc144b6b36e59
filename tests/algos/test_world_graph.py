"""World-graph discovery (Alg. 6): the VAE's regularisers are the HardKuma closed forms, gradients
reach every VAE and π_g parameter, π_g learns to reach nearby goals on the small maze, and the CLI
writes the graph and resumes (the state bit-identically), and refuses bad input in one line."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np

from repthesis import registry, train
from repthesis.gen import hardkuma as hk
from repthesis.rl.world_graph import WorldGraph

TINY = dict(batch_size=16, iterations_per_chunk=10, total_iterations=10, waypoint_warmup=5, edge_walks=4)


def make(**kw):
    cfg = registry.make_config("world-graph", {**TINY, **kw})
    trainer = registry.get_algo("world-graph").make_train(cfg)
    return trainer, trainer.init(jax.random.PRNGKey(0))


def test_vae_terms_are_the_hardkuma_closed_forms_and_gradients_reach_every_parameter():
    trainer, state = make()
    vae, t = trainer.vae, trainer.cfg.rollout_len
    rng = np.random.default_rng(0)
    cells = np.argwhere(~trainer.env.walls)[rng.integers(0, 50, (4, t + 1))]
    batch = {"states": jnp.asarray(cells[..., 0] * trainer.env.side + cells[..., 1]),
             "actions": jnp.asarray(rng.integers(0, 4, (4, t)))}
    loss, (terms, metrics, p_actions) = trainer.losses(state.params, state.multipliers, batch, jax.random.PRNGKey(1))
    a = vae.apply(state.params["vae"], batch["states"], batch["actions"], method=vae.posterior)[:, 1:-1]
    alpha, beta = (x[:, 1:-1] for x in vae.apply(state.params["vae"], batch["states"], method=vae.prior))
    p0 = hk.prob_zero(a, jnp.ones_like(a))
    np.testing.assert_allclose(float(terms["l0"]), float(jnp.mean(hk.l0_loss(p0, 5.0))) / (t - 1) ** 2, rtol=1e-5)
    np.testing.assert_allclose(float(terms["transitions"]),
                               float(jnp.mean(hk.transition_loss(p0, 10.0))) / (t - 1) ** 2, rtol=1e-5)
    np.testing.assert_allclose(float(terms["kl"]), float(jnp.mean(hk.kl_kuma_beta(a, jnp.ones_like(a), alpha, beta))),
                               rtol=1e-5)
    # Eq. 3.12 per trajectory, summed over the 4 trajectories: recon over T actions, KL over the
    # T − 1 free latents, L0 / LT squared counts (the λ step's terms are these per step)
    lam, n = state.multipliers, 4
    expected = n * (t * float(metrics["recon"]) + float(lam["kl"] * terms["kl"]) * (t - 1)
                    + (t - 1) ** 2 * float(lam["l0"] * terms["l0"] + lam["transitions"] * terms["transitions"]))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    assert p_actions.shape == (4, t) and np.all((np.asarray(p_actions) > 0) & (np.asarray(p_actions) < 1))
    grads = jax.grad(lambda p: trainer.losses(p, state.multipliers, batch, jax.random.PRNGKey(1))[0])(state.params)
    flat = jax.tree_util.tree_flatten_with_path(grads["vae"])[0]
    dead = [jax.tree_util.keystr(k) for k, g in flat if not np.any(np.asarray(g) != 0)]
    assert not dead, f"no gradient reaches {dead}"
    exact, _ = make(kl_terms=0)  # the whole series: the exact KL, never below 0
    terms0 = exact.losses(state.params, state.multipliers, batch, jax.random.PRNGKey(1))[1][0]
    np.testing.assert_allclose(float(terms0["kl"]), float(jnp.mean(hk.kl_kuma1_beta(a, alpha, beta))), rtol=1e-5)
    assert float(terms0["kl"]) >= 0


def test_goal_conditioned_policy_learns_to_reach_nearby_goals_on_the_small_maze():
    trainer, state = make(batch_size=32, iterations_per_chunk=50, policy_learning_rate=1e-3)
    key = jax.random.PRNGKey(7)
    before = trainer.goal_success(state.params["policy"], key, num=256, walk_len=8)
    for _ in range(3):
        state, metrics = trainer.run_chunk(state)
    after = trainer.goal_success(state.params["policy"], key, num=256, walk_len=8)
    assert after > 0.9 and after > before + 0.2, (before, after)
    # the multipliers moved by gradient ascent on their (non-negative) terms, from App. 3.C.1's values
    assert all(float(state.multipliers[k]) >= v for k, v in hk.LAGRANGE_INIT.items())
    assert int(state.num_waypoints) == round(0.2 * int((~trainer.env.walls).sum())) + 1  # V_p after the warm-up


def run_cli(argv, capsys):
    code = train.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_world_graph_state_resumes_bit_identically(tmp_path):
    from repthesis.utils.checkpoint import CheckpointStore

    trainer, state = make(batch_size=8, iterations_per_chunk=3)
    straight, _ = trainer.run_chunk(trainer.run_chunk(state)[0])
    half, _ = trainer.run_chunk(state)
    store = CheckpointStore(str(tmp_path / "ckpt"))
    store.save(3, half)
    resumed, _ = trainer.run_chunk(trainer.restore(store.restore_latest(trainer.init(jax.random.PRNGKey(5)))[1]))
    store.close()
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_world_graph_cli_writes_the_graph_resumes_and_refuses_bad_input(tmp_path, capsys):
    common = ["--algo=world-graph", "--batch-size=8", "--iterations-per-chunk=5", "--checkpoint-every=1",
              "--waypoint-warmup=3", "--edge-walks=4", "--no-progress"]
    a = tmp_path / "a"
    code, out, err = run_cli([*common, "--total-iterations=5", f"--out={a}"], capsys)
    assert code == 0, err
    for name in ("graph.json", "graph.png", "curve.png", "metrics.csv", "config.json"):
        assert (a / name).exists(), name
    graph = WorldGraph.load(a / "graph.json")
    assert tuple(graph.waypoints[0]) == (1, 1) and len(graph.waypoints) > 1
    weights = graph.weights()
    assert all(weights[i, j] == len(acts) for (i, j), acts in graph.edges.items())
    code, out, err = run_cli([*common, "--total-iterations=10", f"--out={a}", "--resume"], capsys)
    assert code == 0 and "resumed from checkpoint at iteration 5" in out, err
    assert [int(r["iteration"]) for r in csv.DictReader(open(a / "metrics.csv"))] == [5, 10]
    assert json.load(open(a / "config.json"))["config"]["total_iterations"] == 5  # the budget is the only change
    for argv, needle in ((["--maze=huge"], "valid: small, medium, large"), (["--devices=2"], "valid: --devices=1"),
                         (["--l0-target=30"], "l0_target=30.0 must be in")):
        code, out, err = run_cli(["--algo=world-graph", *argv, f"--out={tmp_path / 'x'}"], capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
