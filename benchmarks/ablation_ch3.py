"""Thesis Tables 3.2 and 3.3 (and Fig. 3.4's validation curves) on the chapter-3 mazes.

    python benchmarks/ablation_ch3.py --budget=smoke|cpu|paper [--sizes=small] [--tasks=...] [--seeds=3]
        [--columns=a2c,fn,wn-init,wn-trav,wn-init-trav,wn-rand] [--steps=N]

1. Phase 1, once per maze size (shared by every task, as in §3.5.1): ``--algo=world-graph`` for the
   budget's iterations, into ``<out>/graphs/<size>`` (reused when it is already there).
2. Phase 2, per task × column × seed: the column's algorithm for the budget's env steps. Every
   ``eval_every`` chunks the policy plays 10 validation episodes (seeds never used in training);
   the parameters with the best validation score are then tested on 100 test episodes (§3.5.1's
   protocol). The score is the episode reward for the MultiGoal tasks and the success rate
   (exit reached) for Door-Key. Policies act by sampling their actions in validation and test.
3. ``results.md``: Table 3.2 (columns A2C, FN + π_g init, WN + π_g init, WN + traversal,
   WN + π_g init + traversal) and Table 3.3 (learned V_p vs random V_rand, both with π_g init and
   traversal), mean ± std over seeds of each seed's test score; ``curves_<size>.png``: validation
   score over training (mean and std over seeds, Fig. 3.4); ``results.json``. Rewritten after
   every run, so a partial run already reports. A later run with the same budget and seeds keeps
   the task × column cells it does not run (each with the command that produced it); a cell run
   again is replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

from repthesis import registry, train
from repthesis.envs import maze
from repthesis.rl.evaluation import runner_for
from repthesis.utils.logging import machine_description

BUDGETS = {  # phase-1 iterations (+ options), phase-2 env steps per run, envs, updates per chunk, chunks between validations
    "smoke": dict(graph_iterations=20, graph_options=["--batch-size=32", "--waypoint-warmup=5", "--edge-walks=8"],
                  steps=7_680, num_envs=16, updates_per_chunk=4, eval_every=1),
    # cpu: a third of App. 3.C.1's 3600 phase-1 iterations at 3× its VAE learning rate (1e-4)
    "cpu": dict(graph_iterations=1200, graph_options=["--learning-rate=3e-4"], steps=1_536_000, num_envs=64, updates_per_chunk=20,
                eval_every=2),
    "paper": dict(graph_iterations=3600, graph_options=[], steps=100_000 * 60 * 64, num_envs=64,
                  updates_per_chunk=100, eval_every=20),
}
# column key -> (header, algo, overrides)
COLUMNS = {
    "a2c": ("A2C", "a2c", {}),
    "fn": ("FN + π_g init", "feudal", {}),
    "wn-init": ("+ π_g-init", "feudal-wn", {"traversal": False}),
    "wn-trav": ("+ G_w-traversal", "feudal-wn", {"pi_g_init": False}),
    "wn-init-trav": ("+ π_g-init + G_w-traversal", "feudal-wn", {}),
    "wn-rand": ("V_rand, + π_g-init + G_w-traversal", "feudal-wn", {"waypoints": "random"}),
    # ours, not in the thesis: the Worker starts as π_g towards its narrow goal (pi_g_worker)
    "wn-initw": ("+ π_g-init, Worker = π_g", "feudal-wn", {"traversal": False, "pi_g_worker": True}),
    "wn-initw-trav": ("+ π_g-init, Worker = π_g + G_w-traversal", "feudal-wn", {"pi_g_worker": True}),
}
THESIS_COLUMNS = ("a2c", "fn", "wn-init", "wn-trav", "wn-init-trav", "wn-rand")  # the default --columns
TABLE_32 = ("a2c", "fn", "wn-init", "wn-trav", "wn-init-trav")
THESIS_32 = {  # Table 3.2 by maze size ("Larger" there): mean ± std as printed; None: the agent failed
    "small": {"multigoal": ("2.04±0.05", "2.93±0.74", "5.25±0.13", "3.92±0.22", "5.05±0.03"),
              "multigoal-sparse": (None, None, "0.39±0.09", "0.24±0.04", "0.42±0.07"),
              "multigoal-stochastic": ("1.38±1.20", "1.93±0.16", "3.06±0.31", None, "2.92±0.45"),
              "door-key": (None, None, "0.99±0.00", "0.37±0.15", "0.92±0.02")},
    "medium": {"multigoal": (None, None, "5.15±0.11", "2.56±0.09", "3.00±0.90"),
               "multigoal-sparse": (None, None, None, "0.20±0.04", "0.25±0.03"),
               "multigoal-stochastic": (None, None, "2.99±0.12", "2.42±0.24", "2.64±0.14"),
               "door-key": (None, None, "0.56±0.02", None, "0.76±0.06")},
    "large": {"multigoal": (None, None, None, "2.18±0.12", "2.72±0.59"),
              "multigoal-sparse": (None, None, None, "0.16±0.22", "0.26±0.11"),
              "multigoal-stochastic": (None, None, None, None, "0.60±0.12"),
              "door-key": (None, None, None, None, "0.26±0.19")},
}
THESIS_33 = {  # Table 3.3, large maze: learned V_p, random V_rand (both with π_g init and traversal)
    "multigoal": ("2.72±0.59", "2.30±0.49"), "multigoal-sparse": ("0.26±0.11", "0.19±0.11"),
    "multigoal-stochastic": ("0.60±0.12", "0.41±0.25"), "door-key": ("0.26±0.19", "0.27±0.40"),
}
VAL_SEEDS = np.arange(10, dtype=np.uint32) + np.uint32(3_000_000)
TEST_SEEDS = np.arange(100, dtype=np.uint32) + np.uint32(4_000_000)


def build_graph(size: str, iterations: int, options: list, out: str) -> str:
    path = os.path.join(out, "graphs", size)
    if os.path.exists(os.path.join(path, "graph.json")):
        print(f"world graph for the {size} maze: reusing {path}")
        return path
    if os.path.exists(path):  # an unfinished phase 1: start it again
        import shutil

        shutil.rmtree(path)
    code = train.main(["--algo=world-graph", f"--maze={size}", f"--total-iterations={iterations}",
                       f"--iterations-per-chunk={min(100, iterations)}", f"--out={path}", "--no-progress", *options])
    if code != 0:
        raise SystemExit(f"phase 1 on the {size} maze failed (exit {code})")
    return path


def graph_summary(size: str, path: str, out: str) -> dict:
    """Phase 1's last logged VAE figures and the graph's size; its picture copied to the results."""
    import csv
    import shutil

    with open(os.path.join(path, "metrics.csv")) as f:
        last = list(csv.DictReader(f))[-1]
    with open(os.path.join(path, "graph.json")) as f:
        graph = json.load(f)
    shutil.copyfile(os.path.join(path, "graph.png"), os.path.join(out, f"graph_{size}.png"))
    return {"iterations": int(last["iteration"]), "recon": float(last["recon"]),
            "action_accuracy": float(last["action_accuracy"]), "selected": float(last["selected"]),
            "waypoints": len(graph["waypoints"]), "edges": len(graph["edges"])}


def make_scorer(trainer, algo: str, task: str):
    """params, seeds -> per-episode scores: reward, or success for Door-Key (sampled actions)."""
    if algo == "a2c":
        run = runner_for(trainer, "vote-1", sample_actions=True)
        limit = trainer.env.max_episode_steps

        def score(params, seeds):
            out = run(params, seeds)
            # Door-Key has no lava: an episode ends before its limit only at the exit
            success = np.asarray(out["finished"]) & (np.asarray(out["lengths"]) < limit)
            return success.astype(float) if task == "door-key" else np.asarray(out["returns"])
        return score
    run = trainer.runner("sample")

    def score(params, seeds):
        out = run(params, seeds)
        return np.asarray(out["success"] if task == "door-key" else out["returns"])
    return score


def train_one(algo, overrides, budget, seed, trainer=None):
    cfg = registry.make_config(algo, {**overrides, "total_env_steps": budget["steps"], "num_envs": budget["num_envs"],
                                      "updates_per_chunk": budget["updates_per_chunk"], "val_episodes": 0})
    if trainer is None:
        kw = {"env_seed": seed}
        trainer = registry.get_algo(algo).make_train(cfg, **kw)
    task = maze.parse_name(cfg.env)[1]
    score = make_scorer(trainer, algo, task)
    state = trainer.init(jax.random.PRNGKey(seed))
    best, best_params, curve = -np.inf, state.params, []
    t0 = time.time()
    for chunk in range(cfg.num_chunks):
        state, metrics = trainer.run_chunk(state)
        if (chunk + 1) % budget["eval_every"] == 0 or chunk == cfg.num_chunks - 1:
            val = float(np.mean(score(state.params, VAL_SEEDS)))
            curve.append(((chunk + 1) * cfg.steps_per_chunk, val))
            if val > best:
                best, best_params = val, jax.device_get(state.params)
    train_s = time.time() - t0
    test = float(np.mean(score(best_params, TEST_SEEDS)))
    return trainer, {"test": test, "best_val": best, "curve": curve, "train_s": train_s,
                     "sps": cfg.num_chunks * cfg.steps_per_chunk / train_s}


def fmt(v):
    return f"{np.mean(v):.2f}±{np.std(v):.2f}" if len(v) else "–"


def sizes_of(results) -> list:
    """The maze sizes that ``results`` (keys 'size task column') holds, in the package's order."""
    return [s for s in maze.SIZES if any(k.split()[0] == s for k in results)]


