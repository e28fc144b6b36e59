"""The generative side of ``python -m repthesis.train`` (``--algo=vae|cvae|crvae|criwae``): the
same run directory, checkpoints, resume, NaN stop and curves as the RL side, counted in
optimiser steps. Input was validated by ``train.resolve`` before this runs."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time


VAL_IMAGES = 1000  # validation images for the ELBO at each checkpoint (fixed binarisation)
GRID = 64  # images per sample / reconstruction grid


def run_gen(args, cfg) -> int:
    import jax
    import numpy as np

    from repthesis import data
    from repthesis.evaluate import gen_trainer
    from repthesis.utils.checkpoint import CheckpointStore, report_non_finite, resume_run
    from repthesis.utils.logging import MetricsLog, plot_curve, progress_bar, save_grid, timed_chunk

    out = args.out
    ds = data.load(cfg.data, args.data_dir, cfg.image_size, seed=args.seed)
    trainer = gen_trainer(args.algo, cfg, ds, num_devices=args.devices)  # before anything is written
    if not args.resume:
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump({"algo": args.algo, "seed": args.seed, "config": dataclasses.asdict(cfg)}, f, indent=2)
    ckpts = CheckpointStore(os.path.join(out, "checkpoints"))
    best = CheckpointStore(os.path.join(out, "best"), max_to_keep=1)
    log = MetricsLog(out, step_key="step")
    state = trainer.init(jax.random.PRNGKey(args.seed))
    prepare = getattr(trainer, "prepare", None)  # one-off work before training (stage 2: its feature network)
    if prepare is not None and not args.resume:
        print("preparing (stage 2: training the feature network) ...", flush=True)
        state = prepare(state)
    start_chunk, best_val = 0, -math.inf  # best of sign × validation metric
    bound, val_name = trainer.headline, trainer.val_name
    sign = 1.0 if trainer.val_higher_is_better else -1.0
    if args.resume:
        resumed = resume_run(ckpts, state, trainer.restore, log, cfg.steps_per_chunk, cfg.num_chunks, "step")
        if resumed is None:
            return 2
        state, start_chunk = resumed
        vals = [sign * float(r[val_name]) for r in log.rows() if r.get(val_name) not in (None, "", "nan")]
        best_val = max(vals, default=-math.inf)

    val = ds.valid[:VAL_IMAGES]
    val = data.binarise(val, 1_000_000 + args.seed) if ds.binary else val
    key = jax.random.PRNGKey(1_000_000 + args.seed)  # evaluation noise: fixed, never a training key
    prior = trainer.network.apply(trainer.vae_params(state.params), key, GRID,
                                  method=trainer.network.sample_prior)  # fixed draws
    decode = jax.jit(lambda p, z: trainer.network.apply(p, z, method=trainer.network.decode))
    encode = jax.jit(lambda p, x: trainer.network.apply(p, x, method=trainer.network.encode)[0])
    as_image = (lambda o: jax.nn.sigmoid(o)) if ds.binary else (lambda o: o)

    bar = progress_bar(cfg.num_chunks * cfg.steps_per_chunk, start_chunk * cfg.steps_per_chunk, "step", args.no_progress)
    t_start, last_ckpt = time.time(), (ckpts.steps()[-1] if ckpts.steps() else None)
    for chunk in range(start_chunk, cfg.num_chunks):
        new_state, metrics, dt = timed_chunk(trainer.run_chunk, state)
        if not math.isfinite(metrics[bound]):
            bar.close()
            return report_non_finite(bound, metrics[bound], chunk, last_ckpt, ckpts)
        state = new_state
        step = int(state.step)
        row = {"step": step, **metrics, "steps_per_s": cfg.steps_per_chunk / dt, "wall_time": time.time() - t_start}
        final = chunk == cfg.num_chunks - 1
        if (chunk + 1) % cfg.checkpoint_every == 0 or final:
            params = trainer.vae_params(state.params)
            row[val_name] = trainer.evaluate(params, val, key)
            if sign * row[val_name] > best_val:
                best_val = sign * row[val_name]
                best.save(step, {"params": state.params, val_name: np.float32(row[val_name])})
            last_ckpt = step
            ckpts.save(step, state)
            save_grid(as_image(decode(params, prior)), os.path.join(out, "samples.png"))
            recon = as_image(decode(params, encode(params, val[:GRID // 2])))
            pairs = np.stack([np.asarray(val[:GRID // 2]), np.asarray(recon)], 1).reshape((-1,) + val.shape[1:])
            save_grid(pairs, os.path.join(out, "reconstructions.png"))  # each input, then its reconstruction
            plot_curve(log.rows() + [row], os.path.join(out, "curve.png"), f"{args.algo} on {cfg.data} (seed {args.seed})",
                       keys=trainer.curve or (bound, val_name), x_key="step", xlabel="optimiser steps",
                       ylabel="nats per image" if val_name == "val_elbo" else "loss / per-pixel MSE")
        log.append(row)
        bar.update(cfg.steps_per_chunk)
        bar.set_postfix({bound: f"{metrics[bound]:.2f}"})
        if args.no_progress or not sys.stderr.isatty():
            print(f"[{step:>8d} steps] {bound} {metrics[bound]:.3f}  steps/s {row['steps_per_s']:.1f}"
                  + (f"  {val_name} {row[val_name]:.4g}" if val_name in row else ""), flush=True)
    bar.close()
    net = trainer.network
    if net.kind != "vae" and net.stochastic_layers == 1:  # channel blocks to traverse (§5.4.5)
        from repthesis.gen.traversal import interpolate_blocks, progressive

        params = trainer.vae_params(state.params)
        rows = progressive(prior[:8], net.blocks)
        save_grid(as_image(decode(params, rows)), os.path.join(out, "traversal.png"), columns=net.blocks + 1)
        moves = interpolate_blocks(prior[0], prior[1], net.blocks)
        save_grid(as_image(decode(params, moves)), os.path.join(out, "interpolation.png"), columns=8)
    log.close()
    ckpts.close()
    best.close()
    print(f"done: {cfg.num_chunks * cfg.steps_per_chunk} optimiser steps in {time.time() - t_start:.0f}s; "
          f"best {val_name} {sign * best_val:.4g}")
    for name in ("curve.png", "samples.png", "reconstructions.png", "traversal.png", "interpolation.png"):
        if os.path.exists(os.path.join(out, name)):
            print(f"  {name[:-4] + ':':16s}{os.path.join(out, name)}")
    print(f"  {'metrics:':16s}{log.path}\n  {'checkpoint:':16s}{os.path.join(ckpts.directory, str(last_ckpt))}")
    return 0
