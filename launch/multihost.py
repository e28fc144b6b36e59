"""Multi-host entry point: ``jax.distributed.initialize()`` then the ordinary training CLI.

Every host runs the same command; JAX discovers the coordinator from the cluster
environment (SLURM, TPU pods, or ``--coordinator/--num-processes/--process-id``).
``--devices`` then counts the devices of *all* hosts (``jax.devices()`` is global after
initialisation), and the data-parallel update is the same ``shard_map`` + ``pmean`` program.

    srun python launch/multihost.py --algo=hpa3c --devices=16 --out=runs/hpa3c-16
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--coordinator", default=None, help="host:port of process 0 (auto-detected on SLURM/TPU)")
    p.add_argument("--num-processes", type=int, default=None)
    p.add_argument("--process-id", type=int, default=None)
    known, rest = p.parse_known_args(argv)
    import jax

    jax.distributed.initialize(known.coordinator, known.num_processes, known.process_id)
    print(f"process {jax.process_index()}/{jax.process_count()}: {jax.local_device_count()} local, "
          f"{jax.device_count()} global devices", flush=True)
    from repthesis import train

    if jax.process_index() != 0:
        rest = rest + ["--no-progress"]
    return train.main(rest)


if __name__ == "__main__":
    sys.exit(main())
