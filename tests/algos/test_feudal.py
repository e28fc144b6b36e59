"""Feudal HRL of chapter 3 (§3.4): traversal replays the planned route step by step, the Manager's
losses count only its decision steps and the Worker's only its own (not traversal) steps,
gradients reach both levels, π_g initialises both encoders, V_rand keeps the graph's size, the
CLI trains and validates both algorithms, a bad --graph is refused in one line, and 4 devices
compute the update of 1."""

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from repthesis import registry, train
from repthesis.algos import world_graph
from repthesis.envs import maze
from repthesis.rl import world_graph as wg
from repthesis.utils.checkpoint import CheckpointStore

TINY = dict(num_envs=4, rollout_len=12, updates_per_chunk=2, hidden=32, val_episodes=2, total_env_steps=96)


@pytest.fixture(scope="module")
def graph_dir(tmp_path_factory):
    """A world-graph run directory of the small maze without training: waypoints every few cells of
    the start's BFS tree, edges from the shortest paths between them, π_g's initial checkpoint."""
    out = tmp_path_factory.mktemp("graph")
    walls = maze.make_layout("small")
    cells = np.argwhere(~walls)
    pick = cells[((cells[:, 0] + cells[:, 1]) % 6 == 2) & ~np.all(cells == 1, -1)]
    waypoints = np.concatenate([[[1, 1]], pick])
    rng = np.random.default_rng(0)
    edges = {}
    for _ in range(100):
        walk, _ = wg.random_walks(walls, waypoints, 60, rng)
        edges = wg.edges_from_rollouts(waypoints, walk, edges)
    wg.WorldGraph(walls.shape[0], wg.walls_hash(walls), waypoints, edges).save(out / "graph.json")
    cfg = world_graph.WorldGraphConfig(maze="small", batch_size=4)
    json.dump({"algo": "world-graph", "seed": 0, "config": dataclasses.asdict(cfg)}, open(out / "config.json", "w"))
    trainer = world_graph.make_train(cfg)
    store = CheckpointStore(str(out / "checkpoints"))
    store.save(1, trainer.init(jax.random.PRNGKey(3)))
    store.close()
    return out


def make(algo, graph_dir, **kw):
    cfg = registry.make_config(algo, {**TINY, "graph": str(graph_dir), **kw})
    return registry.get_algo(algo).make_train(cfg)


def test_traversal_replays_the_planned_route_without_worker_cost(graph_dir):
    trainer = make("feudal-wn", graph_dir, pi_g_init=False, rollout_len=60)
    state = trainer.init(jax.random.PRNGKey(0))
    c = trainer.consts
    lengths = np.asarray(c.route_len)[0]
    goal = int(np.argmax(lengths))  # the farthest waypoint from the start (waypoint 0)
    assert 6 <= lengths[goal] < 59
    far = np.asarray(c.waypoints)[goal]
    b = trainer.cfg.num_envs
    state = state.replace(need_goal=jnp.zeros(b, bool), goal=jnp.full(b, goal, jnp.int32),
                          narrow=jnp.tile(jnp.asarray(far), (b, 1)), wide_met=jnp.zeros(b, bool))
    _, traj, _, _ = trainer.rollout(state, jax.random.split(jax.random.PRNGKey(1), b), c)
    n = int(lengths[goal])
    route = wg.shortest_path(trainer.graph.weights(), 0, goal)
    planned = np.asarray(wg.traversal_actions(trainer.graph, route))
    np.testing.assert_array_equal(np.asarray(traj.action)[:n, 0], planned)
    pos = np.asarray(traj.pos)[:, 0]
    expected = np.cumsum(np.concatenate([[[1, 1]], maze.MOVES[planned]]), 0)
    np.testing.assert_array_equal(pos[:n + 1], expected)  # every step on the planned path
    assert tuple(pos[n]) == tuple(far)
    acted = np.asarray(traj.worker_acted)[:, 0]
    assert not acted[:n].any()  # the traversal's steps are not the Worker's
    w_reward = np.asarray(traj.worker_reward)[:n, 0]
    # no step cost while traversing; the arrival on g_w (= g_n here) pays the wide and narrow rewards
    np.testing.assert_allclose(w_reward, np.r_[np.zeros(n - 1), 2.0])
    assert bool(np.asarray(traj.worker_end)[n - 1, 0]) and bool(np.asarray(traj.decided)[n, 0])


