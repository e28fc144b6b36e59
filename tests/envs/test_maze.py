"""Chapter 3 mazes: layouts, the reward / termination rules of every task on hand-placed objects,
resets, the agent-centric view, truncation and the `envs.make` names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from repthesis import envs
from repthesis.envs import maze

UP, RIGHT, DOWN, LEFT = range(4)
KEY = jax.random.PRNGKey(0)


def free_neighbour(walls, cell):
    """(action, cell) of the first open 4-neighbour of ``cell``."""
    for a, (dr, dc) in enumerate(maze.MOVES):
        q = (cell[0] + dr, cell[1] + dc)
        if not walls[q]:
            return a, q
    raise AssertionError("no open neighbour")


def place(env, state, **cells):
    """The state with the agent / balls / lava set by hand (cells as (row, col); the rest gone)."""
    def objects(cs, n):
        out = np.full((n, 2), maze.GONE, np.int32)
        out[:len(cs)] = cs if cs else np.zeros((0, 2))
        return jnp.asarray(out)

    new = state
    if "pos" in cells:
        new = new.replace(pos=jnp.array(cells["pos"], jnp.int32))
    if "balls" in cells:
        new = new.replace(balls=objects(cells["balls"], env.n_balls))
    if "lava" in cells:
        new = new.replace(lava=objects(cells["lava"], env.n_lava))
    return new


def channel(env, state, name):
    return np.asarray(maze.Maze(env.size, env.task, view="full").grid(state))[..., maze.CHANNELS.index(name)]


def padded_grid(full, state, r=3):
    """The full grid with r cells of wall around it: an ego window is its slice at the agent's cell."""
    pad = np.pad(np.asarray(full.grid(state)), ((r, r), (r, r), (0, 0)))
    pad[:r, :, 0] = pad[-r:, :, 0] = pad[:, :r, 0] = pad[:, -r:, 0] = True
    return pad


@pytest.mark.parametrize("size", list(maze.SIZES))
def test_layouts_are_connected_mazes_with_walls_around(size):
    walls = maze.make_layout(size)
    s = maze.SIZES[size]
    assert walls.shape == (s, s) and walls[0].all() and walls[-1].all() and walls[:, 0].all() and walls[:, -1].all()
    dist = maze.bfs_distances(walls, (1, 1))
    assert (dist[~walls] >= 0).all()  # every open cell reachable from the start
    assert dist[s - 2, s - 2] >= s - 3  # the exit is the far corner
    extra, doors, sides = maze.door_key_layouts(size)
    for wall, door, side in zip(extra, doors, sides):  # each door-key layout separates start and exit
        closed = walls | wall
        closed[tuple(door)] = True
        assert maze.bfs_distances(closed, (1, 1))[s - 2, s - 2] < 0
        assert maze.bfs_distances(walls | wall, (1, 1))[s - 2, s - 2] > 0  # and the open door joins them
        np.testing.assert_array_equal(side, maze.bfs_distances(closed, (1, 1)) >= 0)


def test_multigoal_balls_walls_and_exit():
    env = maze.Maze("small", "multigoal")
    p = env.default_params
    _, state = env.reset(KEY, p)
    a, cell = free_neighbour(env.walls, (1, 1))
    state = place(env, state, pos=(1, 1), balls=[cell])
    _, new, r, term, trunc, _ = env.step(KEY, state, a, p)
    assert tuple(np.asarray(new.pos)) == cell and float(r) == pytest.approx(1 - 0.01) and not term
    assert not channel(env, new, "ball")[cell] and int(new.collected) == 1
    wall_moves = [m for m, (dr, dc) in enumerate(maze.MOVES) if env.walls[1 + dr, 1 + dc]]
    _, same, r, _, _, _ = env.step(KEY, place(env, state, pos=(1, 1), balls=[]), wall_moves[0], p)
    assert tuple(np.asarray(same.pos)) == (1, 1) and float(r) == pytest.approx(-0.01)  # into a wall: stays
    s = env.side
    a, before = free_neighbour(env.walls, (s - 2, s - 2))
    back = {UP: DOWN, DOWN: UP, LEFT: RIGHT, RIGHT: LEFT}[a]
    obs, end, r, term, trunc, info = env.step(KEY, place(env, state, pos=before, balls=[]), back, p)
    assert bool(term) and not bool(trunc) and float(r) == pytest.approx(-0.01)
    assert tuple(np.asarray(end.pos)) == (1, 1)  # auto-reset; the final observation shows the exit reached
    assert info["final_observation"][3, 3, 1] and info["final_observation"][3, 3, 6]


def test_sparse_pays_the_fraction_of_balls_only_at_the_exit():
    env = maze.Maze("small", "multigoal-sparse")
    p = env.default_params
    _, state = env.reset(KEY, p)
    a, cell = free_neighbour(env.walls, (1, 1))
    _, new, r, _, _, _ = env.step(KEY, place(env, state, pos=(1, 1), balls=[cell]), a, p)
    assert float(r) == pytest.approx(-0.01) and int(new.collected) == 1
    s = env.side
    a, before = free_neighbour(env.walls, (s - 2, s - 2))
    back = {UP: DOWN, DOWN: UP, LEFT: RIGHT, RIGHT: LEFT}[a]
    state = place(env, state, pos=before, balls=[]).replace(collected=jnp.array(2, jnp.int32))
    _, _, r, term, _, _ = env.step(KEY, state, back, p)
    assert bool(term) and float(r) == pytest.approx(2 / maze.BALLS["small"] - 0.01)