def tasks_of(results, size: str) -> list:
    """The tasks with at least one recorded cell on the ``size`` maze, in the package's order."""
    return [t for t in maze.TASKS if any(f"{size} {t} {c}" in results for c in COLUMNS)]


def write_report(args, out, budget, results, commands, graphs=None) -> str:
    """results.md and results.json of every task recorded; ``commands``: the runs that produced them."""
    sizes = sizes_of(results)

    def cell(size, task, column):
        return fmt([r["test"] for r in results.get(f"{size} {task} {column}", [])])

    view = "" if args.view == "ego" else f", {args.view} view"
    lines = [f"# Tables 3.2 / 3.3 form on the chapter-3 mazes ({args.budget} budget{view})", ""]
    for r in commands:
        cells = {}  # "size task" -> its columns run by this command
        for key in r["cells"]:
            cells.setdefault(key.rsplit(" ", 1)[0], []).append(key.rsplit(" ", 1)[1])
        done = "; ".join(f"{t}: {'all columns' if set(cs) == set(THESIS_COLUMNS) else ', '.join(cs)}"
                         for t, cs in cells.items())
        lines.append(f"Command: `{r['command']}` ({done}): {r['machine']}; wall time {r['wall_s']:.0f}s  ")
    lines += [
             f"Budget: phase 1 {budget['graph_iterations']} iterations {' '.join(budget['graph_options'])} (seed 0, one "
             f"graph per maze size); phase 2 "
             f"{budget['steps']:,} env steps per run ({budget['num_envs']} envs × 60-step rollouts), seeds "
             f"0..{args.seeds - 1}; the best of the validations (10 episodes, every {budget['eval_every']} chunks) "
             f"tested on 100 episodes.  ",
             "Score: episode reward (MultiGoal tasks) or success rate (Door-Key), mean ± std over seeds of each "
             "seed's test mean; actions sampled from the policies. Thesis numbers in brackets: Table 3.2 (its "
             "'Larger' row for large) and, on the large maze, Table 3.3; 'failed': the thesis reports no result "
             "(its agent failed).", ""]
    for size in sizes:
        size_tasks = tasks_of(results, size)
        lines += [f"## Table 3.2, {size} maze", "",
                  "| task | " + " | ".join(COLUMNS[c][0] for c in TABLE_32) + " |", "|---" * (len(TABLE_32) + 1) + "|"]
        for task in size_tasks:
            cells = []
            for i, c in enumerate(TABLE_32):
                cells.append(f"{cell(size, task, c)} [{THESIS_32[size][task][i] or 'failed'}]")
            lines.append(f"| {task} | " + " | ".join(cells) + " |")
        lines += ["", f"## Table 3.3, {size} maze (both with π_g init and traversal)", "",
                  "| waypoints | " + " | ".join(size_tasks) + " |", "|---" * (len(size_tasks) + 1) + "|"]
        for i, (label, c) in enumerate((("learned V_p", "wn-init-trav"), ("random V_rand", "wn-rand"))):
            lines.append(f"| {label} | " + " | ".join(
                cell(size, t, c) + (f" [{THESIS_33[t][i]}]" if size == "large" else "") for t in size_tasks) + " |")
        lines.append("")
        pairs = (("wn-init", "wn-initw"), ("wn-init-trav", "wn-initw-trav"))  # thesis's column, ours
        ours = [t for t in size_tasks if any(f"{size} {t} {b}" in results for _, b in pairs)]
        if ours:  # π_g's whole policy as the Worker's start, beside the thesis's encoder-only copy
            lines += [f"## Ours, {size} maze: the Worker starts as π_g (`--pi-g-worker=true`) against the thesis's "
                      "encoder-only π_g init", "",
                      "| task | " + " | ".join(f"{COLUMNS[a][0]} | {COLUMNS[b][0]}" for a, b in pairs) + " |",
                      "|---" * 5 + "|"]
            for t in ours:
                lines.append(f"| {t} | " + " | ".join(cell(size, t, c) for pair in pairs for c in pair) + " |")
            lines.append("")

    def compare(a, b):
        """'holds' / 'does NOT hold' for mean(a) ≥ mean(b), or 'not resolved' when the means are closer
        than the larger of the two seed standard deviations."""
        (ma, sa), (mb, sb) = ((np.mean(x), np.std(x)) for x in (a, b))
        if abs(ma - mb) <= max(sa, sb):
            return f"not resolved ({ma:.2f} vs {mb:.2f}, within one seed std)"
        return f"{'holds' if ma >= mb else 'does NOT hold'} ({ma:.2f} vs {mb:.2f})"

    ordering = []
    for size in sizes:
        for task in tasks_of(results, size):
            scores = {c: [r["test"] for r in results[f"{size} {task} {c}"]]
                      for c in TABLE_32 if results.get(f"{size} {task} {c}")}
            if len(scores) == len(TABLE_32):
                mean = {c: np.mean(v) for c, v in scores.items()}
                alone = min(("wn-init", "wn-trav"), key=mean.get)  # the weaker: "≥ either" needs both
                better_alone = max(("wn-init", "wn-trav"), key=mean.get)
                base = max(("a2c", "fn"), key=mean.get)
                ordering.append(f"- {size} {task}: both ≥ either alone: "
                                f"{compare(scores['wn-init-trav'], scores[better_alone])}; "
                                f"either alone ≥ baselines: {compare(scores[alone], scores[base])}")
    if ordering:  # tasks with every column of Table 3.2
        lines += ["Ordering the thesis claims (per task, mean test score): π_g init + traversal ≥ either alone ≥ "
                  "baselines (A2C, FN).", "", *ordering]
    if graphs:
        lines += ["", "Phase 1 (world graph per maze size, last logged chunk of `--algo=world-graph`; uniform "
                  "action reconstruction is 1.39 nats; μ0 = 5 of 24 states targeted):", "",
                  "| maze | iterations | recon (nats/action) | action accuracy | states selected | waypoints | edges |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {size} | {g['iterations']} | {g['recon']:.3f} | {g['action_accuracy']:.3f} | {g['selected']:.1f} | "
                  f"{g['waypoints']} | {g['edges']} |" for size, g in graphs.items()]
        lines += ["", "Graphs: " + ", ".join(f"`graph_{s}.png`" for s in graphs)]
    lines += ["", "Curves: " + ", ".join(f"`curves_{s}.png`" for s in sizes)]
    path = os.path.join(out, "results.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"budget": budget, "seeds": args.seeds, "view": args.view, "runs": commands, "graphs": graphs,
                   "results": results}, f, indent=1)
    return path


