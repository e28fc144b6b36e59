"""Grid-world mazes of thesis chapter 3 (§3.5.1, Table 3.1, App. 3.D), in pure JAX behind gymnax's
``Environment`` API (vmappable, jittable, steppable inside ``lax.scan``).

Mazes: three fixed layouts, ``small`` (13×13 cells with the outer wall), ``medium`` (21×21) and
``large`` (31×31), each a randomised depth-first-search maze from a fixed seed with 15 % of the
remaining inner walls between corridors knocked out so that there are loops (the thesis shows its
mazes only as pictures, App. 3.D; these sizes are ours). The agent starts at (1, 1), as in Alg. 6,
and the exit is the opposite corner (H−2, W−2).

Tasks (Table 3.1); every action costs ``step_penalty`` (0.01; the thesis says "a negative reward
penalty" without a value):

* ``multigoal``: ``balls`` balls on random free cells, +1 each when stepped on; the episode ends
  at the exit.
* ``multigoal-sparse``: the same, but the only reward is collected/balls (≤ 1), given at the exit.
* ``multigoal-stochastic``: ``multigoal`` plus ``lava`` lava cells drawn afresh at random every
  step; stepping onto lava ends the episode.
* ``door-key``: a wall with one door cuts the maze (its column and the door chosen at random
  among layouts that separate the start from the exit); a key lies at random on the start's
  side. ``pick`` (action 4) on the key's cell takes it; ``toggle`` (action 5) next to the door
  with the key opens it (+1, once); the exit gives +1 and ends the episode.

Actions 0–3: up, right, down, left (a move into a wall or a closed door leaves the agent where it
is); Door-Key adds 4 pick and 5 toggle. Observations: the whole maze, [H, W, 7] channels wall,
agent, ball, lava, key, door (closed), exit (``view="full"``), or (the default, the agent-centric
partial view) a window of side 2·``radius``+1 = 7 around the agent, walls beyond the maze's edge
(``view="ego"``). Observations are bool, as gymnax's MinAtar's.
Episodes are truncated after ``max_steps`` (200 / 400 / 600 by size).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from gymnax.environments import environment, spaces

SIZES = {"small": 13, "medium": 21, "large": 31}
TASKS = ("multigoal", "multigoal-sparse", "multigoal-stochastic", "door-key")
VIEWS = ("ego", "full")  # env names: maze-<size>-<task> (ego, the default) and maze-<size>-<task>-full
NARROW_WINDOW = {"small": 5, "medium": 5, "large": 7}  # N of the Manager's narrow goal (App. 3.C.3)
BALLS = {"small": 6, "medium": 10, "large": 15}
LAVA = {"small": 3, "medium": 6, "large": 10}
MAX_STEPS = {"small": 200, "medium": 400, "large": 600}
CHANNELS = ("wall", "agent", "ball", "lava", "key", "door", "exit")
MOVES = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]], np.int32)  # up, right, down, left (row, col)
PICK, TOGGLE = 4, 5
_SEEDS = {"small": 3, "medium": 5, "large": 7}


def env_name(size: str, task: str, view: str = "ego") -> str:
    return f"maze-{size}-{task}" + ("" if view == "ego" else f"-{view}")


def env_names(views: tuple[str, ...] = VIEWS) -> tuple[str, ...]:
    return tuple(env_name(size, task, view) for view in views for size in SIZES for task in TASKS)


def parse_name(name: str) -> tuple[str, str, str]:
    """``maze-<size>-<task>[-full]`` → (size, task, view); a one-line error naming the valid forms."""
    if name not in env_names():
        raise ValueError(f"unknown maze env {name!r}; valid: maze-<{'|'.join(SIZES)}>-<{'|'.join(TASKS)}>[-full]")
    size, rest = name.split("-", 2)[1:]
    view = "full" if rest.endswith("-full") else "ego"
    return size, rest.removesuffix("-full"), view


def generate_maze(side: int, seed: int, loops: float = 0.15) -> np.ndarray:
    """Walls [side, side] bool (side odd): a randomised depth-first-search maze over the odd cells,
    then a fraction ``loops`` of the remaining inner walls that separate two corridors removed."""
    if side < 5 or side % 2 == 0:
        raise ValueError(f"maze side {side} must be odd and >= 5")
    rng = np.random.default_rng(seed)
    walls = np.ones((side, side), bool)
    n = (side - 1) // 2
    seen = np.zeros((n, n), bool)
    stack = [(0, 0)]
    seen[0, 0] = True
    walls[1, 1] = False
    while stack:
        r, c = stack[-1]
        nbrs = [(r + dr, c + dc) for dr, dc in MOVES if 0 <= r + dr < n and 0 <= c + dc < n and not seen[r + dr, c + dc]]
        if not nbrs:
            stack.pop()
            continue
        nr, nc = nbrs[rng.integers(len(nbrs))]
        seen[nr, nc] = True
        walls[2 * nr + 1, 2 * nc + 1] = False
        walls[r + nr + 1, c + nc + 1] = False  # the wall between the two cells
        stack.append((nr, nc))
    inner = [(r, c) for r in range(1, side - 1) for c in range(1, side - 1) if walls[r, c]
             and ((not walls[r - 1, c] and not walls[r + 1, c]) or (not walls[r, c - 1] and not walls[r, c + 1]))]
    for i in rng.permutation(len(inner))[: int(loops * len(inner))]:
        walls[inner[i]] = False
    return walls


@functools.cache
def make_layout(size: str) -> np.ndarray:
    """Walls [S, S] bool of a named maze size (a fixed seed per size)."""
    if size not in SIZES:
        raise ValueError(f"unknown maze size {size!r}; valid: {', '.join(SIZES)}")
    walls = generate_maze(SIZES[size], _SEEDS[size])
    walls.flags.writeable = False  # cached and shared by every caller: a write raises instead of changing the maze
    return walls


def bfs_distances(walls: np.ndarray, start: tuple[int, int]) -> np.ndarray:
    """Shortest path lengths (4-connected moves) from ``start`` to every cell; −1 if unreachable."""
    dist = np.full(walls.shape, -1, np.int64)
    dist[start] = 0
    frontier = [start]
    while frontier:
        nxt = []
        for r, c in frontier:
            for dr, dc in MOVES:
                q = (r + dr, c + dc)
                if 0 <= q[0] < walls.shape[0] and 0 <= q[1] < walls.shape[1] and not walls[q] and dist[q] < 0:
                    dist[q] = dist[r, c] + 1
                    nxt.append(q)
        frontier = nxt
    return dist


@functools.cache
def door_key_layouts(size: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(extra walls [K, S, S], door cells [K, 2], start-side cells [K, S, S]) of every layout in which
    a full column of wall with one door separates the start from the exit."""
    walls = make_layout(size)
    s = walls.shape[0]
    start, exit_ = (1, 1), (s - 2, s - 2)
    extra, doors, sides = [], [], []
    for c in range(3, s - 3):
        for r in range(1, s - 1):
            if walls[r, c] or walls[r, c - 1] or walls[r, c + 1]:
                continue
            wall = np.zeros_like(walls)
            wall[1:s - 1, c] = True  # the door cell counts as wall while the door is closed
            closed = walls | wall
            left = bfs_distances(closed, start) >= 0
            right = bfs_distances(closed, exit_) >= 0
            if left[exit_] or not left[r, c - 1] or not right[r, c + 1] or left.sum() < 4:
                continue
            wall[r, c] = False  # stored open: the door is a separate cell, blocked while closed
            extra.append(wall)
            doors.append((r, c))
            sides.append(left)
    if not extra:
        raise ValueError(f"maze {size!r} admits no door-key layout")
    out = np.stack(extra), np.asarray(doors, np.int32), np.stack(sides)
    for a in out:  # cached and shared, as make_layout's
        a.flags.writeable = False
    return out