def test_stochastic_lava_ends_the_episode_and_is_redrawn_every_step():
    env = maze.Maze("small", "multigoal-stochastic")
    p = env.default_params
    _, state = env.reset(KEY, p)
    lava = channel(env, state, "lava")
    assert 0 < lava.sum() <= maze.LAVA["small"] and not lava[1, 1]
    a, cell = free_neighbour(env.walls, (1, 1))
    _, _, r, term, _, _ = env.step(KEY, place(env, state, pos=(1, 1), balls=[], lava=[cell]), a, p)
    assert bool(term) and float(r) == pytest.approx(-0.01)
    lavas = []
    for i in range(5):
        _, state, _, _, _, _ = env.step(jax.random.PRNGKey(i + 1), place(env, state, lava=[]), LEFT, p)
        lava = channel(env, state, "lava")
        assert not lava[tuple(np.asarray(state.pos))] and not (lava & env.walls).any()
        lavas.append(lava)
    assert len({m.tobytes() for m in lavas}) > 1


def test_door_key_pick_toggle_door_and_exit():
    env = maze.Maze("medium", "door-key")
    p = env.default_params
    _, state = env.reset(KEY, p)
    door = tuple(np.asarray(state.door))
    side = (door[0], door[1] - 1)  # the start's side of the door
    assert env.blocked(state, jnp.array(door))  # closed
    key_cell = tuple(np.asarray(state.key))
    assert maze.bfs_distances(env.walls | env.layouts[int(state.layout)] | (np.arange(env.side)[:, None] == door[0])
                              & (np.arange(env.side)[None] == door[1]), (1, 1))[key_cell] >= 0
    _, s1, r, _, _, _ = env.step(KEY, state.replace(pos=jnp.array(side)), maze.TOGGLE, p)
    assert not bool(s1.door_open) and float(r) == pytest.approx(-0.01)  # no key: nothing
    _, s2, _, _, _, _ = env.step(KEY, state.replace(pos=jnp.array(key_cell)), maze.PICK, p)
    assert bool(s2.has_key) and tuple(np.asarray(s2.key)) == (maze.GONE, maze.GONE)
    _, s3, r, _, _, _ = env.step(KEY, s2.replace(pos=jnp.array(side)), maze.TOGGLE, p)
    assert bool(s3.door_open) and float(r) == pytest.approx(1 - 0.01)
    _, s4, r, _, _, _ = env.step(KEY, s3, maze.TOGGLE, p)
    assert float(r) == pytest.approx(-0.01)  # the +1 is paid once
    _, s5, _, _, _, _ = env.step(KEY, s4, RIGHT, p)
    assert tuple(np.asarray(s5.pos)) == door  # the open door lets the agent through
    s = env.side
    a, before = free_neighbour(env.walls | env.layouts[int(state.layout)], (s - 2, s - 2))
    back = {UP: DOWN, DOWN: UP, LEFT: RIGHT, RIGHT: LEFT}[a]
    _, _, r, term, _, _ = env.step(KEY, s4.replace(pos=jnp.array(before)), back, p)
    assert bool(term) and float(r) == pytest.approx(1 - 0.01)


@pytest.mark.parametrize("task", maze.TASKS)
def test_resets_place_distinct_objects_on_open_cells(task):
    env = maze.Maze("small", task)
    for i in range(20):
        _, st = env.reset(jax.random.PRNGKey(i), env.default_params)
        balls = channel(env, st, "ball")
        assert balls.sum() == env.n_balls and not (balls & env.walls).any() and not balls[1, 1] and not balls[-2, -2]
        if task == "door-key":
            k = tuple(np.asarray(st.key))
            assert k != (1, 1) and not env.walls[k] and not env.layouts[int(st.layout)][k]


def test_ego_view_is_the_window_of_the_full_grid_and_episodes_truncate():
    ego, full = maze.Maze("medium", "multigoal-stochastic"), maze.Maze("medium", "multigoal-stochastic", view="full")
    p = ego.default_params.replace(max_steps_in_episode=30)
    obs, st = ego.reset(KEY, p)
    assert obs.shape == (7, 7, len(maze.CHANNELS)) and obs.dtype == jnp.bool_
    key = jax.random.PRNGKey(1)
    for _ in range(40):
        key, k1, k2 = jax.random.split(key, 3)
        obs, st, _, term, trunc, info = ego.step(k2, st, jax.random.randint(k1, (), 0, 4), p)
        if not (term or trunc):
            pad = padded_grid(full, st)
            y, x = np.asarray(st.pos)
            np.testing.assert_array_equal(np.asarray(obs), pad[y:y + 7, x:x + 7])
    plain = maze.Maze("medium", "multigoal")  # no lava: nothing ends a 30-step random walk early
    _, st = plain.reset(KEY, p)
    for t in range(30):
        _, st, _, term, trunc, _ = plain.step(jax.random.PRNGKey(t), st, jnp.int32(t % 4), p)
        assert bool(trunc) == (t == 29) and not bool(term)
    assert int(st.time) == 0  # reset after the truncation


