"""Evaluate trained runs with the thesis protocol (§2.5.1–2.5.2) and its analyses (§2.6), or
generative runs by their importance-sampled negative log-likelihood (App. 5.B).

    python -m repthesis.evaluate --run=DIR [--run=DIR ...] [--modes=map,vote-1,vote-5,vote-50]
        [--test-seeds=10] [--checkpoint=best|latest] [--out=DIR] [--analysis] [--gif]
    python -m repthesis.evaluate [--nll] --run=DIR [--run=DIR ...] [--samples=K] [--test-images=N]
        [--data-dir=DIR] [--checkpoint=best|latest] [--out=DIR]

    python -m repthesis.evaluate --quality --run=DIR [--run=DIR ...] [--quality-samples=5000]

NLL: −log p(x) ≈ −log (1/K) Σ_k p(x, z_k)/q(z_k|x) with z_k ~ q(z|x) (Rezende et al., 2014), K =
``--samples`` (the thesis: 10,000; default: the run's ``nll_samples``), on the test split, in
nats per image; binary data (MNIST) is binarised once with a fixed seed, the same for every run.
Writes ``nll.md`` (mean ± standard error over images). Generative runs are evaluated this way
unless ``--quality`` is given. Quality: a score in the spirit of the inception score from a
classifier trained in-project on the run's labelled data (``repthesis.gen.quality``; NOT the
ImageNet Inception score), on prior samples, next to the real test images' score; ``quality.md``.

Protocol: each run's model is the one selected on the validation seed during training
(``best/``; ``--checkpoint=latest`` takes the newest checkpoint instead); it is tested on
``--test-seeds`` seeds never used for training or validation, under each mode (MAP, or
majority vote over K sampled activations). The Markdown table reports per run μ±σ over test
seeds, "Best" (the run with the highest μ) and "Avg." (mean ± std of the runs' μ), as in
Tables 2.2/2.3. ``--analysis`` plots, for the first run, the per-step variance of V over 5
sampled activations (Fig. 2.4), its course over training (Fig. 2.5, from the validation
logs) and the entropy of 50 sampled actions (Fig. 2.6); ``--gif`` writes an episode GIF.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

TEST_SEED_OFFSET = 2_000_000  # test seeds: disjoint from training keys and validation seeds (1_000_000+)
NLL_BINARISATION_SEED = 3_000_000  # the one fixed binarisation of a binary test set


def _fail(msg: str) -> int:
    print(f"repthesis.evaluate: error: {msg}", file=sys.stderr)
    return 2


def run_algo(run_dir: str) -> str:
    with open(os.path.join(run_dir, "config.json")) as f:
        return json.load(f)["algo"]


def saved_config(run_dir: str):
    """(algo name, config) a run was started with."""
    from repthesis import registry

    with open(os.path.join(run_dir, "config.json")) as f:
        saved = json.load(f)
    return saved["algo"], registry.make_config(saved["algo"], saved["config"])


def gen_trainer(algo_name: str, cfg, dataset, num_devices: int = 1):
    """The trainer of a generative run on ``dataset``; a stage-2 run (``cfg.stage1``) also gets its
    frozen stage-1 model, loaded from the stage-1 run's newest checkpoint on the 2× smaller images."""
    from repthesis import registry

    algo = registry.get_algo(algo_name)
    if not getattr(cfg, "stage1", ""):
        return algo.make_train(cfg, dataset.train, dataset.binary, num_devices=num_devices)
    from repthesis.nn.stage2 import downsample

    _, _, s1_trainer, s1_params = load_run(cfg.stage1, "last", dataset._replace(train=downsample(dataset.train)))
    labels = dataset.labels[0] if dataset.labels else None
    return algo.make_train(cfg, dataset.train, dataset.binary, num_devices=num_devices,
                           stage1=(s1_trainer.network, s1_trainer.vae_params(s1_params)), labels=labels)


