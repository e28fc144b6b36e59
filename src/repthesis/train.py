"""Train any algorithm: ``python -m repthesis.train --algo=NAME [--env=ENV] [--seed=S]
[--total-env-steps=N] [--out=DIR] [--resume] [--devices=K] [--FIELD=VALUE ...]``; generative
models: ``--algo=crvae --data=mnist [--data-dir=DIR] --total-steps=N`` (optimiser steps).

Every field of the algorithm's config can be set as ``--field-name=value`` (dashes or
underscores). ``--preset=NAME`` applies a thesis preset from ``configs/`` first.
All input is validated before anything is compiled or written.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import sys
import time

from repthesis import registry

DEFAULT_ALGO = "hpa3c"
BUDGET_FIELDS = ("total_env_steps", "total_steps", "total_iterations")  # the only fields --resume may change


class UsageError(ValueError):
    pass


def _convert(name: str, field: dataclasses.Field, raw: str):
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    try:
        if kind == "bool":
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind == "int":
            return int(float(raw)) if float(raw).is_integer() else int(raw)
        if kind == "float":
            return float(raw)
        return raw
    except ValueError:
        raise UsageError(f"--{name.replace('_', '-')}={raw!r}: expected {kind}") from None


def parse_overrides(algo: str, tokens: list[str]) -> dict:
    fields = registry.config_fields(algo)
    out, i = {}, 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--"):
            raise UsageError(f"unexpected argument {tok!r}; config fields are set as --field=value")
        key, eq, val = tok[2:].partition("=")
        if not eq:
            if i + 1 >= len(tokens):
                raise UsageError(f"--{key} needs a value")
            val, i = tokens[i + 1], i + 1
        name = key.replace("-", "_")
        if name not in fields:
            raise UsageError(f"unknown option --{key} for --algo={algo}; valid config fields: "
                             f"{', '.join(f.replace('_', '-') for f in fields)}")
        out[name] = _convert(name, fields[name], val)
        i += 1
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m repthesis.train", description=__doc__, allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algo", default=DEFAULT_ALGO, help=f"one of: {', '.join(registry.ALGOS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run directory (default runs/ALGO-ENV-sSEED)")
    p.add_argument("--resume", action="store_true", help="continue from the newest good checkpoint in --out")
    p.add_argument("--devices", type=int, default=1, help="data-parallel over this many local devices")
    p.add_argument("--preset", default=None, help="thesis preset from configs/ (see --list)")
    p.add_argument("--list", action="store_true", help="print algorithms, envs and presets, then exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")
    p.add_argument("--data-dir", default=None, help="generative models: where datasets live "
                   "(default $REPTHESIS_DATA or ~/.cache/repthesis)")
    return p


def print_list() -> None:
    from repthesis import envs
    from repthesis.configs import PRESETS

    print("algorithms:")
    for name, algo in registry.ALGOS.items():
        print(f"  {name:16s} {algo.summary}")
    print("envs:")
    for name in envs.list_envs():
        print(f"  {name}")
    print("datasets (--data, generative algorithms):")
    from repthesis.data import DATASETS

    for name in DATASETS:
        print(f"  {name}")
    print("presets (--preset):")
    for name, (_, overrides) in PRESETS.items():
        print(f"  {name:16s} {overrides.get('env', '')}")


def _check_writable(out: str) -> None:
    try:
        os.makedirs(out, exist_ok=True)
        probe = os.path.join(out, ".write-test")
        with open(probe, "w") as f:
            f.write("")
        os.remove(probe)
    except OSError as e:
        raise UsageError(f"--out={out!r} is not writable ({e.strerror or e})") from None


def resolve(argv: list[str]):
    """Parse and validate everything; returns (args, cfg). Raises UsageError / ConfigError."""
    args, rest = build_parser().parse_known_args(argv)
    if args.list:
        return args, None
    registry.get_algo(args.algo)
    overrides = {}
    if args.preset is not None:
        from repthesis.configs import PRESETS

        if args.preset not in PRESETS:
            raise UsageError(f"unknown --preset={args.preset!r}; valid: {', '.join(PRESETS)}")
        overrides.update(PRESETS[args.preset][1])
    overrides.update(parse_overrides(args.algo, rest))
    for budget in BUDGET_FIELDS:
        if budget in overrides and overrides[budget] <= 0:
            raise UsageError(f"--{budget.replace('_', '-')}={overrides[budget]} must be > 0")
    from repthesis import envs

    kind = registry.get_algo(args.algo).kind
    gen, graph = kind == "gen", kind == "graph"
    if args.out is None:
        default = registry.make_config(args.algo)
        field = "data" if gen else "maze" if graph else "env"
        source = str(overrides.get(field, getattr(default, field)))
        args.out = os.path.join("runs", f"{args.algo}-{source.replace('/', '_').replace(':', '_')}-s{args.seed}")
    config_path = os.path.join(args.out, "config.json")
    if args.resume:
        if not os.path.exists(config_path):
            raise UsageError(f"--resume: no run in {args.out!r} (no config.json); start it without --resume")
        with open(config_path) as f:
            saved = json.load(f)
        if saved["algo"] != args.algo:
            raise UsageError(f"--resume: {args.out!r} holds --algo={saved['algo']}, not {args.algo}")
        base = saved["config"]
        clash = {k: v for k, v in overrides.items() if k not in BUDGET_FIELDS and base.get(k) != v}
        if clash:
            raise UsageError(f"--resume: options differ from the saved run ({', '.join(clash)}); "
                             f"only the budget (--total-env-steps / --total-steps) may change")
        if saved.get("seed") != args.seed:
            raise UsageError(f"--resume: the run was started with --seed={saved.get('seed')}, not {args.seed}")
        overrides = {**base, **overrides}
    elif os.path.exists(config_path):
        raise UsageError(f"--out={args.out!r} already holds a run; pass --resume to continue it "
                         f"or choose another --out")
    cfg = registry.make_config(args.algo, overrides)
    check = registry.get_algo(args.algo).check
    if gen:
        from repthesis import data

        data.check(cfg.data, args.data_dir)  # unknown dataset / missing files: one line now
        if cfg.data == "mnist" and cfg.image_size != 28:
            raise UsageError(f"--image-size={cfg.image_size}: MNIST images are 28×28; valid: 28")
        split = ("batch_size", cfg.batch_size)
    elif graph:
        if args.devices != 1:
            raise UsageError(f"--devices={args.devices}: world-graph discovery runs on one device; valid: --devices=1")
        split = ("batch_size", cfg.batch_size)
    else:
        env = envs.make(cfg.env)  # unknown/unavailable env: one-line error now, not after compiling
        split = ("num_envs", cfg.num_envs)
    import jax

    n_dev = len(jax.devices())
    if not 1 <= args.devices <= n_dev:
        raise UsageError(f"--devices={args.devices}: this host has {n_dev} device(s); valid: 1..{n_dev}")
    if split[1] % args.devices:
        raise UsageError(f"{split[0]}={split[1]} must be divisible by --devices={args.devices}")
    if check is not None:
        check(cfg)  # e.g. stage 2's --stage1 run, Feudal's --graph run: one line now
    if kind == "rl" and env.external and args.devices > 1:
        raise UsageError(f"--devices={args.devices}: {cfg.env} runs its emulators outside JAX; valid: --devices=1")
    _check_writable(args.out)
    return args, cfg


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, cfg = resolve(argv)
    except (UsageError, registry.ConfigError, ValueError) as e:
        print(f"repthesis.train: error: {e}", file=sys.stderr)
        return 2
    if args.list:
        print_list()
        return 0
    if registry.get_algo(args.algo).kind == "gen":
        from repthesis.train_gen import run_gen

        return run_gen(args, cfg)
    if registry.get_algo(args.algo).kind == "graph":
        from repthesis.train_graph import run_graph

        return run_graph(args, cfg)
    return run(args, cfg)


def run(args, cfg) -> int:
    import jax
    import numpy as np
    from tqdm import tqdm

    from repthesis.rl.evaluation import runner_for
    from repthesis.utils.checkpoint import CheckpointStore
    from repthesis.utils.logging import MetricsLog, plot_curve

    out = args.out
    algo = registry.get_algo(args.algo)
    if not args.resume:
        with open(os.path.join(out, "config.json"), "w") as f:
            json.dump({"algo": args.algo, "seed": args.seed, "config": dataclasses.asdict(cfg)}, f, indent=2)
    trainer = algo.make_train(cfg, num_devices=args.devices, env_seed=args.seed)
    ckpts = CheckpointStore(os.path.join(out, "checkpoints"))
    best = CheckpointStore(os.path.join(out, "best"), max_to_keep=1)
    log = MetricsLog(out)
    state = trainer.init(jax.random.PRNGKey(args.seed))
    start_chunk = 0
    best_val = -math.inf
    if args.resume:
        step, restored = ckpts.restore_latest(state)
        if restored is None:
            print(f"repthesis.train: error: --resume: no readable checkpoint in {ckpts.directory}", file=sys.stderr)
            return 2
        state = trainer.restore(restored)  # Atari: the emulators restart new episodes
        start_chunk = int(state.update_step) // cfg.updates_per_chunk
        log.truncate_after(int(state.update_step) * cfg.steps_per_update)
        vals = [float(r["val_return"]) for r in log.rows() if r.get("val_return") not in (None, "", "nan")]
        best_val = max(vals, default=-math.inf)
        print(f"resumed from checkpoint at env step {step} ({start_chunk}/{cfg.num_chunks} chunks done)")

    validate = analyse = None
    random_return = None
    if cfg.val_episodes > 0:
        own = getattr(trainer, "runner", None)  # e.g. Feudal HRL plays episodes its own way
        runner = lambda mode: (own or functools.partial(runner_for, trainer))(  # noqa: E731
            mode, max_steps=cfg.val_max_steps or None)
        validate = runner("map")
        # §2.6.2: variance of V over 5 sampled activations, tracked over training (Fig. 2.5).
        if getattr(cfg, "unit", "none") != "none" or getattr(cfg, "noisy", "none") != "none":
            analyse = runner("vote-5")
        # The validation seed is never a training seed: training uses PRNGKey(seed) splits.
        val_seeds = np.arange(cfg.val_episodes, dtype=np.uint32) + np.uint32(1_000_000 + args.seed)
        random_return = float(np.mean(np.asarray(runner("random")(state.params, val_seeds)["returns"])))
        print(f"uniform random policy on the validation seeds: return {random_return:.2f}")

    bar = tqdm(total=cfg.num_chunks * cfg.steps_per_chunk, initial=start_chunk * cfg.steps_per_chunk,
               unit="step", unit_scale=True, disable=args.no_progress or not sys.stderr.isatty(),
               dynamic_ncols=True)
    t_start = time.time()
    last_ckpt = ckpts.steps()[-1] if ckpts.steps() else None
    for chunk in range(start_chunk, cfg.num_chunks):
        t0 = time.time()
        new_state, metrics = trainer.run_chunk(state)
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        dt = time.time() - t0
        if not all(math.isfinite(metrics[k]) for k in ("loss", "value_loss", "policy_loss", "grad_norm")):
            bar.close()
            print(f"repthesis.train: error: non-finite loss at chunk {chunk + 1} "
                  f"(loss={metrics['loss']}, grad_norm={metrics['grad_norm']}); stopped. "
                  f"Last good checkpoint: {last_ckpt if last_ckpt is not None else 'none'} in {ckpts.directory}",
                  file=sys.stderr)
            return 1
        state = new_state
        env_steps = int(state.update_step) * cfg.steps_per_update
        row = {"env_steps": env_steps, "update": int(state.update_step), **metrics,
               "sps": cfg.steps_per_chunk / dt, "wall_time": time.time() - t_start}
        final = chunk == cfg.num_chunks - 1
        if (chunk + 1) % cfg.checkpoint_every == 0 or final:
            if validate is not None:
                val = validate(state.params, val_seeds)
                row["val_return"] = float(np.mean(np.asarray(val["returns"])))
                if "success" in val:  # episodes that reached the exit (Door-Key's success rate, Table 3.2)
                    row["val_success"] = float(np.mean(np.asarray(val["success"])))
                if analyse is not None:
                    a = analyse(state.params, val_seeds)
                    alive = np.asarray(a["alive"])
                    row["val_value_var"] = float(np.asarray(a["value_var"])[alive].mean())
                if row["val_return"] > best_val:
                    best_val = row["val_return"]
                    best.save(env_steps, {"params": state.params, "val_return": np.float32(best_val)})
            last_ckpt = env_steps
            ckpts.save(env_steps, state)
        log.append(row)
        bar.update(cfg.steps_per_chunk)
        bar.set_postfix(ret=f"{metrics['episode_return']:.2f}", sps=f"{row['sps']:.0f}")
        if args.no_progress or not sys.stderr.isatty():
            print(f"[{env_steps:>10d} steps] return {metrics['episode_return']:.3f}  "
                  f"loss {metrics['loss']:.4f}  entropy {metrics['entropy']:.3f}  sps {row['sps']:.0f}"
                  + (f"  val {row['val_return']:.2f}" if "val_return" in row else ""), flush=True)
        if "val_return" in row or final:
            plot_curve(log.rows(), os.path.join(out, "curve.png"), f"{args.algo} on {cfg.env} (seed {args.seed})",
                       baseline=random_return)
    bar.close()
    log.close()
    ckpts.close()
    best.close()
    print(f"done: {cfg.num_chunks * cfg.steps_per_chunk} env steps in {time.time() - t_start:.0f}s")
    vals = [float(r["val_return"]) for r in log.rows() if r.get("val_return") not in (None, "")]
    if vals and random_return is not None:
        print(f"  validation return (MAP): first {vals[0]:.2f}, last {vals[-1]:.2f}, best {max(vals):.2f}; "
              f"uniform random policy {random_return:.2f}")
    print(f"  curve:      {os.path.join(out, 'curve.png')}")
    print(f"  metrics:    {log.path}")
    print(f"  tensorboard:{os.path.join(out, 'tb')}")
    print(f"  checkpoint: {os.path.join(ckpts.directory, str(last_ckpt))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
