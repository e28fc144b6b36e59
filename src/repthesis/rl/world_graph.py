"""World graphs (thesis §3.3.1–3.3.3, §3.4.3): waypoints from the VAE prior, edges from rollouts,
planning by Dijkstra, and the action sequence of a planned traversal.

Built once, offline, from numpy arrays (nothing here runs inside a training step):

* ``select_waypoints``: the states with the largest prior mean α/(α+β), a fraction of the open
  cells (20 %, App. 3.C.1).
* ``edges_from_rollouts``: a directed edge p → q for every rollout that leaves waypoint p and
  reaches waypoint q without passing a third waypoint; of all such rollouts (random walks and
  π_g's), the shortest action sequence is kept and its length is the edge's weight (§3.3.3).
* ``goal_tables``: the graph as the arrays a Feudal program takes (goals, narrow windows,
  planned routes).
* ``shortest_path`` (Dijkstra over the edge weights) and ``traversal_actions``: the planned
  waypoint route and the concatenated edge actions that execute it in a deterministic maze.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from repthesis.envs.maze import MOVES


@dataclasses.dataclass
class WorldGraph:
    side: int  # maze side the graph belongs to
    walls_hash: str  # identifies the maze layout (a graph of another maze is refused)
    waypoints: np.ndarray  # [K, 2] int cells
    edges: dict  # (i, j) -> list of actions from waypoint i to waypoint j

    def weights(self) -> np.ndarray:
        """[K, K] edge weights (path lengths), inf where there is no edge, 0 on the diagonal."""
        k = len(self.waypoints)
        w = np.full((k, k), np.inf)
        np.fill_diagonal(w, 0.0)
        for (i, j), actions in self.edges.items():
            w[i, j] = min(w[i, j], len(actions))
        return w

    def index(self, cell) -> int:
        """Waypoint index of a cell, −1 if it is not a waypoint."""
        hit = np.flatnonzero(np.all(self.waypoints == np.asarray(cell), -1))
        return int(hit[0]) if len(hit) else -1

    def to_json(self) -> dict:
        return {"side": self.side, "walls_hash": self.walls_hash, "waypoints": self.waypoints.tolist(),
                "edges": [[i, j, list(map(int, a))] for (i, j), a in sorted(self.edges.items())]}

    @classmethod
    def from_json(cls, d: dict) -> "WorldGraph":
        return cls(d["side"], d["walls_hash"], np.asarray(d["waypoints"], np.int64).reshape(-1, 2),
                   {(i, j): list(a) for i, j, a in d["edges"]})

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(self.to_json(), f)

    @classmethod
    def load(cls, path: str) -> "WorldGraph":
        with open(path) as f:
            return cls.from_json(json.load(f))


def walls_hash(walls: np.ndarray) -> str:
    import hashlib

    return hashlib.sha1(np.packbits(np.asarray(walls, bool)).tobytes() + bytes([walls.shape[0] % 256])).hexdigest()[:16]


def select_waypoints(prior_mean: np.ndarray, walls: np.ndarray, fraction: float = 0.2,
                     always: tuple = ((1, 1),)) -> np.ndarray:
    """[K, 2] cells: the ``fraction`` of open cells with the largest prior mean (ties by cell
    order), plus the cells in ``always`` (the start, Alg. 6's initial V_p)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction} must be in (0, 1]")
    open_cells = np.argwhere(~walls)
    k = max(1, int(round(fraction * len(open_cells))))
    scores = prior_mean[open_cells[:, 0], open_cells[:, 1]]
    top = open_cells[np.argsort(-scores, kind="stable")[:k]]
    extra = [c for c in always if not np.any(np.all(top == c, -1))]
    return np.concatenate([np.asarray(extra, np.int64).reshape(-1, 2), top]) if extra else top


def random_walks(walls: np.ndarray, starts: np.ndarray, length: int, rng: np.random.Generator):
    """(cells [N, length+1, 2], actions [N, length]) of uniform random walks from each start (a move
    into a wall leaves the agent in place, as in the maze envs)."""
    starts = np.asarray(starts)
    actions = rng.integers(0, 4, (len(starts), length))
    cells = np.zeros((len(starts), length + 1, 2), np.int64)
    cells[:, 0] = starts
    for t in range(length):
        target = cells[:, t] + MOVES[actions[:, t]]
        blocked = walls[target[:, 0], target[:, 1]]
        cells[:, t + 1] = np.where(blocked[:, None], cells[:, t], target)
    return cells, actions


def loop_erased_actions(cells: np.ndarray) -> list[int]:
    """The moves of a cell path with its loops and bumps (moves into walls) erased: the same start
    and end, every cell of the result on the original path, no cell twice. In a deterministic
    maze these actions retrace the path without its detours."""
    kept: list[tuple[int, int]] = []
    seen: dict[tuple[int, int], int] = {}
    for c in map(tuple, np.asarray(cells).tolist()):
        if c in seen:  # back on a cell already kept: cut the loop (a bump revisits its own cell)
            del kept[seen[c] + 1:]
            seen = {k: i for i, k in enumerate(kept)}
            continue
        seen[c] = len(kept)
        kept.append(c)
    moves = {tuple(m): a for a, m in enumerate(MOVES.tolist())}
    return [moves[(b[0] - a[0], b[1] - a[1])] for a, b in zip(kept[:-1], kept[1:])]


def edges_from_rollouts(waypoints: np.ndarray, cells: np.ndarray, edges: dict | None = None) -> dict:
    """Add to ``edges`` (i, j) → actions for each rollout that starts on waypoint i and first meets
    another waypoint j (no third waypoint in between), keeping the shortest action list per edge.
    A rollout's actions are kept loop-erased (``loop_erased_actions`` of its cells): random walks
    bump into walls and circle, and an edge's weight is the length of the path it can replay (the
    cells [N, T+1, 2] determine the moves: a move into a wall changes no cell)."""
    edges = {} if edges is None else edges
    index = {tuple(c): i for i, c in enumerate(np.asarray(waypoints).tolist())}
    for path in cells:
        i = index.get(tuple(path[0]))
        if i is None:
            continue
        for t in range(1, len(path)):
            j = index.get(tuple(path[t]))
            if j is None or j == i:
                continue  # not a waypoint, or back at the start: keep walking
            acts = loop_erased_actions(path[:t + 1])
            if (i, j) not in edges or len(acts) < len(edges[(i, j)]):
                edges[(i, j)] = acts
            break  # the first other waypoint ends this rollout's edge
    return edges


def dijkstra(weights: np.ndarray, source: int, target: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(distances [K], predecessors [K], −1 where none) of the cheapest routes from ``source``
    (stopping once ``target`` is settled, if given)."""
    k = len(weights)
    dist = np.full(k, np.inf)
    prev = np.full(k, -1)
    dist[source] = 0.0
    heap = [(0.0, source)]
    while heap:
        d, u = heapq.heappop(heap)
        if d > dist[u]:
            continue
        if u == target:
            break
        for v in np.flatnonzero(np.isfinite(weights[u])):
            nd = d + weights[u, v]
            if nd < dist[v]:
                dist[v], prev[v] = nd, u
                heapq.heappush(heap, (nd, v))
    return dist, prev


def _route(prev: np.ndarray, source: int, target: int) -> list[int]:
    route = [target]
    while route[-1] != source:
        route.append(int(prev[route[-1]]))
    return route[::-1]


def shortest_path(weights: np.ndarray, source: int, target: int) -> list[int]:
    """Waypoint indices of the cheapest route source → target (Dijkstra); [] if unreachable."""
    dist, prev = dijkstra(weights, source, target)
    return _route(prev, source, target) if np.isfinite(dist[target]) else []


def traversal_table(graph: WorldGraph) -> tuple[np.ndarray, np.ndarray]:
    """(actions [K, K, L] int32, lengths [K, K] int32): for every ordered pair of waypoints, the
    actions of the planned route (Dijkstra over the edge weights, §3.4.3) padded to the longest
    route L; length 0 where there is no route (and on the diagonal). One Dijkstra per source."""
    k = len(graph.waypoints)
    weights = graph.weights()
    routes = {}
    for i in range(k):
        dist, prev = dijkstra(weights, i)
        for j in np.flatnonzero(np.isfinite(dist)):
            if j != i:
                routes[(i, int(j))] = traversal_actions(graph, _route(prev, i, int(j)))
    longest = max((len(a) for a in routes.values()), default=0)
    actions = np.zeros((k, k, max(longest, 1)), np.int32)
    lengths = np.zeros((k, k), np.int32)
    for (i, j), acts in routes.items():
        actions[i, j, :len(acts)] = acts
        lengths[i, j] = len(acts)
    return actions, lengths


def traversal_actions(graph: WorldGraph, route: list[int]) -> list[int]:
    """The actions that execute a waypoint route in a deterministic maze: its edges' actions, in order."""
    out: list[int] = []
    for i, j in zip(route[:-1], route[1:]):
        out += graph.edges[(i, j)]
    return out


class GoalTables(NamedTuple):
    """The Manager's goal space as arrays, passed to the programs as arguments (never closed over:
    see ``rl.parallel.chunk_programs``)."""
    waypoints: jax.Array  # [K, 2] cells (plain Feudal: every cell, row-major)
    waypoint_at: jax.Array  # [S, S] waypoint index of a cell, −1 elsewhere
    route_actions: jax.Array  # [K, K, L] planned traversal actions
    route_len: jax.Array  # [K, K]
    goal_ok: jax.Array  # [K] goals the Manager may pick (plain Feudal: open cells)
    narrow_offsets: jax.Array  # [N², 2]
    narrow_ok: jax.Array  # [K, N²] open, in-maze cells of each waypoint's window


def goal_tables(graph: WorldGraph | None, walls: np.ndarray, narrow: int, traversal: bool) -> GoalTables:
    """Wide goals = ``graph``'s waypoints with their N×N (``narrow``) windows and, with
    ``traversal``, the planned routes between them (§3.4.2–3.4.3); ``graph=None``: plain Feudal,
    one goal among all open cells."""
    side = walls.shape[0]
    at = np.full(walls.shape, -1, np.int32)
    if graph is None:
        cells = np.stack(np.divmod(np.arange(side * side), side), -1).astype(np.int32)
        tables = (cells, at, np.zeros((1, 1, 1), np.int32), np.zeros((1, 1), np.int32), ~walls.reshape(-1),
                  np.zeros((1, 2), np.int32), np.ones((1, 1), bool))
        return GoalTables(*map(jnp.asarray, tables))
    cells = np.asarray(graph.waypoints, np.int32)
    at[cells[:, 0], cells[:, 1]] = np.arange(len(cells))
    if traversal:
        actions, lengths = traversal_table(graph)
    else:
        actions, lengths = np.zeros((len(cells), len(cells), 1), np.int32), np.zeros((len(cells),) * 2, np.int32)
    r = narrow // 2
    offsets = np.array([(dr, dc) for dr in range(-r, r + 1) for dc in range(-r, r + 1)], np.int32)
    target = cells[:, None] + offsets[None]
    inside = np.all((target >= 0) & (target < side), -1)
    ok = inside & ~walls[np.clip(target[..., 0], 0, side - 1), np.clip(target[..., 1], 0, side - 1)]
    return GoalTables(*map(jnp.asarray, (cells, at, actions, lengths, np.ones(len(cells), bool), offsets, ok)))