def load_run(run_dir: str, which: str, dataset=None):
    """(algo name, config, trainer, params) of a finished or running training run; a generative
    run needs its ``dataset`` (``repthesis.data.Dataset``) to build its trainer."""
    import jax
    import numpy as np

    from repthesis import registry
    from repthesis.utils.checkpoint import CheckpointStore

    with open(os.path.join(run_dir, "config.json")) as f:
        saved = json.load(f)
    cfg = registry.make_config(saved["algo"], saved["config"])
    algo = registry.get_algo(saved["algo"])
    if algo.kind == "gen":
        trainer = gen_trainer(saved["algo"], cfg, dataset)
        best_key = trainer.val_name
    else:
        trainer, best_key = algo.make_train(cfg), "val_return"
    state = trainer.init(jax.random.PRNGKey(0))
    params = None
    if which == "best" and os.path.isdir(os.path.join(run_dir, "best")):
        store = CheckpointStore(os.path.join(run_dir, "best"), max_to_keep=1)
        _, tree = store.restore_latest({"params": state.params, best_key: np.float32(0)})
        store.close()
        params = None if tree is None else tree["params"]
    if params is None:
        store = CheckpointStore(os.path.join(run_dir, "checkpoints"))
        _, restored = store.restore_latest(state)
        store.close()
        if restored is None:
            raise FileNotFoundError(f"no readable checkpoint in {run_dir}")
        params = restored.params
    return saved["algo"], cfg, trainer, params


def protocol_table(results: dict[str, list[tuple[float, float]]], run_names: list[str]) -> str:
    """Markdown table: rows = modes, columns = runs (μ±σ), Best, Avg."""
    import numpy as np

    head = "| mode | " + " | ".join(run_names) + " | Best | Avg. |"
    lines = [head, "|" + "---|" * (len(run_names) + 3)]
    for mode, stats in results.items():
        mus = np.array([m for m, _ in stats])
        best = int(np.argmax(mus))
        cells = [f"{m:.2f}±{s:.2f}" for m, s in stats]
        lines.append(f"| {mode} | " + " | ".join(cells) +
                     f" | {stats[best][0]:.2f}±{stats[best][1]:.2f} | {mus.mean():.2f}±{mus.std():.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m repthesis.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", action="append", required=True, help="training run directory (repeat for 3 runs)")
    p.add_argument("--modes", default=None, help="default map,vote-1,vote-5,vote-50 (Feudal runs: map,sample,random)")
    p.add_argument("--test-seeds", type=int, default=10)
    p.add_argument("--checkpoint", default="best", choices=("best", "latest"))
    p.add_argument("--out", default=None, help="where to write evaluation.md and plots (default: first --run)")
    p.add_argument("--analysis", action="store_true", help="value-variance and entropy plots (Figs 2.4–2.6)")
    p.add_argument("--gif", action="store_true", help="write an episode GIF of the MAP policy")
    p.add_argument("--nll", action="store_true", help="generative runs: importance-sampled NLL on the test split")
    p.add_argument("--samples", type=int, default=None, help="--nll: K importance samples per image (thesis 10000)")
    p.add_argument("--test-images", type=int, default=0, help="--nll: first N test images (0 = all)")
    p.add_argument("--data-dir", default=None, help="generative runs: where the dataset lives (python -m repthesis.data)")
    p.add_argument("--quality", action="store_true", help="generative runs: in-project inception-style score")
    p.add_argument("--quality-samples", type=int, default=5000, help="--quality: prior samples scored")
    p.add_argument("--classifier-steps", type=int, default=1500, help="--quality: training steps of the classifier")
    args = p.parse_args(argv)
    from repthesis.rl.evaluation import parse_mode, runner_for

    for run in args.run:
        if not os.path.exists(os.path.join(run, "config.json")):
            return _fail(f"--run={run!r} is not a training run (no config.json)")
    from repthesis import registry

    # algorithms that play episodes their own way (Feudal HRL) name their modes on the config class
    own_modes = {getattr(registry.get_algo(run_algo(r)).config_cls, "eval_modes", None) for r in args.run}
    if len(own_modes) > 1:
        return _fail("runs of Feudal HRL and of other RL algorithms cannot be evaluated together")
    own_modes = own_modes.pop()
    if args.modes is None:
        args.modes = ",".join(own_modes) if own_modes else "map,vote-1,vote-5,vote-50"
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    try:
        for m in modes:
            if own_modes is None:
                parse_mode(m)
            elif m not in own_modes:
                raise ValueError(f"unknown evaluation mode {m!r} for {run_algo(args.run[0])}; valid: {', '.join(own_modes)}")
    except ValueError as e:
        return _fail(str(e))
    if own_modes and (args.analysis or args.gif):
        return _fail("--analysis / --gif are for the chapter-2 actor-critics; Feudal runs take --modes only")

    kinds = {registry.get_algo(run_algo(r)).kind for r in args.run}
    if args.nll or args.quality or "gen" in kinds:
        if kinds != {"gen"}:
            return _fail("--nll / --quality evaluate generative runs (algos: " + ", ".join(registry.names("gen"))
                         + "); RL runs take --modes" if args.nll or args.quality
                         else "generative and RL runs cannot be evaluated together")
        return quality_main(args) if args.quality else nll_main(args)

    if args.test_seeds < 1:
        return _fail(f"--test-seeds={args.test_seeds} must be >= 1")
    out_dir = args.out or args.run[0]
    os.makedirs(out_dir, exist_ok=True)

    import numpy as np

    seeds = np.arange(args.test_seeds, dtype=np.uint32) + np.uint32(TEST_SEED_OFFSET)
    results: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    loaded = []
    for run in args.run:
        try:
            algo, cfg, trainer, params = load_run(run, args.checkpoint)
        except FileNotFoundError as e:
            return _fail(str(e))
        loaded.append((algo, cfg, trainer, params))
        for mode in modes:
            runner = trainer.runner(mode) if own_modes else runner_for(trainer, mode)
            returns = np.asarray(runner(params, seeds)["returns"])
            results[mode].append((float(returns.mean()), float(returns.std())))
            print(f"{run}: {mode:8s} {returns.mean():.2f} ± {returns.std():.2f} over {len(seeds)} test seeds")
    names = [os.path.basename(os.path.normpath(r)) for r in args.run]
    algo, cfg = loaded[0][0], loaded[0][1]
    table = protocol_table(results, names)
    report = os.path.join(out_dir, "evaluation.md")
    with open(report, "w") as f:
        f.write(f"# {algo} on {cfg.env}\n\nCheckpoint: {args.checkpoint}; test seeds: {len(seeds)} "
                f"(from {TEST_SEED_OFFSET}); greedy actions; vote-K = majority over K sampled activations.\n\n")
        f.write(table + "\n")
    print(table)
    print(f"table: {report}")
    if args.analysis:
        for path in analysis_plots(args.run[0], loaded[0], out_dir, int(seeds[0])):
            print(f"plot: {path}")
    if args.gif:
        print(f"gif: {episode_gif(loaded[0], out_dir, int(seeds[0]))}")
    return 0


