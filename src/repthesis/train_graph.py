"""The world-graph side of ``python -m repthesis.train`` (``--algo=world-graph --maze=small``): the
same run directory, checkpoints, ``--resume``, NaN stop and curves as the other algorithms,
counted in iterations of Alg. 6; at the end the graph is built and written as ``graph.json``
and drawn as ``graph.png``. Input was validated by ``train.resolve`` before this runs."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time

from repthesis import registry


def draw_graph(env, graph, prior_mean, path: str) -> str:
    """The maze with the prior mean as a heat map on open cells, waypoints as squares and edges as
    arrows (thin: random-walk / π_g paths between adjacent waypoints)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(np.where(env.walls, 0.15, 1.0), cmap="gray", vmin=0, vmax=1)
    heat = ax.imshow(np.ma.masked_invalid(prior_mean), cmap="viridis", alpha=0.55)
    fig.colorbar(heat, ax=ax, fraction=0.046, label="prior mean α/(α+β)")
    for (i, j) in graph.edges:
        (r0, c0), (r1, c1) = graph.waypoints[i], graph.waypoints[j]
        ax.annotate("", xy=(c1, r1), xytext=(c0, r0), arrowprops=dict(arrowstyle="->", color="tab:red", lw=0.8,
                                                                     alpha=0.6))
    ax.scatter(graph.waypoints[:, 1], graph.waypoints[:, 0], marker="s", s=60, color="tab:blue", label="waypoints")
    ax.scatter([env.exit[1]], [env.exit[0]], marker="*", s=120, color="tab:green", label="exit")
    ax.set_title(f"{len(graph.waypoints)} waypoints, {len(graph.edges)} edges")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_graph(args, cfg) -> int:
    import jax

    from repthesis.utils.checkpoint import CheckpointStore, report_non_finite, resume_run
    from repthesis.utils.logging import MetricsLog, plot_curve, progress_bar, timed_chunk

    out = args.out
    trainer = registry.get_algo(args.algo).make_train(cfg)
    if not args.resume:
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump({"algo": args.algo, "seed": args.seed, "config": dataclasses.asdict(cfg)}, f, indent=2)
    ckpts = CheckpointStore(os.path.join(out, "checkpoints"))
    log = MetricsLog(out, step_key="iteration")
    state = trainer.init(jax.random.PRNGKey(args.seed))
    start_chunk = 0
    if args.resume:
        resumed = resume_run(ckpts, state, trainer.restore, log, cfg.iterations_per_chunk, cfg.num_chunks, "iteration")
        if resumed is None:
            return 2
        state, start_chunk = resumed
    per = cfg.iterations_per_chunk
    bar = progress_bar(cfg.num_chunks * per, start_chunk * per, "it", args.no_progress)
    t_start, last_ckpt = time.time(), (ckpts.steps()[-1] if ckpts.steps() else None)
    for chunk in range(start_chunk, cfg.num_chunks):
        new_state, metrics, dt = timed_chunk(trainer.run_chunk, state)
        if not math.isfinite(metrics["recon"]):
            bar.close()
            return report_non_finite("recon", metrics["recon"], chunk, last_ckpt, ckpts)
        state = new_state
        step = int(state.step)
        row = {"iteration": step, **metrics, "iterations_per_s": per / dt,
               "wall_time": time.time() - t_start}
        if (chunk + 1) % cfg.checkpoint_every == 0 or chunk == cfg.num_chunks - 1:
            ckpts.save(step, state)
            last_ckpt = step
            plot_curve(log.rows() + [row], os.path.join(out, "curve.png"), f"world graph, {cfg.maze} maze (seed {args.seed})",
                       keys=("action_accuracy", "goal_reached", "recon"), x_key="iteration", xlabel="iterations (Alg. 6)",
                       ylabel="accuracy / rate / nats per action")
        log.append(row)
        bar.update(per)
        bar.set_postfix({"recon": f"{metrics['recon']:.3f}", "goal": f"{metrics['goal_reached']:.2f}"})
        if args.no_progress or not sys.stderr.isatty():
            print(f"[{step:>6d} it] recon {metrics['recon']:.3f}  action acc {metrics['action_accuracy']:.3f}  "
                  f"π_g reached {metrics['goal_reached']:.2f}  selected {metrics['selected']:.1f}  "
                  f"it/s {row['iterations_per_s']:.1f}", flush=True)
    bar.close()
    graph = trainer.build_graph(state, seed=args.seed)
    graph_path = os.path.join(out, "graph.json")
    graph.save(graph_path)
    png = draw_graph(trainer.env, graph, trainer.prior_mean(state.params), os.path.join(out, "graph.png"))
    log.close()
    ckpts.close()
    print(f"done: {cfg.num_chunks * per} iterations in {time.time() - t_start:.0f}s; "
          f"{len(graph.waypoints)} waypoints, {len(graph.edges)} edges")
    print(f"  {'graph:':16s}{graph_path}\n  {'graph plot:':16s}{png}\n  {'curve:':16s}{os.path.join(out, 'curve.png')}")
    print(f"  {'metrics:':16s}{log.path}\n  {'checkpoint:':16s}{os.path.join(ckpts.directory, str(last_ckpt))} "
          f"(π_g: params['policy'])")
    return 0
