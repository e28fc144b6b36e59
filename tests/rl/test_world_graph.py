"""World graph: Dijkstra against BFS on random mazes and against Floyd–Warshall, the edge rule
(no third waypoint, shortest kept), waypoint selection, and a planned traversal executed in the
maze env visiting exactly the planned waypoints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from repthesis.envs import maze
from repthesis.rl import world_graph as wg


def unit_graph(walls):
    """Every open cell a waypoint, an edge of one step to each open neighbour."""
    cells = np.argwhere(~walls)
    starts = np.repeat(cells, 4, 0)
    moves = np.tile(np.arange(4), len(cells))
    target = starts + maze.MOVES[moves]
    ok = ~walls[target[:, 0], target[:, 1]]
    paths = np.stack([starts[ok], target[ok]], 1)
    edges = wg.edges_from_rollouts(cells, paths)
    return wg.WorldGraph(walls.shape[0], wg.walls_hash(walls), cells, edges)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dijkstra_matches_bfs_on_random_mazes(seed):
    walls = maze.generate_maze(15, seed)
    graph = unit_graph(walls)
    weights = graph.weights()
    rng = np.random.default_rng(seed)
    dist = maze.bfs_distances(walls, (1, 1))
    src = graph.index((1, 1))
    for j in rng.choice(len(graph.waypoints), 15, replace=False):
        route = wg.shortest_path(weights, src, j)
        assert len(route) - 1 == dist[tuple(graph.waypoints[j])]
        assert all(weights[a, b] == 1 for a, b in zip(route[:-1], route[1:]))


def test_dijkstra_matches_floyd_warshall_on_weighted_digraphs():
    rng = np.random.default_rng(0)
    for _ in range(20):
        k = 8
        w = np.where(rng.random((k, k)) < 0.3, rng.integers(1, 10, (k, k)).astype(float), np.inf)
        np.fill_diagonal(w, 0)
        fw = w.copy()
        for m in range(k):
            fw = np.minimum(fw, fw[:, m:m + 1] + fw[m:m + 1, :])
        for i in range(k):
            for j in range(k):
                route = wg.shortest_path(w, i, j)
                if np.isinf(fw[i, j]):
                    assert route == []
                else:
                    assert route[0] == i and route[-1] == j
                    assert sum(w[a, b] for a, b in zip(route[:-1], route[1:])) == fw[i, j]


def test_edges_stop_at_the_first_other_waypoint_and_keep_the_shortest():
    waypoints = np.array([[1, 1], [1, 3], [1, 5]])
    right = 1
    corridor = lambda cols: np.array([[1, c] for c in cols])  # noqa: E731
    cells = [corridor([1, 2, 3, 4, 5]), corridor([1, 2, 1, 2, 3]), corridor([3, 4, 5, 5, 5])]  # moves right, left
    edges = wg.edges_from_rollouts(waypoints, np.array(cells))
    assert set(edges) == {(0, 1), (1, 2)}  # 0 → 2 passes waypoint 1: no edge
    assert edges[(0, 1)] == [right, right]  # the 2-step walk replaces the 4-step one
    assert edges[(1, 2)] == [right, right]


def test_select_waypoints_takes_the_top_fraction_of_open_cells_plus_the_start():
    walls = maze.make_layout("small")
    prior = np.random.default_rng(0).random(walls.shape)
    prior[1, 1] = -1.0  # the start scores lowest and is still a waypoint
    cells = wg.select_waypoints(prior, walls, 0.2)
    n_open = int((~walls).sum())
    assert len(cells) == round(0.2 * n_open) + 1 and tuple(cells[0]) == (1, 1)
    assert not walls[cells[:, 0], cells[:, 1]].any()
    cut = np.sort(prior[~walls])[::-1][round(0.2 * n_open) - 1]
    assert (prior[cells[1:, 0], cells[1:, 1]] >= cut).all()


def test_planned_traversal_moves_the_agent_along_the_route_in_the_maze():
    env = maze.Maze("medium", "multigoal")
    walls = env.walls
    rng = np.random.default_rng(0)
    waypoints = wg.select_waypoints(rng.random(walls.shape), walls, 0.2)
    edges = {}
    for _ in range(30):
        cells, _ = wg.random_walks(walls, waypoints, 25, rng)
        edges = wg.edges_from_rollouts(waypoints, cells, edges)
    graph = wg.WorldGraph(walls.shape[0], wg.walls_hash(walls), waypoints, edges)
    weights = graph.weights()
    routes = [wg.shortest_path(weights, 0, j) for j in range(len(waypoints))]
    route = max(routes, key=len)
    assert len(route) >= 4
    p = env.default_params
    _, state = env.reset(jax.random.PRNGKey(0), p)
    state = state.replace(pos=jnp.asarray(waypoints[route[0]], jnp.int32))
    visited = [tuple(np.asarray(state.pos))]
    for a in wg.traversal_actions(graph, route):
        _, state, _, _, _ = env.step_env(jax.random.PRNGKey(1), state, jnp.int32(a), p)
        visited.append(tuple(np.asarray(state.pos)))
    at = np.cumsum([0] + [len(edges[(i, j)]) for i, j in zip(route[:-1], route[1:])])
    assert [visited[t] for t in at] == [tuple(waypoints[i]) for i in route]  # each planned waypoint on time
    hits = [graph.index(c) for c in visited]
    assert [h for h in hits if h >= 0] == [h for h in hits if h >= 0 and h in route]  # no third waypoint
    assert int(sum(weights[a, b] for a, b in zip(route[:-1], route[1:]))) == len(visited) - 1


def test_graph_file_round_trip_and_maze_identity(tmp_path):
    walls = maze.make_layout("small")
    graph = unit_graph(walls)
    graph.save(tmp_path / "g.json")
    back = wg.WorldGraph.load(tmp_path / "g.json")
    assert back.edges == graph.edges and np.array_equal(back.waypoints, graph.waypoints)
    assert back.walls_hash == wg.walls_hash(walls) != wg.walls_hash(maze.make_layout("medium"))


def test_loop_erasure_keeps_endpoints_and_replays_to_the_same_cell():
    walls = maze.make_layout("medium")
    rng = np.random.default_rng(3)
    cells, actions = wg.random_walks(walls, np.tile([[1, 1]], (20, 1)), 60, rng)
    for path in cells:
        acts = wg.loop_erased_actions(path)
        pos, seen = np.array([1, 1]), {(1, 1)}
        for a in acts:
            nxt = pos + maze.MOVES[a]
            assert not walls[tuple(nxt)]  # every kept action moves
            pos = nxt
            assert tuple(pos) not in seen  # no cell twice
            seen.add(tuple(pos))
        assert tuple(pos) == tuple(path[-1]) and seen <= set(map(tuple, path.tolist()))
        assert len(acts) >= maze.bfs_distances(walls, (1, 1))[tuple(path[-1])]


def test_traversal_table_holds_every_planned_route():
    walls = maze.generate_maze(15, 4)
    graph = unit_graph(walls)
    actions, lengths = wg.traversal_table(graph)
    k = len(graph.waypoints)
    assert actions.shape[:2] == (k, k) and np.all(np.diag(lengths) == 0)
    rng = np.random.default_rng(0)
    for i, j in rng.integers(0, k, (30, 2)):
        if i == j:
            continue
        d = maze.bfs_distances(walls, tuple(graph.waypoints[i]))[tuple(graph.waypoints[j])]
        assert lengths[i, j] == d  # unit edges: the planned route is a shortest path
        pos = graph.waypoints[i].copy()
        for a in actions[i, j, :lengths[i, j]]:
            pos = pos + maze.MOVES[a]
            assert not walls[tuple(pos)]
        assert tuple(pos) == tuple(graph.waypoints[j])
