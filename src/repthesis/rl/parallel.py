"""Data parallelism written once: a 1-D device mesh, shard_map over it, gradient all-reduce.

Per-environment leaves of a learner state are split over the mesh axis; parameters,
optimiser state and counters are replicated. Every update averages gradients with
``lax.pmean`` over ``DATA_AXIS`` (STYLE.md §10), so K devices with B/K envs each compute the
same update as one device with B envs. Multi-host runs are the same program after
``jax.distributed.initialize()`` (see ``launch/``).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(num_devices: int) -> Mesh:
    devices = jax.devices()
    if num_devices < 1 or num_devices > len(devices):
        raise ValueError(
            f"--devices={num_devices}: this host has {len(devices)} {devices[0].platform} device(s); "
            f"valid: 1..{len(devices)}"
        )
    return Mesh(np.array(devices[:num_devices]), (DATA_AXIS,))


def axis_name(mesh: Mesh) -> str | None:
    """The collectives' axis for programs on ``mesh``: None on one device (no collectives)."""
    return DATA_AXIS if mesh.size > 1 else None


def to_shardings(mesh: Mesh, specs):
    """A pytree of PartitionSpecs as NamedShardings on ``mesh``."""
    return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs, is_leaf=lambda x: isinstance(x, P))


def shard_program(fn: Callable, mesh: Mesh, in_specs, out_specs) -> Callable:
    """jit(shard_map(fn)) over ``mesh``; ``fn`` may use collectives over ``DATA_AXIS``.

    On a one-device mesh callers build ``fn`` with ``axis_name(mesh)`` = None (no collectives), and
    the program is a plain ``jit``: it then also composes with ``vmap`` over seeds.

    Inputs and outputs are pinned to the specs' shardings, so feeding an output back in
    (chunk after chunk) hits the compilation cache instead of recompiling.
    """
    program = fn if axis_name(mesh) is None else jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs)
    return jax.jit(program, in_shardings=to_shardings(mesh, in_specs), out_shardings=to_shardings(mesh, out_specs))


def per_device(tree, axis_name: str | None = DATA_AXIS):
    """Mark replicated values (parameters) as per-device before differentiating.

    Under ``shard_map``'s varying-axis typing, the gradient of a replicated input is
    implicitly psum'd over devices; casting it to varying first keeps each device's gradient
    local, so the explicit ``pmean`` below is the one all-reduce and it averages.
    """
    if axis_name is None:
        return tree
    return jax.tree.map(lambda x: jax.lax.pcast(x, (axis_name,), to="varying"), tree)


def pmean(tree, axis_name: str | None = DATA_AXIS):
    """Average a pytree (gradients, metrics) over ``axis_name``; identity when it is None."""
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def psum(tree, axis_name: str | None = DATA_AXIS):
    return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def chunk_programs(update: Callable, n: int, summarise: Callable, mesh: Mesh, specs, python_loop: bool,
                   constants=None):
    """(run_chunk, scan_chunk) for ``n`` updates ``update(state, constants) -> (state, per_update)``.

    ``constants`` (e.g. a training set) are replicated program arguments, not closed-over arrays:
    XLA would embed a closed-over array in the program as a literal (slow to compile and, on CPU,
    to run: 50k MNIST images made each update 0.7 s).

    ``scan_chunk`` is one program: a ``lax.scan`` over the n updates, then ``summarise`` of the
    stacked per-update outputs. With ``python_loop``, ``run_chunk`` instead calls a one-update
    program (no loop at all: even a one-trip scan is a loop to XLA) n times and summarises the
    same stacked outputs: XLA:CPU runs convolution gradients several times slower inside loop
    bodies (jax-ml/jax#12868). Otherwise ``run_chunk`` is ``scan_chunk``.
    """

    const_specs = jax.tree.map(lambda _: P(), constants)

    def chunk(state, constants):
        state, per_update = jax.lax.scan(lambda s, _: update(s, constants), state, None, n)
        return state, summarise(per_update)

    def one(state, constants):
        state, out = update(state, constants)
        return state, jax.tree.map(lambda x: x[None], out)

    scan_program = shard_program(chunk, mesh, in_specs=(specs, const_specs), out_specs=(specs, P()))
    one_update = shard_program(one, mesh, in_specs=(specs, const_specs), out_specs=(specs, P()))

    def scan_chunk(state):
        return scan_program(state, constants)

    def run_chunk(state):
        outs = []
        for _ in range(n):
            state, out = one_update(state, constants)
            outs.append(out)
        return state, summarise(jax.tree.map(lambda *xs: jnp.concatenate(xs), *outs))

    scan_chunk._cache_size = scan_program._cache_size  # compilations, as a jitted function reports them
    run_chunk._cache_size = one_update._cache_size
    scan_chunk.lower = lambda state: scan_program.lower(state, constants)  # ahead-of-time compile, as jit has
    run_chunk.lower = lambda state: one_update.lower(state, constants)  # (the python loop compiles one update)
    return (run_chunk if python_loop else scan_chunk), scan_chunk


UPDATE_LOOPS = ("auto", "scan", "python")  # how a chunk runs its updates (``chunk_programs``)


def python_update_loop(update_loop: str) -> bool:
    """Whether a chunk loops its updates from Python: 'python', or 'auto' on CPU, where XLA runs
    convolution gradients (jax-ml/jax#12868) and some gymnax env steps (``throughput.py --loops``)
    several times slower inside a loop body."""
    if update_loop == "auto":
        return jax.default_backend() == "cpu"
    return update_loop == "python"