@struct.dataclass
class MazeState(environment.EnvState):
    pos: jax.Array  # [2] int32 (row, col)
    balls: jax.Array  # [max(n_balls, 1), 2] int32 cells; (-99, -99) once collected (or none)
    lava: jax.Array  # [max(n_lava, 1), 2] int32 cells of this step's lava; (-99, -99) where none
    layout: jax.Array  # int32: door-key's wall layout (0 for the other tasks)
    door: jax.Array  # [2] int32; (-99, -99) without a door
    door_open: jax.Array  # bool
    key: jax.Array  # [2] int32; (-99, -99) once taken or without a key
    has_key: jax.Array  # bool
    collected: jax.Array  # int32 balls collected
    time: int


@struct.dataclass
class MazeParams(environment.EnvParams):
    step_penalty: float = 0.01
    max_steps_in_episode: int = 200


def _fmix32(x: jax.Array) -> jax.Array:
    """murmur3's 32-bit finaliser: a bijective mix of uint32 words."""
    x = (x ^ (x >> 16)) * jnp.uint32(0x85EBCA6B)
    x = (x ^ (x >> 13)) * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


GONE = -99  # the cell of an object that is not on the board (far outside any window)


class Maze(environment.Environment):
    """Objects are kept as cells, not as [S, S] masks: a step costs the same in every maze size."""

    def __init__(self, size: str = "small", task: str = "multigoal", view: str = "ego", radius: int = 3):
        if size not in SIZES:
            raise ValueError(f"unknown maze size {size!r}; valid: {', '.join(SIZES)}")
        if task not in TASKS:
            raise ValueError(f"unknown maze task {task!r}; valid: {', '.join(TASKS)}")
        if view not in VIEWS:
            raise ValueError(f"view={view!r} is not valid; valid: {', '.join(VIEWS)}")
        super().__init__()
        self.size, self.task, self.view, self.radius = size, task, view, radius
        self.walls = make_layout(size)
        s = self.side = self.walls.shape[0]
        self.start = np.array([1, 1], np.int32)
        self.exit = np.array([s - 2, s - 2], np.int32)
        free = ~self.walls
        free[1, 1] = free[s - 2, s - 2] = False
        self.object_cells = np.flatnonzero(free).astype(np.int32)  # where balls and lava may appear
        self.n_balls = BALLS[size] if task != "door-key" else 0
        self.n_lava = LAVA[size] if task == "multigoal-stochastic" else 0
        layouts = self.walls[None]
        if task == "door-key":  # wall layouts, doors, and each layout's key cells (padded) and their count
            extra, self.doors, sides = door_key_layouts(size)
            layouts = self.walls[None] | extra
            sides = sides.copy()  # the cached layouts stay as door_key_layouts made them
            sides[:, 1, 1] = False  # the key is never at the start
            flat = [np.flatnonzero(m) for m in sides.reshape(len(sides), -1)]
            self.key_cells = np.zeros((len(flat), max(map(len, flat))), np.int32)
            for i, f in enumerate(flat):
                self.key_cells[i, :len(f)] = f
            self.key_counts = np.array([len(f) for f in flat], np.int32)
        self.layouts = layouts  # [K, S, S] walls of each layout (a door's cell open: closed doors are checked apart)
        r = radius
        self.padded = np.pad(layouts, ((0, 0), (r, r), (r, r)), constant_values=True)  # walls beyond the edge

    @property
    def name(self) -> str:
        return f"maze-{self.size}-{self.task}"

    @property
    def num_actions(self) -> int:
        return 6 if self.task == "door-key" else 4

    @property
    def default_params(self) -> MazeParams:
        return MazeParams(max_steps_in_episode=MAX_STEPS[self.size])

    def action_space(self, params=None):
        return spaces.Discrete(self.num_actions)

    def observation_space(self, params=None):
        side = self.side if self.view == "full" else 2 * self.radius + 1
        return spaces.Box(0, 1, (side, side, len(CHANNELS)), jnp.bool_)

    def _cells(self, flat: jax.Array) -> jax.Array:
        """[n, 2] (row, col) of flat indices into object_cells' maze."""
        cells = jnp.asarray(self.object_cells)[flat]
        return jnp.stack([cells // self.side, cells % self.side], -1).astype(jnp.int32)

    def _distinct_cells(self, bits: jax.Array) -> jax.Array:
        """len(bits) distinct object cells: n draws x from F − n + 1 values, each plus its rank among
        them (ties by index), i.e. the sorted draws plus 0, 1, …, n−1, distinct by construction
        (random bits are the main cost of a step, so n words, not F). The rank is n² compares, not a
        sort: batched sorts cost more than the rest of a reset on CPU; the set of cells is the same."""
        n, f = bits.shape[0], len(self.object_cells)
        x = (bits % jnp.uint32(f - n + 1)).astype(jnp.int32)
        i = jnp.arange(n)
        before = (x[None, :] < x[:, None]) | ((x[None, :] == x[:, None]) & (i[None, :] < i[:, None]))
        return self._cells(x + before.sum(1))

    def _lava(self, bits, pos) -> jax.Array:
        """This step's lava cells from n_lava random words."""
        if not self.n_lava:  # one row off the board: zero-size arrays cannot be checkpointed
            return jnp.full((1, 2), GONE, jnp.int32)
        lava = self._cells((bits % jnp.uint32(len(self.object_cells))).astype(jnp.int32))
        return jnp.where(jnp.all(lava == pos, -1, keepdims=True), GONE, lava)  # never under the agent

    def reset_env(self, key, params):
        state = self.reset_state(key)
        return self.get_obs(state), state

    def _draw(self, key, n: int) -> jax.Array:
        """n random uint32 words: one threefry block seeds a counter hash (murmur3's finaliser,
        bijective, so the n words differ). Every step draws a reset's objects (and MultiGoal-
        Stochastic this step's lava too), and n threefry words were most of a step's cost (large
        MultiGoal-Stochastic: 2.3M steps/s without any random words, 0.87M with threefry's)."""
        seed = jax.random.bits(key, (2,), jnp.uint32)
        return _fmix32(_fmix32(seed[0] ^ (jnp.arange(n, dtype=jnp.uint32) * jnp.uint32(0x9E3779B9))) + seed[1])

    @property
    def _reset_words(self) -> int:
        return self.n_balls + 2 + self.n_lava

    def reset_state(self, key) -> MazeState:
        return self._reset_from(self._draw(key, self._reset_words))  # one draw for the whole reset

    def _reset_from(self, bits: jax.Array) -> MazeState:
        start = jnp.asarray(self.start)
        balls = self._distinct_cells(bits[:self.n_balls]) if self.n_balls else jnp.full((1, 2), GONE, jnp.int32)
        gone = jnp.array([GONE, GONE], jnp.int32)
        layout, door, key_cell = jnp.int32(0), gone, gone
        if self.task == "door-key":
            b_layout, b_key = bits[self.n_balls], bits[self.n_balls + 1]
            layout = (b_layout % jnp.uint32(len(self.doors))).astype(jnp.int32)
            count = jnp.asarray(self.key_counts)[layout].astype(jnp.uint32)
            flat = jnp.asarray(self.key_cells)[layout, (b_key % count).astype(jnp.int32)]
            door, key_cell = jnp.asarray(self.doors)[layout], jnp.stack([flat // self.side, flat % self.side]).astype(jnp.int32)
        return MazeState(pos=start, balls=balls, lava=self._lava(bits[self.n_balls + 2:], start), layout=layout,
                         door=door, door_open=jnp.array(False), key=key_cell, has_key=jnp.array(False),
                         collected=jnp.array(0, jnp.int32), time=0)

    def blocked(self, state: MazeState, cell: jax.Array) -> jax.Array:
        door_closed = jnp.logical_and(~state.door_open, jnp.all(cell == state.door))
        r = self.radius
        return jnp.asarray(self.padded)[state.layout, cell[0] + r, cell[1] + r] | door_closed

    def step_env(self, key, state: MazeState, action, params):
        state, reward, terminated = self._transition(state, action, params, self._draw(key, self.n_lava))
        return self.get_obs(state), state, reward, terminated, {}

    def _transition(self, state: MazeState, action, params, lava_bits):
        """(next state, reward, terminated); ``lava_bits``: n_lava words for the next lava."""
        action = jnp.asarray(action, jnp.int32)
        move = jnp.asarray(MOVES)[jnp.clip(action, 0, 3)] * (action < 4)
        target = state.pos + move
        pos = jnp.where(self.blocked(state, target), state.pos, target)
        reward = -params.step_penalty
        hit = jnp.all(state.balls == pos, -1)  # [n_balls]
        on_ball = jnp.any(hit)
        balls = jnp.where(hit[:, None], GONE, state.balls)
        collected = state.collected + on_ball.astype(jnp.int32)
        at_exit = jnp.all(pos == jnp.asarray(self.exit))
        if self.task in ("multigoal", "multigoal-stochastic"):
            reward = reward + on_ball
        if self.task == "multigoal-sparse":
            reward = reward + at_exit * collected / self.n_balls
        hit_lava = jnp.any(jnp.all(state.lava == pos, -1))
        has_key, key_cell, door_open = state.has_key, state.key, state.door_open
        if self.task == "door-key":
            pick = (action == PICK) & jnp.all(pos == state.key)
            has_key = has_key | pick
            key_cell = jnp.where(pick, GONE, key_cell)
            opened = (action == TOGGLE) & has_key & ~door_open & (jnp.sum(jnp.abs(pos - state.door)) == 1)
            door_open = door_open | opened
            reward = reward + opened + at_exit
        lava = self._lava(lava_bits, pos) if self.n_lava else state.lava
        state = state.replace(pos=pos, balls=balls, lava=lava, has_key=has_key, key=key_cell,
                              door_open=door_open, collected=collected, time=state.time + 1)
        return state, jnp.asarray(reward, jnp.float32), at_exit | hit_lava

    def step(self, key, state: MazeState, action, params: MazeParams | None = None):
        """gymnax's auto-resetting step, with one observation less: the reset branch's state is
        chosen first and observed once (its observation is not built and then discarded)."""
        obs, state, reward, terminated, truncated, _, final_obs = self.step_with_final(key, state, action, params)
        info = {"terminated": terminated, "truncated": truncated, "final_observation": final_obs}
        return obs, state, reward, terminated, truncated, info

    def step_with_final(self, key, state: MazeState, action, params: MazeParams | None = None):
        """``step``'s (obs, state, reward, terminated, truncated) and the state before the
        auto-reset with its observation (an ended episode's last state)."""
        params = self.default_params if params is None else params
        bits = self._draw(key, self.n_lava + self._reset_words)  # this step's lava and the reset's objects
        state_st, reward, terminated = self._transition(state, action, params, bits[:self.n_lava])
        state_re = self._reset_from(bits[self.n_lava:])
        obs_st = self.get_obs(state_st)
        truncated = self.is_truncated(state_st, params)
        done = terminated | truncated
        state = jax.tree.map(lambda r, s: jax.lax.select(done, r, s), state_re, state_st)
        return self.get_obs(state), state, reward, terminated, truncated, state_st, obs_st

    def is_terminated(self, state: MazeState, params) -> jax.Array:
        return jnp.all(state.pos == jnp.asarray(self.exit)) | jnp.any(jnp.all(state.lava == state.pos, -1))

    def _channels(self, state: MazeState, walls: jax.Array, origin: jax.Array, k: int) -> jax.Array:
        """[k, k, 7] bool channels of the k×k window whose top-left maze cell is ``origin``."""
        def mark(cells):  # [n, 2] cells → [k, k] mask of those inside the window
            rel = cells.reshape(-1, 2) - origin
            if rel.shape[0] == 1:  # one cell: two compares, cheaper than a scatter
                ar = jnp.arange(k)
                return (ar == rel[0, 0])[:, None] & (ar == rel[0, 1])[None, :]
            # a scatter index in [-k, 0) counts from the end, as in NumPy: a cell just above or left
            # of the window would be drawn at its far edge, so every outside cell is moved to k
            rel = jnp.where(jnp.all((rel >= 0) & (rel < k), -1, keepdims=True), rel, k)
            return jnp.zeros((k, k), bool).at[rel[:, 0], rel[:, 1]].set(True, mode="drop")

        none = jnp.zeros((k, k), bool)  # channels of objects this task never has
        door = jnp.where(state.door_open, GONE, state.door)
        return jnp.stack([walls, mark(state.pos), mark(state.balls) if self.n_balls else none,
                          mark(state.lava) if self.n_lava else none, mark(state.key) if self.task == "door-key" else none,
                          mark(door) if self.task == "door-key" else none, mark(jnp.asarray(self.exit))], -1)

    def grid(self, state: MazeState) -> jax.Array:
        """[S, S, 7] bool channels of the whole maze (bool, as gymnax's MinAtar: 4× less to write
        than float32; ``repthesis.envs`` hands learners float32)."""
        return self._channels(state, jnp.asarray(self.layouts)[state.layout], jnp.zeros(2, jnp.int32), self.side)

    def get_obs(self, state: MazeState, params=None, key=None) -> jax.Array:
        if self.view == "full":
            return self.grid(state)
        k = 2 * self.radius + 1  # the window alone: the same cost in every maze size
        walls = jax.lax.dynamic_slice(jnp.asarray(self.padded)[state.layout], (state.pos[0], state.pos[1]), (k, k))
        return self._channels(state, walls, state.pos - self.radius, k)


COLOURS = np.array([[40, 40, 40], [230, 60, 60], [60, 120, 230], [255, 140, 0], [230, 200, 30], [150, 90, 30],
                    [60, 200, 90]], np.uint8)  # wall, agent, ball, lava, key, door, exit


def render(grid: np.ndarray, cell: int = 8) -> np.ndarray:
    """RGB uint8 [S·cell, S·cell, 3] of a [S, S, 7] maze grid (``Maze.grid``); later channels on top,
    the agent last."""
    grid = np.asarray(grid) > 0.5
    img = np.full(grid.shape[:2] + (3,), 235, np.uint8)
    for ch in (0, 6, 3, 2, 4, 5, 1):
        img[grid[..., ch]] = COLOURS[ch]
    return np.repeat(np.repeat(img, cell, 0), cell, 1)


def make(name: str, **kw) -> Maze:
    """``maze-<size>-<task>`` (agent-centric view) or ``maze-<size>-<task>-full`` (whole maze) → Maze."""
    size, task, view = parse_name(name)
    return Maze(size, task, **{"view": view, **kw})


__all__ = ["Maze", "MazeParams", "MazeState", "SIZES", "TASKS", "VIEWS", "NARROW_WINDOW", "bfs_distances", "env_name",
           "env_names", "make", "make_layout", "parse_name", "render"]
