"""Config helpers shared by every algorithm: one-line range/choice errors naming the field and the
valid values, the RL chunk arithmetic, and reading another run's config.json."""

import dataclasses
import json

import pytest

from repthesis.utils.config import RolloutBudget, check_fields, read_run


@dataclasses.dataclass(frozen=True)
class Cfg(RolloutBudget):
    kind: str = "a"
    lr: float = 1e-3
    coef: float = 0.0
    gamma: float = 0.9
    total_env_steps: int = 1000
    num_envs: int = 4
    rollout_len: int = 5
    updates_per_chunk: int = 3

    def __post_init__(self):
        check_fields(self, choices={"kind": ("a", "b")}, positive=("lr", "num_envs"), non_negative=("coef",),
                     unit_interval=("gamma",))


@pytest.mark.parametrize("field, value, needle", [
    ("kind", "c", "kind='c' is not valid; valid: a, b"),
    ("lr", 0.0, "lr=0.0 must be > 0"),
    ("num_envs", -1, "num_envs=-1 must be > 0"),
    ("coef", -0.5, "coef=-0.5 must be >= 0"),
    ("gamma", 1.5, "gamma=1.5 must lie in [0, 1]"),
])
def test_check_fields_names_the_field_and_the_valid_values(field, value, needle):
    with pytest.raises(ValueError) as err:
        Cfg(**{field: value})
    assert str(err.value) == needle
    Cfg(**{field: {"kind": "b", "lr": 1.0, "num_envs": 1, "coef": 0.0, "gamma": 1.0}[field]})  # edge values pass


def test_rollout_budget_rounds_total_steps_up_to_whole_chunks():
    cfg = Cfg()  # 20 agent steps per update, 60 per chunk: 1000 steps -> 17 chunks (1020 steps)
    assert (cfg.steps_per_update, cfg.steps_per_chunk, cfg.num_chunks) == (20, 60, 17)
    assert Cfg(total_env_steps=60).num_chunks == 1 and Cfg(total_env_steps=61).num_chunks == 2
    assert Cfg(total_env_steps=1).num_chunks == 1


def test_read_run_checks_the_directory_and_the_algo(tmp_path):
    with pytest.raises(ValueError, match=r"--graph='.*none' holds no run \(no config.json\)"):
        read_run(str(tmp_path / "none"), "--graph", ["world-graph"])
    (tmp_path / "config.json").write_text(json.dumps({"algo": "a3c", "config": {"env": "x"}}))
    with pytest.raises(ValueError, match="is a --algo=a3c run; valid: world-graph, vae"):
        read_run(str(tmp_path), "--graph", ["world-graph", "vae"])
    assert read_run(str(tmp_path), "--run", ("a3c",))["config"] == {"env": "x"}