def nll_table(rows: list[dict]) -> str:
    lines = ["| run | algo | NLL (nats) | ± s.e. | K | images |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['algo']} | {r['nll']:.2f} | {r['se']:.2f} | {r['samples']} | {r['images']} |"
              for r in rows]
    return "\n".join(lines)


def test_set(dataset, test_images: int = 0):
    """The evaluation images: the test split (first ``test_images`` if > 0), binarised once with
    ``NLL_BINARISATION_SEED`` when the data is binary, so every run sees the same set."""
    from repthesis import data

    images = dataset.test[:test_images] if test_images > 0 else dataset.test
    return data.binarise(images, NLL_BINARISATION_SEED) if dataset.binary else images


def test_nll(trainer, params, images, samples: int, seed: int = 0, desc: str | None = None):
    """Per-image importance-sampled NLL (nats) of ``images``, 100 at a time, batch i drawing its
    samples from PRNGKey(TEST_SEED_OFFSET + seed) folded with i: the same keys at every call, so
    two scorings of one model agree. ``desc`` shows a progress bar (on a terminal)."""
    import jax
    import numpy as np
    from tqdm import tqdm

    key, batch = jax.random.PRNGKey(TEST_SEED_OFFSET + seed), 100
    starts = tqdm(range(0, len(images), batch), desc=desc, unit="batch", disable=desc is None or not sys.stderr.isatty())
    return np.concatenate([trainer.nll(params, images[i:i + batch], jax.random.fold_in(key, i), samples=samples)
                           for i in starts])


