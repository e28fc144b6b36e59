"""Algorithm registry: the only module that imports ``repthesis.algos`` (STYLE.md §1).

Each name maps to (config class, the preset of switches that defines the method, make_train).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

from repthesis.algos import a3c, feudal, stage2, vae, vaegan, world_graph


class Algo(NamedTuple):
    config_cls: type
    preset: dict  # switches that make this method out of its family's config
    make_train: Callable[..., Any]
    summary: str
    kind: str = "rl"  # rl (env steps, returns) | gen (optimiser steps on a dataset) | graph (world-graph discovery)
    check: Callable[..., Any] | None = None  # cfg -> None, raises ValueError (one line) on bad input


ALGOS: dict[str, Algo] = {
    "a3c": Algo(a3c.A3CConfig, {}, a3c.make_train, "A3C-LSTM baseline (Alg. 2)"),
    "sa3c": Algo(a3c.A3CConfig, {"unit": "sa"}, a3c.make_train, "stochastic activation A3C (Alg. 1)"),
    "fsa3c": Algo(a3c.A3CConfig, {"unit": "fsa"}, a3c.make_train, "fully-stochastic A3C (§2.4.1)"),
    "hpa3c": Algo(a3c.A3CConfig, {"unit": "hp"}, a3c.make_train, "hierarchical-prior A3C (Alg. 3)"),
    "noisynet-a3c": Algo(a3c.A3CConfig, {"noisy": "v1"}, a3c.make_train,
                         "NoisyNet A3C-LSTM; --noisy=v1|v2|v3 (App. 2.G)"),
    "noisynet-sa3c": Algo(a3c.A3CConfig, {"unit": "sa", "noisy": "v1"}, a3c.make_train,
                          "NoisyNet + SA3C (App. 2.G)"),
    "dropout-a3c": Algo(a3c.A3CConfig, {"unit": "dropout"}, a3c.make_train, "dropout stochastic units (App. 2.F)"),
    "a2c": Algo(a3c.A3CConfig, {"env": "maze-small-multigoal", "rollout_len": 60}, a3c.make_train,
                "A2C baseline of chapter 3 (synchronous A3C-LSTM, 60-step rollouts, App. 3.C.3) on a maze"),
    "vae": Algo(vae.VAEConfig, {"model": "vae"}, vae.make_train, "VAE, FC latent (§5.3.1)", "gen"),
    "cvae": Algo(vae.VAEConfig, {"model": "cvae"}, vae.make_train, "convolutional VAE (§5.3.1)", "gen"),
    "crvae": Algo(vae.VAEConfig, {"model": "crvae"}, vae.make_train,
                  "channel-recurrent VAE; --recurrent=both|inference|generation, --blocks=T (§5.3.2)", "gen"),
    "criwae": Algo(vae.VAEConfig, {"model": "crvae", "iw_samples": 5}, vae.make_train,
                   "crVAE trained on the importance-weighted bound, K=5 (App. 5.B)", "gen"),
    "crvae-2layer": Algo(vae.VAEConfig, {"model": "crvae", "stochastic_layers": 2}, vae.make_train,
                         "crVAE with 2 stochastic layers: z2 → z1 → x (App. 5.B)", "gen"),
    "vae-gan": Algo(vaegan.VAEGANConfig, {"model": "vae", "kl_weight": 2e-4, "mi_weight": 0.0}, vaegan.make_train,
                    "VAE-GAN, pixel MSE, D batch ½ real ¼ prior ¼ recon, skip D above 90 % (§5.3.3)", "gen"),
    "crvae-gan": Algo(vaegan.VAEGANConfig, {"model": "crvae"}, vaegan.make_train,
                      "crVAE-GAN with KL weights α1/α2 and the MI regulariser κ (--mi-weight=0: off) (§5.3.3)",
                      "gen"),
    "stage2": Algo(stage2.Stage2Config, {}, stage2.make_train,
                   "Stage 2: 64→128 upsampler of a trained --stage1=DIR run, adversarial + perceptual loss (§5.4.3)",
                   "gen", stage2.check_stage1),
    "world-graph": Algo(world_graph.WorldGraphConfig, {}, world_graph.make_train,
                        "world-graph discovery on a maze: binary-latent VAE, waypoints, π_g, edges (Alg. 6, §3.3)",
                        "graph"),
    "feudal-wn": Algo(feudal.FeudalConfig, {}, feudal.make_train,
                      "Feudal HRL with Wide-then-Narrow goals, world-graph traversal and π_g init; --graph=DIR of a "
                      "world-graph run; switches --traversal, --pi-g-init, --waypoints=learned|random (§3.4)",
                      check=feudal.check_graph),
    "feudal": Algo(feudal.FeudalConfig, {"wide_narrow": False, "traversal": False}, feudal.make_train,
                   "plain Feudal baseline of chapter 3 (one goal among all cells); π_g init from --graph=DIR "
                   "(--pi-g-init=false: none) (§3.5.1)", check=feudal.check_graph),
}


def names(kind: str, family: str | None = None) -> list[str]:
    """Algorithm names of one kind ('rl', 'gen', 'graph'), optionally only those sharing the config
    class of the algorithm ``family`` (e.g. 'a3c': the chapter-2 family and a2c)."""
    return [name for name, algo in ALGOS.items() if algo.kind == kind
            and (family is None or algo.config_cls is ALGOS[family].config_cls)]


class ConfigError(ValueError):
    """Bad algorithm name or config field; the message is one line naming the valid choices."""


def get_algo(name: str) -> Algo:
    if name not in ALGOS:
        raise ConfigError(f"unknown --algo={name!r}; valid: {', '.join(ALGOS)}")
    return ALGOS[name]


def config_fields(algo: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(get_algo(algo).config_cls)}


def make_config(algo: str, overrides: dict[str, Any] | None = None):
    """Config for ``algo``: family defaults, then the method's preset, then ``overrides``."""
    spec = get_algo(algo)
    fields = config_fields(algo)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config field(s) {', '.join(unknown)} for --algo={algo}; "
                          f"valid: {', '.join(fields)}")
    try:
        return spec.config_cls(**{**spec.preset, **overrides})
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None
