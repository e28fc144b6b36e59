"""Complete occluded test images with a trained generative run (thesis §5.4.4).

    python -m repthesis.complete --run=DIR [--mask=lower|upper|left|right|center|eyes|mouth]
        [--images=16] [--steps=300] [--lr=0.05] [--gamma=1e-5] [--tau=0.003] [--data-dir=DIR] [--out=DIR]

Optimises each image's latent code (``repthesis.gen.completion``) and writes
``completion_<mask>.png``: for every image a row of (masked input, completion, original).
Prints the objective before and after and the masked-pixel MSE of the completion.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from repthesis.gen.completion import MASKS


def _fail(msg: str) -> int:
    print(f"repthesis.complete: error: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m repthesis.complete", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a generative training run directory")
    p.add_argument("--mask", default="lower", help=f"occluded region; valid: {', '.join(MASKS)}")
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--gamma", type=float, default=1e-5, help="prior weight γ (App. 5.D)")
    p.add_argument("--tau", type=float, default=3e-3, help="adversarial weight τ (App. 5.D; needs a GAN run)")
    p.add_argument("--checkpoint", default="best", choices=("best", "latest"))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="where to write the PNG (default: --run)")
    args = p.parse_args(argv)
    if args.mask not in MASKS:
        return _fail(f"unknown mask {args.mask!r}; valid: {', '.join(MASKS)}")
    if args.images < 1 or args.steps < 0:
        return _fail(f"--images={args.images} must be >= 1 and --steps={args.steps} >= 0")
    config_path = os.path.join(args.run, "config.json")
    if not os.path.exists(config_path):
        return _fail(f"--run={args.run!r} is not a training run (no config.json)")
    from repthesis import data, registry

    with open(config_path) as f:
        saved = json.load(f)
    if registry.get_algo(saved["algo"]).kind != "gen":
        return _fail(f"--run={args.run!r} is an RL run ({saved['algo']}); valid: runs of {', '.join(registry.names('gen'))}")
    cfg = registry.make_config(saved["algo"], saved["config"])
    try:
        data.check(cfg.data, args.data_dir)
    except data.DataError as e:
        return _fail(str(e))

    import jax
    import numpy as np

    from repthesis.evaluate import load_run
    from repthesis.gen.completion import complete, make_mask
    from repthesis.utils.logging import save_grid

    ds = data.load(cfg.data, args.data_dir, cfg.image_size)
    try:
        algo, cfg, trainer, params = load_run(args.run, args.checkpoint, ds)
    except FileNotFoundError as e:
        return _fail(str(e))
    vae, vae_params = trainer.network, trainer.vae_params(params)
    squash = jax.nn.sigmoid if ds.binary else (lambda o: o)  # Bernoulli logits → pixel means

    def decode(z):
        return squash(vae.apply(vae_params, z, method=vae.decode))

    def encode(x):
        return vae.apply(vae_params, x, method=vae.encode)[0]

    discriminate = None
    if hasattr(trainer, "discriminator"):  # GAN runs: the τ term of the objective
        discriminate = lambda x: trainer.discriminator.apply(params["disc"], x)[0]  # noqa: E731

    x = ds.test[:args.images]
    mask = make_mask(args.mask, cfg.image_size, x.shape[-1])
    filled, _, history = complete(decode, encode, discriminate, x, mask, args.steps, args.lr, args.gamma,
                                  args.tau if discriminate is not None else 0.0)
    hole = 1 - mask
    mse = float(np.sum(np.square((np.asarray(filled) - x) * hole)) / (hole.sum() * len(x)))
    out = args.out or args.run
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, f"completion_{args.mask}.png")
    columns = np.stack([x * mask, np.asarray(filled), x], 1).reshape((-1,) + x.shape[1:])
    save_grid(columns, path, columns=3)
    print(f"{algo}: objective {history[0]:.4f} → {history[-1]:.4f} over {args.steps} Adam steps; "
          f"MSE on the occluded pixels {mse:.4f}")
    print(f"completions (masked input, completion, original): {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
