"""Thesis Tables 2.2 / 2.3 / 2.5 on MinAtar proxies of the Atari games (gymnax, no ROMs).

    python benchmarks/ablation_ch2.py --budget=smoke|cpu|paper [--games=...] [--algos=...] [--seeds=3]
        [--detail-game=GAME]

For every game × algorithm, ``--seeds`` independent runs are trained, chunk by chunk as the CLI
trains. Each run's *final* model is tested on 10 test seeds (never used in
training): MAP and vote-5 (majority over 5 sampled activations). Writes Markdown tables in the
thesis's form (Table 2.2: Best / Avg. over runs; Table 2.3: MAP vs vote-1/5/50; Table 2.5:
per-iteration vs per-step noise for NoisyNet-A3C and SA3C) and learning
curves (median and range over seeds) as PNGs, into ``benchmarks/results/ablation_ch2_<budget>/``.
Tables 2.3 and 2.5 are on ``--detail-game``: the thesis's Seaquest by default (at the ``cpu``
budget every algorithm's MAP policy scored 0 on Seaquest-MinAtar in all 3 runs, so that command uses
Freeway).
Each game's results are kept in ``results.json``: a later run of the same budget, seeds and algos
with other ``--games`` adds to the tables (a game run again is replaced).
Differences from the thesis protocol: no per-checkpoint validation selection (final models),
MinAtar games and MinAtar-sized networks instead of Atari with the thesis CNN.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np

from repthesis import registry
from repthesis.configs import ch2_minatar
from repthesis.rl.evaluation import runner_for
from repthesis.utils.logging import machine_description

BUDGETS = {  # env steps per run
    "smoke": 64_000,
    "cpu": 1_000_000,
    "paper": 10_000_000,
}
ALGOS = ("a3c", "sa3c", "fsa3c", "hpa3c", "noisynet-a3c")
GAMES = ("Seaquest",) + tuple(g for g in ch2_minatar.GAMES if g != "Seaquest")  # Seaquest first: the thesis's 2.3/2.5
TEST_SEEDS = np.arange(10, dtype=np.uint32) + np.uint32(2_000_000)


def train_seeds(algo: str, overrides: dict, seeds: int, steps: int):
    cfg = registry.make_config(algo, {**overrides, "total_env_steps": steps, "val_episodes": 0})
    trainer = registry.get_algo(algo).make_train(cfg)
    # Seeds run one after another, each chunk by chunk as the CLI trains (on CPU the updates are
    # called from Python: XLA:CPU runs A3C on Freeway and SpaceInvaders 2.3-2.5× slower inside a scan over updates,
    # see ``throughput.py --loops``). jax.vmap over seeds, the PureJaxRL way, intermittently hung
    # with jax 0.10.2 on CPU.
    runs = []
    for seed in range(seeds):
        state, per_chunk = trainer.init(jax.random.PRNGKey(seed)), []
        for _ in range(cfg.num_chunks):
            state, m = trainer.run_chunk(state)
            per_chunk.append(m)
        runs.append(jax.device_get((state, jax.tree.map(lambda *xs: np.stack(xs), *per_chunk))))
    state, metrics = jax.tree.map(lambda *xs: np.stack(xs), *runs)
    env_steps = (np.arange(cfg.num_chunks) + 1) * cfg.steps_per_chunk
    return cfg, trainer, state, metrics, env_steps


_RUNNERS: dict = {}


def test_returns(trainer, params_batch, seed_index: int, mode: str) -> np.ndarray:
    key = (id(trainer), mode)
    if key not in _RUNNERS:  # compile each evaluation program once per trained configuration
        _RUNNERS[key] = runner_for(trainer, mode)
    runner = _RUNNERS[key]
    params = jax.tree.map(lambda x: x[seed_index], params_batch)
    return np.asarray(runner(params, TEST_SEEDS)["returns"])


def fmt(mu_sigma) -> str:
    return f"{mu_sigma[0]:.2f}±{mu_sigma[1]:.2f}"


def best_avg(per_run: list[np.ndarray]) -> tuple[str, str]:
    stats = [(r.mean(), r.std()) for r in per_run]
    mus = np.array([m for m, _ in stats])
    return fmt(stats[int(np.argmax(mus))]), fmt((mus.mean(), mus.std()))


def plot_curves(curves: dict, game: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for algo, (steps, returns) in curves.items():  # returns [seeds, chunks]
        med = np.nanmedian(returns, 0)
        ax.plot(steps, med, label=algo)
        ax.fill_between(steps, np.nanmin(returns, 0), np.nanmax(returns, 0), alpha=0.15)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("training episode return")
    ax.set_title(f"{game}-MinAtar: median and range over seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def load_results(path: str, budget: str, steps: int, seeds: int, algos: list) -> dict:
    """results.json of earlier runs of the same budget, seeds and algos (their games are kept and a
    game run again is replaced), else a fresh record."""
    fresh = {"budget": budget, "steps": steps, "seeds": seeds, "algos": algos, "games": {}}
    if not os.path.exists(path):
        return fresh
    with open(path) as f:
        old = json.load(f)
    if {k: old.get(k) for k in ("budget", "steps", "seeds", "algos")} != {k: fresh[k] for k in fresh if k != "games"}:
        print(f"{path}: another budget, seed count or algo list; starting a new record")
        return fresh
    return old


def write_report(res: dict, out: str) -> str:
    """results.json and the Markdown tables of every game recorded so far (rewritten after each game)."""
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    algos, seeds = res["algos"], res["seeds"]
    games = [g for g in GAMES if g in res["games"]]
    runs = {}  # command -> (games, machine line, wall seconds)
    for g in games:
        r = res["games"][g]
        cmd, machine, wall = runs.get(r["command"], ([], r["machine"], 0.0))
        runs[r["command"]] = (cmd + [g], machine, wall + r["wall_s"])
    lines = [f"# Chapter 2 ablations on MinAtar ({res['budget']} budget)", ""]
    for cmd, (gs, machine, wall) in runs.items():
        lines.append(f"Command: `{cmd}` ({', '.join(gs)}): {machine}; wall time {wall:.0f}s  ")
    lines += [
        f"Budget: {res['steps']:,} env steps per run, {seeds} seeds (0..{seeds - 1}), 64 envs, App. 2.E "
        f"hyper-parameters (ch2_minatar presets), MinAtar network (MLP 256, LSTM 128, FC 2×128).  ",
        "Test: final model of each run on 10 test seeds; μ±σ over test episodes; Best = run with highest μ; "
        "Avg. = mean±std of the runs' μ. vote-5 = majority over 5 sampled activations.", "",
        "## Table 2.2 form: MAP / vote-5, Best and Avg.", "",
        "| game | " + " | ".join(f"{a} Best | {a} Avg." for a in algos) + " |",
        "|---|" + "---|---|" * len(algos),
    ]
    for mode in ("map", "vote-5"):
        lines.append(f"| *{mode}* |" + " |" * (2 * len(algos)))
        for g in games:
            lines.append(f"| {g} | " + " | ".join(c for a in algos for c in res["games"][g]["table22"][a][mode]) + " |")
    for g in games:
        detail = res["games"][g]
        if detail.get("table23"):
            lines += ["", f"## Table 2.3 form: evaluation schemes on {g} (Best / Avg.)", "",
                      "| algo | MAP | vote-1 | vote-5 | vote-50 |", "|---|---|---|---|---|"]
            for algo, r in detail["table23"].items():
                lines.append(f"| {algo} | " + " | ".join(f"{r[m][0]} / {r[m][1]}" for m in ("map", "vote-1", "vote-5", "vote-50")) + " |")
        if not detail.get("table25"):
            continue
        t25 = detail["table25"]
        lines += ["", f"## Table 2.5 form: noise resampled per iteration vs per step, {g}, MAP (Best / Avg.)", "",
                  "| algo | per iteration | per step |", "|---|---|---|"]
        for algo in ("noisynet-a3c", "sa3c"):
            if f"{algo}|iteration" in t25 and f"{algo}|step" in t25:
                lines.append(f"| {algo} | {' / '.join(t25[f'{algo}|iteration'])} | {' / '.join(t25[f'{algo}|step'])} |")
    lines += ["", "Curves: " + ", ".join(f"`curves_{g}.png`" for g in games)]
    path = os.path.join(out, "results.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def run_game(game: str, algos: list, seeds: int, steps: int, out: str, detail: bool) -> dict:
    """Every algo on one game: Table 2.2 cells, with ``detail`` also Tables 2.3 / 2.5; the curve PNG."""
    rec = {"table22": {}, "table23": {}, "table25": {}}
    curves = {}
    for algo in algos:
        t = time.time()
        cfg, trainer, state, metrics, env_steps = train_seeds(algo, ch2_minatar.get_config(game), seeds, steps)
        curves[algo] = (env_steps, np.asarray(metrics["episode_return"]))
        per_run = {m: [test_returns(trainer, state.params, s, m) for s in range(seeds)] for m in ("map", "vote-5")}
        rec["table22"][algo] = {m: best_avg(r) for m, r in per_run.items()}
        if detail and cfg.unit != "none":
            rec["table23"][algo] = {m: best_avg([test_returns(trainer, state.params, s, m) for s in range(seeds)])
                                    for m in ("map", "vote-1", "vote-5", "vote-50")}
        print(f"{game:14s} {algo:14s} MAP best {rec['table22'][algo]['map'][0]:>12s} "
              f"avg {rec['table22'][algo]['map'][1]:>12s}  ({time.time() - t:.0f}s)", flush=True)
    plot_curves(curves, game, os.path.join(out, f"curves_{game}.png"))
    if detail:  # Table 2.5: when noise is resampled, both evaluated with MAP
        for algo, field in (("noisynet-a3c", "weight_noise"), ("sa3c", "activation_noise")):
            for when in ("iteration", "step"):
                if when == getattr(registry.make_config(algo), field) and algo in rec["table22"]:
                    rec["table25"][f"{algo}|{when}"] = rec["table22"][algo]["map"]  # trained above
                    continue
                cfg, trainer, state, _, _ = train_seeds(algo, {**ch2_minatar.get_config(game), field: when},
                                                        seeds, steps)
                rec["table25"][f"{algo}|{when}"] = best_avg([test_returns(trainer, state.params, s, "map")
                                                             for s in range(seeds)])
    return rec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", default="smoke", choices=tuple(BUDGETS))
    p.add_argument("--games", default=",".join(GAMES))
    p.add_argument("--algos", default=",".join(ALGOS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", default=None)
    p.add_argument("--detail-game", default="Seaquest", help="the game of Tables 2.3 and 2.5 (thesis: Seaquest)")
    args = p.parse_args(argv)
    games, algos = args.games.split(","), args.algos.split(",")
    for g in games + [args.detail_game]:
        ch2_minatar.get_config(g)
    for a in algos:
        registry.get_algo(a)
    steps = BUDGETS[args.budget]
    out = args.out or os.path.join(os.path.dirname(__file__), "results", f"ablation_ch2_{args.budget}")
    os.makedirs(out, exist_ok=True)
    res = load_results(os.path.join(out, "results.json"), args.budget, steps, args.seeds, algos)
    machine = machine_description()
    for game in games:
        t0 = time.time()
        rec = run_game(game, algos, args.seeds, steps, out, game == args.detail_game)
        res["games"][game] = {**rec, "command": f"python benchmarks/ablation_ch2.py {' '.join(sys.argv[1:])}",
                              "machine": machine, "wall_s": time.time() - t0}
        path = write_report(res, out)
    print(open(path).read())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