def nll_main(args) -> int:
    import time

    import numpy as np

    from repthesis import data, registry
    from repthesis.algos.vaegan import VAEGANConfig

    if args.samples is not None and args.samples <= 0:
        return _fail(f"--samples={args.samples} must be > 0 (importance samples per image; the thesis uses 10000)")
    if args.test_images < 0:
        return _fail(f"--test-images={args.test_images} must be >= 0 (0 = the whole test split)")
    def likelihood(config_cls) -> bool:  # GAN-trained decoders (VAE-GAN, stage 2) define no p(x)
        return hasattr(config_cls, "nll_samples") and not issubclass(config_cls, VAEGANConfig)

    configs = [saved_config(run)[1] for run in args.run]
    for run, cfg in zip(args.run, configs):
        if not likelihood(type(cfg)):
            return _fail(f"--run={run}: {run_algo(run)} has no likelihood to evaluate (its decoder is trained "
                         f"adversarially); valid for --nll: " + ", ".join(
                             n for n in registry.names("gen") if likelihood(registry.get_algo(n).config_cls)))
        try:
            data.check(cfg.data, args.data_dir)
        except data.DataError as e:
            return _fail(str(e))
    out_dir = args.out or args.run[0]
    os.makedirs(out_dir, exist_ok=True)
    rows, datasets = [], {}
    for run, cfg in zip(args.run, configs):
        key = (cfg.data, cfg.image_size)
        if key not in datasets:
            datasets[key] = data.load(cfg.data, args.data_dir, cfg.image_size)
        try:
            algo, cfg, trainer, params = load_run(run, args.checkpoint, datasets[key])
        except FileNotFoundError as e:
            return _fail(str(e))
        images = test_set(datasets[key], args.test_images)
        samples = args.samples or cfg.nll_samples
        t0 = time.time()
        nll = test_nll(trainer, params, images, samples, desc=f"NLL {os.path.basename(os.path.normpath(run))}")
        row = {"run": os.path.basename(os.path.normpath(run)), "algo": algo, "nll": float(nll.mean()),
               "se": float(nll.std() / np.sqrt(len(nll))), "samples": samples, "images": len(nll),
               "seconds": time.time() - t0}
        rows.append(row)
        print(f"{run}: NLL {row['nll']:.2f} ± {row['se']:.2f} nats ({len(nll)} test images, K={samples}, "
              f"{row['seconds']:.0f}s)", flush=True)
    table = nll_table(rows)
    report = os.path.join(out_dir, "nll.md")
    with open(report, "w") as f:
        f.write(f"# Importance-sampled NLL (App. 5.B)\n\nCheckpoint: {args.checkpoint}; test split"
                f"{', binarised once (seed %d)' % NLL_BINARISATION_SEED if datasets[key].binary else ''}; "
                f"± is the standard error over images.\n\n{table}\n")
    print(table)
    print(f"table: {report}")
    return 0