def plot(out, results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for size in sizes_of(results):
        tasks = tasks_of(results, size)
        fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            for c in COLUMNS:
                runs = results.get(f"{size} {task} {c}", [])
                if not runs:
                    continue
                n = min(len(r["curve"]) for r in runs)
                x = np.array([p[0] for p in runs[0]["curve"][:n]])
                y = np.array([[p[1] for p in r["curve"][:n]] for r in runs])
                ax.plot(x, y.mean(0), label=COLUMNS[c][0])
                ax.fill_between(x, y.mean(0) - y.std(0), y.mean(0) + y.std(0), alpha=0.2)
            ax.set_title(f"{size} {task}", fontsize=9)
            ax.set_xlabel("env steps")
            ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0))
            ax.set_ylabel("success rate" if task == "door-key" else "validation reward")
        axes[0][0].legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"curves_{size}.png"), dpi=100)
        plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", default="smoke", choices=tuple(BUDGETS))
    p.add_argument("--sizes", default="small", help=f"comma-separated maze sizes ({', '.join(maze.SIZES)})")
    p.add_argument("--tasks", default=",".join(maze.TASKS))
    p.add_argument("--columns", default=",".join(THESIS_COLUMNS),
                   help=f"valid: {', '.join(COLUMNS)} (default: the thesis's, {', '.join(THESIS_COLUMNS)})")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=None, help="override the budget's env steps per phase-2 run")
    p.add_argument("--view", default="ego", choices=maze.VIEWS,
                   help="observation of every agent and of π_g: ego (7×7 window, default) or full (the whole maze)")
    p.add_argument("--out", default=None, help="default: results/ablation_ch3_<budget>[_full]")
    p.add_argument("--report-only", action="store_true", help="rewrite results.md and the plots from results.json")
    args = p.parse_args(argv)
    for name, valid in (("sizes", maze.SIZES), ("tasks", maze.TASKS), ("columns", COLUMNS)):
        value = getattr(args, name).split(",")
        bad = [v for v in value if v not in valid]
        if bad:
            p.error(f"--{name}: unknown {','.join(bad)}; valid: {','.join(valid)}")
        setattr(args, name, value)
    if args.seeds < 1:
        p.error(f"--seeds={args.seeds} must be >= 1")
    budget = dict(BUDGETS[args.budget])
    if args.steps is not None:
        budget["steps"] = args.steps
    suffix = "" if args.view == "ego" else f"_{args.view}"
    out = args.out or os.path.join(os.path.dirname(__file__), "results", f"ablation_ch3_{args.budget}{suffix}")
    os.makedirs(out, exist_ok=True)
    if args.report_only:
        with open(os.path.join(out, "results.json")) as f:
            saved = json.load(f)
        args.view = saved.get("view", "ego")  # records before the view switch are all ego
        same = lambda b: {**b, "steps": 0} == {**saved["budget"], "steps": 0}  # noqa: E731 (--steps may differ)
        args.budget = next((name for name, b in BUDGETS.items() if same(b)), args.budget)
        plot(out, saved["results"])
        path = write_report(args, out, saved["budget"], saved["results"], saved["runs"], saved.get("graphs"))
        print(open(path).read())
        return 0
    t0, results, graphs, commands = time.time(), {}, {}, []
    mine = [f"{s} {t} {c}" for s in args.sizes for t in args.tasks for c in args.columns]  # this run's cells
    path = os.path.join(out, "results.json")
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if (saved["budget"], saved["seeds"], saved.get("view", "ego")) == (budget, args.seeds, args.view):
            results = {k: v for k, v in saved["results"].items() if k not in mine}
            commands = [{**r, "cells": [k for k in r["cells"] if k not in mine]} for r in saved["runs"]]
            commands, graphs = [r for r in commands if r["cells"]], saved.get("graphs") or {}
        else:
            print(f"{path}: another budget, seed count or view; starting a new record")
    commands.append({"command": f"python benchmarks/ablation_ch3.py {' '.join(sys.argv[1:])}", "machine": machine_description(),
                     "cells": mine, "wall_s": 0.0})
    for size in args.sizes:
        graph = build_graph(size, budget["graph_iterations"], [*budget["graph_options"], f"--view={args.view}"], out)
        graphs[size] = graph_summary(size, graph, out)
        for task in args.tasks:
            for c in args.columns:
                header, algo, over = COLUMNS[c]
                over = {**over, "env": maze.env_name(size, task, args.view)}
                if algo != "a2c":
                    over["graph"] = graph
                trainer = None
                for seed in range(args.seeds):
                    trainer, r = train_one(algo, over, budget, seed, None if c == "wn-rand" else trainer)
                    results.setdefault(f"{size} {task} {c}", []).append(r)
                    print(f"{size} {task:22s} {header:36s} seed {seed}: test {r['test']:.3f} (best val "
                          f"{r['best_val']:.3f}, {r['train_s']:.0f}s, {r['sps']:.0f} steps/s)", flush=True)
                    commands[-1]["wall_s"] = time.time() - t0
                    write_report(args, out, budget, results, commands, graphs)
                    plot(out, results)
    commands[-1]["wall_s"] = time.time() - t0
    path = write_report(args, out, budget, results, commands, graphs)
    print(open(path).read())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