def test_each_level_learns_only_from_its_own_steps_and_gets_gradients(graph_dir):
    trainer = make("feudal-wn", graph_dir, pi_g_init=False, rollout_len=40)
    state = trainer.init(jax.random.PRNGKey(0))
    c = trainer.consts
    keys = jax.random.split(jax.random.PRNGKey(2), trainer.cfg.num_envs)
    after, traj, _, _ = trainer.rollout(state, keys, c)
    last = (after.obs, after.env_state.pos, after.reset)
    loss, metrics = trainer.losses(state.params, state.carry, traj, last, c)
    decided, acted = np.asarray(traj.decided), np.asarray(traj.worker_acted)
    assert decided.any() and (~decided).any() and (~acted).any() and acted.any()
    # goals at steps where the Manager did not decide are never scored
    other = traj._replace(goal=jnp.where(traj.decided, traj.goal, (traj.goal + 1) % c.waypoints.shape[0]))
    np.testing.assert_allclose(float(trainer.losses(state.params, state.carry, other, last, c)[0]), float(loss),
                               rtol=1e-6)
    changed = traj._replace(goal=jnp.where(traj.decided, (traj.goal + 1) % c.waypoints.shape[0], traj.goal))
    assert abs(float(trainer.losses(state.params, state.carry, changed, last, c)[0]) - float(loss)) > 1e-6
    # actions of traversal steps are the route's, not the Worker's: they do not enter its loss
    replayed = traj._replace(action=jnp.where(traj.worker_acted, traj.action, (traj.action + 1) % 4))
    np.testing.assert_allclose(float(trainer.losses(state.params, state.carry, replayed, last, c)[0]), float(loss),
                               rtol=1e-6)
    grads = jax.grad(lambda p: trainer.losses(p, state.carry, traj, last, c)[0])(state.params)
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    dead = [jax.tree_util.keystr(k) for k, g in flat if not np.any(np.asarray(g) != 0)]
    assert not dead, f"no gradient reaches {dead}"
    assert np.isfinite(float(metrics["manager_entropy"])) and float(metrics["manager_entropy"]) > 0