def quality_main(args) -> int:
    import jax
    import numpy as np

    from repthesis import data
    from repthesis.gen.quality import probabilities, score_from_probs, train_classifier

    if args.quality_samples < 10 or args.classifier_steps < 1:
        return _fail(f"--quality-samples={args.quality_samples} must be >= 10 and --classifier-steps >= 1")
    configs = [saved_config(run)[1] for run in args.run]
    for run, cfg in zip(args.run, configs):
        if cfg.data.startswith("folder:"):
            return _fail(f"--run={run}: --quality needs labelled data to train its classifier, and "
                         f"{cfg.data!r} has none; valid: mnist, shapes")
        try:
            data.check(cfg.data, args.data_dir)
        except data.DataError as e:
            return _fail(str(e))
    if len({(c.data, c.image_size) for c in configs}) > 1:
        return _fail("--quality compares runs on one dataset and image size; these runs differ")
    cfg0 = configs[0]
    ds = data.load(cfg0.data, args.data_dir, cfg0.image_size)
    print(f"training the {ds.classes}-class scoring classifier on {cfg0.data} ({args.classifier_steps} steps) …",
          flush=True)
    predict, c_params = train_classifier(ds.train, ds.labels[0], ds.classes, steps=args.classifier_steps)
    test_probs = probabilities(predict, c_params, ds.test)
    accuracy = float(np.mean(test_probs.argmax(1) == ds.labels[2]))
    real, real_sd = score_from_probs(test_probs[:args.quality_samples])
    print(f"classifier test accuracy {accuracy:.3f}; real test images score {real:.2f} ± {real_sd:.2f}")
    rows = []
    for run in args.run:
        try:
            algo, cfg, trainer, params = load_run(run, args.checkpoint, ds)
        except FileNotFoundError as e:
            return _fail(str(e))
        vae, vp = trainer.network, trainer.vae_params(params)
        sample = jax.jit(lambda k: vae.apply(vp, vae.apply(vp, k, 500, method=vae.sample_prior), method=vae.decode))
        images = np.concatenate([np.asarray(sample(jax.random.PRNGKey(TEST_SEED_OFFSET + i)))
                                 for i in range(-(-args.quality_samples // 500))])[:args.quality_samples]
        images = 1 / (1 + np.exp(-images)) if ds.binary else np.clip(images, 0, 1)  # Bernoulli logits → means
        score, sd = score_from_probs(probabilities(predict, c_params, images))
        rows.append((os.path.basename(os.path.normpath(run)), algo, score, sd))
        print(f"{run}: quality score {score:.2f} ± {sd:.2f} over {len(images)} prior samples", flush=True)
    lines = ["# Sample quality: in-project inception-style score (NOT the ImageNet Inception score)", "",
             f"Classifier: {ds.classes} classes of {cfg0.data}, trained {args.classifier_steps} steps on its training "
             f"split, test accuracy {accuracy:.3f}. Score = exp(E KL(p(y|x) ‖ p(y))), mean ± std over 10 splits of "
             f"{args.quality_samples} prior samples; from 1 to {ds.classes}. Real test images: {real:.2f} ± {real_sd:.2f}.",
             "", "| run | algo | score |", "|---|---|---|"]
    lines += [f"| {r} | {a} | {s:.2f} ± {d:.2f} |" for r, a, s, d in rows]
    out_dir = args.out or args.run[0]
    os.makedirs(out_dir, exist_ok=True)
    report = os.path.join(out_dir, "quality.md")
    with open(report, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"table: {report}")
    return 0


def _plot(path: str, draw, xlabel: str, ylabel: str, title: str, size=(5, 3)) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    draw(ax)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def analysis_plots(run_dir, loaded, out_dir, seed) -> list[str]:
    import numpy as np

    from repthesis.rl.evaluation import runner_for
    from repthesis.utils.logging import MetricsLog

    algo, cfg, trainer, params = loaded
    steps = min(700, trainer.env.max_episode_steps)  # §2.6.2 looks at t = 1..700

    def episode(mode: str, **kw):
        run = runner_for(trainer, mode, max_steps=steps, **kw)
        out = run(params, np.array([seed], np.uint32))
        return out, np.asarray(out["alive"])[:, 0]

    out, alive = episode("vote-5")
    paths = [_plot(os.path.join(out_dir, "value_variance.png"),
                   lambda ax: ax.plot(np.nonzero(alive)[0] + 1, np.asarray(out["value_var"])[alive, 0]),
                   "time step", "sample variance of V (N=5)",
                   f"{algo}: value variance over sampled activations (cf. Fig. 2.4)", size=(7, 3))]
    ent, ent_alive = episode("vote-50", sample_actions=True)
    paths.append(_plot(os.path.join(out_dir, "action_entropy.png"),
                       lambda ax: ax.hist(np.asarray(ent["action_entropy"])[ent_alive, 0], bins=30),
                       "entropy of 50 sampled actions (nats)", "time steps",
                       f"{algo}: action entropy (cf. Fig. 2.6)"))
    rows = [r for r in MetricsLog(run_dir, tensorboard=False).rows() if r.get("val_value_var") not in (None, "")]
    if rows:
        xs = [float(r["env_steps"]) for r in rows]
        ys = [float(r["val_value_var"]) for r in rows]
        paths.append(_plot(os.path.join(out_dir, "value_variance_training.png"),
                           lambda ax: ax.plot(xs, ys, marker="o"), "environment steps", "mean variance of V (N=5)",
                           f"{algo}: value variance over training (cf. Fig. 2.5)"))
    return paths


def _frame(obs):
    """An observation as an RGB image: [H, W, C] one-hot channels get a colour each; one
    channel (e.g. a normalised Atari frame) is shown in grey, rescaled to its own range."""
    import numpy as np

    obs = np.asarray(obs, np.float32)
    if obs.ndim == 2:
        obs = obs[..., None]
    if obs.ndim != 3:
        obs = obs.reshape(1, -1, 1)
    c = obs.shape[-1]
    if c > 1:
        palette = np.array([[(i * 97) % 255, (i * 57 + 80) % 255, (i * 151 + 160) % 255] for i in range(c)],
                           np.float32)
        rgb = np.clip(obs @ palette, 0, 255)
    else:
        lo, hi = float(obs.min()), float(obs.max())
        rgb = np.repeat((obs - lo) / max(hi - lo, 1e-6) * 255, 3, -1)
    scale = max(1, 160 // max(obs.shape[:2]))  # about 160 pixels across
    return np.kron(rgb, np.ones((scale, scale, 1))).astype(np.uint8)


def episode_gif(loaded, out_dir, seed) -> str:
    import numpy as np
    from PIL import Image

    from repthesis.rl.evaluation import runner_for

    algo, cfg, trainer, params = loaded
    runner = runner_for(trainer, "map", record_obs=True)
    out = runner(params, np.array([seed], np.uint32))
    n = int(np.asarray(out["lengths"])[0])
    frames = [Image.fromarray(_frame(o)) for o in np.asarray(out["obs"])[: max(n, 1), 0]]
    path = os.path.join(out_dir, "episode.gif")
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=60, loop=0)
    return path


if __name__ == "__main__":
    sys.exit(main())
