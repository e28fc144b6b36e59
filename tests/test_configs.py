"""Thesis presets carry App. 2.E's per-game hyper-parameters and build valid configs."""

import pytest

from repthesis import registry, train
from repthesis.configs import PRESETS, ch2_atari


def test_app_2e_values():
    seaquest, freeway, boxing = (ch2_atari.get_config(g) for g in ("Seaquest", "Freeway", "Boxing"))
    assert (seaquest["learning_rate"], seaquest["adam_eps"], seaquest["max_grad_norm"], seaquest["gamma"]) == (
        5e-4, 1e-3, 40.0, 0.95)
    assert (seaquest["value_loss_coef"], freeway["value_loss_coef"]) == (5.0, 0.5)
    assert (seaquest["rollout_len"], freeway["rollout_len"]) == (20, 30)
    assert (seaquest["gae_tau"], freeway["gae_tau"]) == (1.0, 0.92)
    assert (seaquest["log_var"], boxing["log_var"]) == (-6.0, -4.0)
    assert seaquest["reward_clip"] and not freeway["reward_clip"]
    assert (seaquest["torso"], boxing["torso"]) == ("cnn", "cnn_slim")
    assert seaquest["kl_coef"] == 1e-4 and seaquest["entropy_coef"] == 0.01 and seaquest["num_envs"] == 64


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_a_valid_config(name):
    family, overrides = PRESETS[name]
    cfg = registry.make_config(family, overrides)
    assert cfg.env == overrides["env"]


def test_minatar_preset_resolves_and_cli_flags_override_it(tmp_path):
    args, cfg = train.resolve(["--algo=hpa3c", "--preset=minatar-freeway", "--gamma=0.9", f"--out={tmp_path}/r"])
    assert cfg.env == "Freeway-MinAtar" and cfg.rollout_len == 30 and not cfg.reward_clip
    assert cfg.gamma == 0.9 and cfg.unit == "hp"
