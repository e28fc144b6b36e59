"""Evaluation protocol: table arithmetic, modes, analyses and GIF on a tiny trained run."""

import os

import numpy as np
import pytest

from repthesis import evaluate, train
from repthesis.rl.evaluation import parse_mode
from tests.algos.tiny import STEPS_PER_CHUNK, tiny_args


def test_protocol_table_best_and_avg():
    table = evaluate.protocol_table({"map": [(1.0, 0.5), (3.0, 1.0), (2.0, 0.0)]}, ["r1", "r2", "r3"])
    row = table.splitlines()[2]
    # Best = run with the highest μ (3±1); Avg = mean±std of μ over runs = 2 ± sqrt(2/3)
    assert row == f"| map | 1.00±0.50 | 3.00±1.00 | 2.00±0.00 | 3.00±1.00 | 2.00±{np.sqrt(2 / 3):.2f} |"


@pytest.mark.parametrize("mode, k", [("map", 0), ("vote-1", 1), ("vote-50", 50), ("random", -1)])
def test_parse_mode(mode, k):
    assert parse_mode(mode) == k


@pytest.mark.parametrize("mode", ["vote-0", "vote", "mean", "vote-x"])
def test_parse_mode_rejects(mode):
    with pytest.raises(ValueError, match="valid: map, vote-K"):
        parse_mode(mode)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "sa3c")
    argv = ["--algo=sa3c", "--no-progress", f"--out={out}", f"--total-env-steps={2 * STEPS_PER_CHUNK}",
            "--log-var=0"] + tiny_args()
    assert train.main(argv) == 0
    return out


def test_evaluate_writes_table_plots_and_gif(tiny_run, tmp_path, capsys):
    out = str(tmp_path / "eval")
    code = evaluate.main([f"--run={tiny_run}", f"--run={tiny_run}", "--modes=map,vote-3", "--test-seeds=3",
                          f"--out={out}", "--analysis", "--gif"])
    assert code == 0
    text = open(os.path.join(out, "evaluation.md")).read()
    assert "| map |" in text and "| vote-3 |" in text and "Best" in text
    for name in ("value_variance.png", "action_entropy.png", "value_variance_training.png", "episode.gif"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name


def test_sampled_activations_give_value_variance_map_gives_none(tiny_run):
    from repthesis.rl.evaluation import runner_for

    _, _, trainer, params = evaluate.load_run(tiny_run, "best")
    seeds = np.arange(2, dtype=np.uint32)
    mk = lambda mode: runner_for(trainer, mode)  # noqa: E731
    voted = mk("vote-5")(params, seeds)
    alive = np.asarray(voted["alive"])
    assert np.all(np.asarray(voted["value_var"])[alive] > 0)  # log σ² = 0: clearly stochastic
    a, b = mk("map")(params, seeds), mk("map")(params, seeds)
    np.testing.assert_array_equal(a["returns"], b["returns"])
    assert np.all(np.asarray(a["finished"]))


def test_evaluate_bad_input(tiny_run, tmp_path, capsys):
    assert evaluate.main([f"--run={tmp_path}"]) == 2
    assert "not a training run" in capsys.readouterr().err
    assert evaluate.main([f"--run={tiny_run}", "--nll"]) == 2
    assert "--nll / --quality evaluate generative runs" in capsys.readouterr().err
    assert evaluate.main([f"--run={tiny_run}", "--modes=map,vote-0"]) == 2
    assert "valid: map, vote-K" in capsys.readouterr().err