def test_pi_g_initialises_both_encoders_and_random_waypoints_keep_the_graph_size(graph_dir):
    graph_trainer, graph_state = world_graph.load_run(str(graph_dir))
    encoder = graph_state.params["policy"]["params"]["encoder"]
    trainer = make("feudal-wn", graph_dir, waypoints="random", traversal=False, hidden=128)
    state = trainer.init(jax.random.PRNGKey(0))
    for part in ("manager", "worker"):
        for a, b in zip(jax.tree.leaves(state.params[part]["params"]["encoder"]), jax.tree.leaves(encoder)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    learned = wg.WorldGraph.load(graph_dir / "graph.json").waypoints
    rand = trainer.graph.waypoints
    assert len(rand) == len(learned) and tuple(rand[0]) == (1, 1) and len(trainer.graph.edges) > 0
    assert not maze.make_layout("small")[rand[:, 0], rand[:, 1]].any()
    assert {tuple(x) for x in rand} != {tuple(x) for x in learned}
    scratch = make("feudal-wn", graph_dir, pi_g_init=False, traversal=False, hidden=128).init(jax.random.PRNGKey(0))
    assert not np.allclose(np.asarray(scratch.params["worker"]["params"]["encoder"]["dense_0"]["kernel"]),
                           np.asarray(encoder["dense_0"]["kernel"]))


@pytest.mark.parametrize("env", ["maze-small-multigoal", "maze-small-door-key"])
def test_pi_g_worker_starts_the_worker_as_pi_g_towards_its_narrow_goal(graph_dir, env):
    """With pi_g_worker the Worker's logits for π_g's actions and its value equal π_g's for the
    narrow goal, whatever the wide goal; Door-Key's extra actions keep fresh weights."""
    from repthesis.nn.world_graph import GoalPolicy

    graph_trainer, graph_state = world_graph.load_run(str(graph_dir))
    pi_g = graph_state.params["policy"]
    trainer = make("feudal-wn", graph_dir, env=env, hidden=128, pi_g_worker=True)
    state = trainer.init(jax.random.PRNGKey(0))
    worker = GoalPolicy(trainer.env.num_actions, trainer.env.side, 128)
    policy = GoalPolicy(4, trainer.env.side, 128)
    obs = state.obs  # [B, 7, 7, C]
    rng = np.random.default_rng(0)
    narrow = jnp.asarray(rng.integers(-6, 7, (obs.shape[0], 2)))
    wide = jnp.asarray(rng.integers(-6, 7, (obs.shape[0], 2)))
    w_logits, w_value = worker.apply(state.params["worker"], obs, jnp.concatenate([narrow, wide], -1))
    g_logits, g_value = policy.apply(pi_g, obs, narrow)
    np.testing.assert_allclose(np.asarray(w_logits[:, :4]), np.asarray(g_logits), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(w_value), np.asarray(g_value), rtol=1e-5, atol=1e-5)
    plain = make("feudal-wn", graph_dir, env=env, hidden=128).init(jax.random.PRNGKey(0))
    p_logits, _ = worker.apply(plain.params["worker"], obs, jnp.concatenate([narrow, wide], -1))
    assert not np.allclose(np.asarray(p_logits[:, :4]), np.asarray(g_logits), atol=1e-3)
    if trainer.env.num_actions > 4:  # pick / toggle: the fresh initialisation, as without the option
        np.testing.assert_array_equal(np.asarray(state.params["worker"]["params"]["policy_head"]["kernel"][:, 4:]),
                                      np.asarray(plain.params["worker"]["params"]["policy_head"]["kernel"][:, 4:]))
    with pytest.raises(ValueError, match="pi_g_worker=true needs pi_g_init=true"):
        make("feudal-wn", graph_dir, hidden=128, pi_g_worker=True, pi_g_init=False)


def test_full_view_graph_initialises_a_full_view_feudal_agent(graph_dir, tmp_path):
    """``view=full`` in phase 1 sizes π_g's encoder for the whole maze; a ``-full`` maze task copies it."""
    import shutil

    cfg = world_graph.WorldGraphConfig(maze="small", view="full", batch_size=4)
    shutil.copy(graph_dir / "graph.json", tmp_path / "graph.json")
    json.dump({"algo": "world-graph", "seed": 0, "config": dataclasses.asdict(cfg)}, open(tmp_path / "config.json", "w"))
    graph_trainer = world_graph.make_train(cfg)
    graph_state = graph_trainer.init(jax.random.PRNGKey(3))
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    store.save(1, graph_state)
    store.close()
    encoder = graph_state.params["policy"]["params"]["encoder"]
    assert encoder["dense_0"]["kernel"].shape[0] == 13 * 13 * 7
    trainer = make("feudal-wn", tmp_path, env="maze-small-multigoal-full", hidden=128)
    state = trainer.init(jax.random.PRNGKey(0))
    assert state.obs.shape[1:] == (13, 13, 7)
    for part in ("manager", "worker"):
        for a, b in zip(jax.tree.leaves(state.params[part]["params"]["encoder"]), jax.tree.leaves(encoder)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    state, metrics = trainer.run_chunk(state)
    assert np.isfinite(np.asarray(metrics["loss"])).all()
    with pytest.raises(ValueError, match="sees the full view"):
        make("feudal-wn", tmp_path, env="maze-small-multigoal", hidden=128)


def run_cli(argv, capsys):
    code = train.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_feudal_cli_runs_both_algorithms_and_refuses_a_bad_graph(graph_dir, tmp_path, capsys):
    common = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()] + ["--no-progress", "--checkpoint-every=1"]
    code, out, err = run_cli(["--algo=feudal-wn", f"--graph={graph_dir}", *common, "--hidden=128",
                              f"--out={tmp_path / 'wn'}"], capsys)
    assert code == 0, err
    assert "val" in out and (tmp_path / "wn" / "curve.png").exists()
    row = open(tmp_path / "wn" / "metrics.csv").read().splitlines()
    assert "traversal_fraction" in row[0] and "val_success" in row[0]
    from repthesis import evaluate  # the thesis protocol's table for a Feudal run: its own modes

    assert evaluate.main([f"--run={tmp_path / 'wn'}", "--modes=sample", "--test-seeds=2"]) == 0
    assert "| sample |" in open(tmp_path / "wn" / "evaluation.md").read()
    assert evaluate.main([f"--run={tmp_path / 'wn'}", "--modes=vote-5"]) == 2
    assert "valid: map, sample, random" in capsys.readouterr().err
    code, out, err = run_cli(["--algo=feudal", "--pi-g-init=false", *common, f"--out={tmp_path / 'fn'}"], capsys)
    assert code == 0, err
    other = tmp_path / "medium"
    other.mkdir()
    json.dump({"algo": "world-graph", "config": {"maze": "medium"}}, open(other / "config.json", "w"))
    for argv, needle in (([], "--graph=DIR is required"), ([f"--graph={tmp_path / 'none'}"], "holds no run"),
                         ([f"--graph={other}"], "valid: a world-graph run with --maze=small"),
                         ([f"--graph={tmp_path / 'wn'}"], "is a --algo=feudal-wn run"),
                         ([f"--graph={graph_dir}", "--wide-narrow=false"], "traversal=true needs wide_narrow"),
                         ([f"--graph={graph_dir}", "--hidden=32"], "valid: hidden=128 or pi_g_init=false"),
                         ([f"--graph={graph_dir}", "--env=Breakout-MinAtar"], "runs on the chapter-3 mazes"),
                         ([f"--graph={graph_dir}", "--env=maze-small-multigoal-full"],
                          "valid: a world-graph run with --view=full, or pi_g_init=false")):
        code, out, err = run_cli(["--algo=feudal-wn", *argv, f"--out={tmp_path / 'x'}"], capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x" / "config.json").exists()


def test_four_devices_equal_one_device(graph_dir):
    """Same global batch on 4 forced CPU devices (B/4 envs each, pmean'd gradients) == 1 device."""
    code = textwrap.dedent(f"""
        import jax, numpy as np
        from repthesis import registry
        cfg = registry.make_config("feudal-wn", {dict(TINY)!r} | {{"graph": {str(graph_dir)!r}, "pi_g_init": False}})
        outs = []
        for n in (1, 4):
            tr = registry.get_algo("feudal-wn").make_train(cfg, num_devices=n)
            s, m = tr.run_chunk(tr.init(jax.random.PRNGKey(0)))
            outs.append((jax.device_get(s.params), float(m["loss"]), float(m["traversal_fraction"])))
        (p1, l1, t1), (p4, l4, t4) = outs
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p1, p4)
        np.testing.assert_allclose(l1, l4, rtol=1e-4)
        assert t1 == t4
        print("EQUAL", len(jax.devices()))
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "EQUAL 4" in res.stdout


def test_masked_choice_never_picks_a_masked_goal_and_scores_by_hand():
    from repthesis.algos.feudal import masked_choice

    logits, ok = jnp.array([1.0, 5.0, 2.0]), jnp.array([True, False, True])
    choice, logp, entropy = masked_choice(logits, ok, jax.random.PRNGKey(1), True)
    p = np.exp([1.0, 2.0]) / np.exp([1.0, 2.0]).sum()  # the softmax over the open entries only
    assert int(choice) == 2
    np.testing.assert_allclose(logp, np.log(p[1]), rtol=1e-6)
    np.testing.assert_allclose(entropy, -(p * np.log(p)).sum(), rtol=1e-6)
    keys = jax.random.split(jax.random.PRNGKey(0), 2000)
    samples = jax.vmap(lambda k: masked_choice(logits, ok, k, False)[0])(keys)
    assert not np.any(np.asarray(samples) == 1)
    np.testing.assert_allclose(np.mean(np.asarray(samples) == 0), p[0], atol=0.03)
    scored = masked_choice(logits, ok, None, False, jnp.int32(0))  # scoring a given choice
    np.testing.assert_allclose(scored[1], np.log(p[0]), rtol=1e-6)


def test_a_traversal_cut_short_by_the_door_hands_over_to_the_worker(graph_dir):
    """Door-Key: an edge learned without the door's wall can be blocked at its first move. The replay
    stops after that one step and the Worker acts for the rest of the goal (restarting the replay
    from the same waypoint at every step stalled the agent there until the episode ended)."""
    trainer = make("feudal-wn", graph_dir, env="maze-small-door-key", pi_g_init=False, rollout_len=8)
    env, c = trainer.env, trainer.consts
    waypoints, route_len = np.asarray(c.waypoints), np.asarray(c.route_len)
    first_move = np.asarray(c.route_actions)[:, :, 0]
    case = None
    for k in range(len(env.doors)):
        closed = np.asarray(env.layouts[k]).copy()
        closed[tuple(env.doors[k])] = True
        for w, g in zip(*np.nonzero(route_len > 0)):
            start = waypoints[w]
            if w != g and not closed[tuple(start)] and closed[tuple(start + maze.MOVES[first_move[w, g]])]:
                case = (k, w, g)
                break
        if case:
            break
    assert case is not None, "no door-key layout blocks the first move of a graph route"
    k, w, g = case
    state = trainer.init(jax.random.PRNGKey(0))
    b = trainer.cfg.num_envs
    env_state = state.env_state.replace(layout=jnp.full(b, k, jnp.int32), pos=jnp.tile(jnp.asarray(waypoints[w]), (b, 1)),
                                        door=jnp.tile(jnp.asarray(env.doors[k]), (b, 1)))
    state = state.replace(env_state=env_state, need_goal=jnp.zeros(b, bool), goal=jnp.full(b, g, jnp.int32),
                          narrow=jnp.tile(jnp.asarray(waypoints[g]), (b, 1)), wide_met=jnp.zeros(b, bool))
    _, traj, _, _ = trainer.rollout(state, jax.random.split(jax.random.PRNGKey(1), b), c)
    acted = np.asarray(traj.worker_acted)
    assert not acted[0].any()  # the replay is tried once, and is blocked: nobody moved
    np.testing.assert_array_equal(np.asarray(traj.pos)[1], np.tile(waypoints[w], (b, 1)))
    decided = np.asarray(traj.decided)
    for e in range(b):  # until the Manager's next goal, every step is the Worker's
        end = 1 + (np.argmax(decided[1:, e]) if decided[1:, e].any() else len(decided) - 1)
        assert acted[1:end, e].all()
