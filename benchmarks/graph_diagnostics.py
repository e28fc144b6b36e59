"""Diagnostics of a phase-1 run (``--algo=world-graph``) on fresh random walks of its maze.

Prints, per free latent step (z_1 .. z_{T-1}) of ``--walks`` random walks of the run's length T:

* KL(Kuma(a, 1) ‖ Beta(α, β)) as the run's loss saw it (Eq. 3.5 cut after the run's ``kl_terms``)
  and exactly (the whole series, ``hardkuma.kl_kuma1_beta``): whether training exploited the cut;
* quantiles of the posterior's a and the prior's α, β;
* the expected number of selected states per walk, E‖z‖₀, against the target μ0;
* per cell: the correlation between the prior mean α/(α+β) (which picks the waypoints) and how
  often the posterior selects the cell, and the overlap of their top 20 %;
* the last logged multipliers λ1..3 (App. 3.C.1 reports 0.067, 0.070, 0.051 on its medium maze).

    python benchmarks/graph_diagnostics.py RUN_DIR [--walks=2048] [--seed=0] [--append=FILE]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys

import jax.numpy as jnp
import numpy as np

from repthesis.algos import world_graph
from repthesis.gen import hardkuma as hk
from repthesis.rl import world_graph as wg


def diagnose(run_dir: str, walks: int = 2048, seed: int = 0) -> list[str]:
    trainer, state = world_graph.load_run(run_dir)
    cfg, vae, side = trainer.cfg, trainer.vae, trainer.env.side
    rng = np.random.default_rng(seed)
    open_cells = np.argwhere(~trainer.env.walls)
    starts = open_cells[rng.integers(len(open_cells), size=walks)]
    cells, actions = wg.random_walks(trainer.env.walls, starts, cfg.rollout_len, rng)
    states = jnp.asarray(cells[..., 0] * side + cells[..., 1])
    params = state.params["vae"]
    inner = slice(1, -1)
    a = vae.apply(params, states, jnp.asarray(actions), method=vae.posterior)[:, inner]
    alpha, beta = (x[:, inner] for x in vae.apply(params, states, method=vae.prior))
    ones = jnp.ones_like(a)
    cut = np.asarray(hk.kl_kuma1_beta(a, alpha, beta, cfg.kl_terms))
    exact = np.asarray(hk.kl_kuma1_beta(a, alpha, beta))
    selected = 1.0 - np.asarray(hk.prob_zero(a, ones))
    flat = np.asarray(states[:, inner]).ravel()
    hits, counts = np.zeros(side * side), np.zeros(side * side)
    np.add.at(hits, flat, selected.ravel())
    np.add.at(counts, flat, 1)
    seen = counts >= 20
    freq = hits[seen] / counts[seen]
    prior_mean = np.asarray(trainer.prior_mean(state.params)).ravel()[seen]
    k = max(1, round(0.2 * seen.sum()))
    overlap = len(set(np.argsort(-prior_mean)[:k]) & set(np.argsort(-freq)[:k]))
    q = lambda x: " / ".join(f"{v:.3g}" for v in np.percentile(np.asarray(x), [5, 50, 95]))  # noqa: E731
    with open(os.path.join(run_dir, "metrics.csv")) as f:
        last = list(csv.DictReader(f))[-1]
    terms = f"{cfg.kl_terms} terms" if cfg.kl_terms else "the whole series"
    return [
        f"run {run_dir}: {cfg.maze} maze, view {cfg.view}, {last['iteration']} iterations, VAE lr {cfg.learning_rate:g}, "
        f"KL in training: {terms}; {walks} random walks of T = {cfg.rollout_len} (seed {seed})",
        f"- KL per step: as trained {cut.mean():.3f} (below 0 at {np.mean(cut < 0):.0%} of steps), exact {exact.mean():.3f}",
        f"- posterior a (5th / 50th / 95th percentile): {q(a)}; prior α: {q(alpha)}; prior β: {q(beta)}",
        f"- selected states per walk E‖z‖₀: {selected.sum(1).mean():.2f} (target μ0 = {cfg.l0_target:g} of "
        f"{cfg.rollout_len - 1})",
        f"- {int(seen.sum())} cells seen ≥ 20 times: corr(prior mean, selection frequency) "
        f"{np.corrcoef(prior_mean, freq)[0, 1]:.3f}; top 20 % overlap {overlap} / {k}",
        f"- last logged λ1 (KL) {float(last['lambda_kl']):.3f}, λ2 (L0) {float(last['lambda_l0']):.3f}, "
        f"λ3 (LT) {float(last['lambda_transitions']):.3f}; recon {float(last['recon']):.3f} nats, "
        f"action accuracy {float(last['action_accuracy']):.3f}",
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a --algo=world-graph run directory")
    p.add_argument("--walks", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--append", default=None, help="also append the lines to this Markdown file")
    args = p.parse_args(argv)
    if args.walks < 1:
        p.error(f"--walks={args.walks} must be >= 1")
    if not os.path.exists(os.path.join(args.run, "config.json")):
        p.error(f"{args.run!r} holds no run (no config.json); valid: a --algo=world-graph run directory")
    try:
        lines = diagnose(args.run, args.walks, args.seed)
    except (ValueError, FileNotFoundError) as e:
        p.error(str(e))
    print("\n".join(lines))
    if args.append:
        with open(args.append, "a") as f:
            f.write("\n".join(lines) + "\n\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