def test_random_words_differ_and_look_uniform():
    env = maze.Maze("small", "multigoal-stochastic")
    words = np.asarray(jax.vmap(lambda k: env._draw(k, 64))(jax.random.split(KEY, 1024)))  # [1024, 64]
    assert all(len(set(w)) == 64 for w in words)  # one draw: all different
    assert len({w.tobytes() for w in words}) == 1024
    for shift in (0, 13, 28):  # low, middle and high bits: 16 buckets of 65,536 words each hold ~1/16
        counts = np.bincount(((words >> shift) & 15).ravel(), minlength=16)
        assert np.abs(counts / words.size - 1 / 16).max() < 0.004, (shift, counts)
    assert abs(np.corrcoef(words[:, 0] % 1024, words[:, 1] % 1024)[0, 1]) < 0.1  # neighbouring words


@pytest.mark.parametrize("task", ["multigoal-stochastic", "door-key"])
def test_ego_view_at_every_cell_is_the_window_of_the_full_grid(task):
    """Objects just above or left of the window must not wrap onto its far edge (a negative
    scatter index counts from the end): the window at every free cell, objects from 4 resets."""
    ego = maze.Maze("large", task)
    free = np.argwhere(~ego.walls).astype(np.int32)
    obs_at = jax.jit(jax.vmap(lambda st, pos: ego.get_obs(st.replace(pos=pos)), in_axes=(None, 0)))
    for seed in range(4):
        st = ego.reset_state(jax.random.PRNGKey(seed))
        if task == "door-key":
            st = st.replace(door_open=jnp.array(seed % 2 == 1))
        obs = np.asarray(obs_at(st, jnp.asarray(free)))
        pad = padded_grid(maze.Maze("large", task, view="full"), st)
        for i, (y, x) in enumerate(free):
            want = pad[y:y + 7, x:x + 7].copy()
            want[..., maze.CHANNELS.index("agent")] = False
            want[3, 3, maze.CHANNELS.index("agent")] = True  # the agent moved here; the grid has it at the reset cell
            np.testing.assert_array_equal(obs[i], want, err_msg=f"{task} seed {seed} agent at {(y, x)}")


def test_maze_names_through_envs_make():
    env = envs.make("maze-small-door-key")
    assert env.num_actions == 6 and env.obs_shape == (7, 7, 7)
    state = env.reset(KEY)[1]
    out = env.step(KEY, state, jnp.int32(0))
    assert out.obs.dtype == jnp.float32
    with pytest.raises(envs.EnvError, match="valid: maze-<small"):
        envs.make("maze-huge-multigoal")
    full = envs.make("maze-small-door-key-full")  # the whole maze, same dynamics
    assert full.obs_shape == (13, 13, 7) and full.num_actions == 6
    assert maze.parse_name("maze-large-multigoal-sparse-full") == ("large", "multigoal-sparse", "full")
    assert maze.parse_name("maze-large-multigoal-sparse") == ("large", "multigoal-sparse", "ego")
    assert len(set(maze.env_names())) == 24 and maze.env_names(("ego",))[0] == "maze-small-multigoal"
    for bad in ("maze-small-full", "maze-small-multigoal-ego", "maze-small-door-key-full-full"):
        with pytest.raises(envs.EnvError, match=r"\[-full\]"):
            envs.make(bad)
    rgb = maze.render(maze.Maze("small", "door-key", view="full").grid(state), cell=4)
    assert rgb.shape == (52, 52, 3) and rgb.dtype == np.uint8


def test_step_with_final_keeps_the_ended_episodes_last_state():
    """Feudal's bootstrap and success need the state before the auto-reset: it is the stepped
    state mid-episode, the time-limit state at a truncation, and its observation is ``get_obs``'s."""
    env = maze.Maze("small", "multigoal")
    p = env.default_params.replace(max_steps_in_episode=5)
    _, st = env.reset(KEY, p)
    for t in range(5):
        k = jax.random.PRNGKey(t)
        obs, new, reward, term, trunc, final, final_obs = env.step_with_final(k, st, jnp.int32(t % 4), p)
        obs2, new2, reward2, term2, trunc2, info = env.step(k, st, jnp.int32(t % 4), p)
        np.testing.assert_array_equal(obs, obs2)
        np.testing.assert_array_equal(final_obs, info["final_observation"])
        np.testing.assert_array_equal(final_obs, env.get_obs(final))
        assert int(final.time) == t + 1 and bool(trunc) == (t == 4)
        assert int(new.time) == (0 if t == 4 else t + 1)
        if t == 4:
            np.testing.assert_array_equal(new.pos, np.asarray(env.start))
        st = new
