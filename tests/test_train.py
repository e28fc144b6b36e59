"""The training CLI: bad input fails fast and harmlessly; resume is bit-identical; NaN stops."""

import glob
import json
import os

import numpy as np
import pytest

from repthesis import train
from tests.algos.tiny import STEPS_PER_CHUNK, tiny_args


def run_cli(argv, capsys):
    code = train.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, needle", [
    (["--algo=nope"], "valid: a3c, sa3c"),
    (["--algo=a3c", "--no-such-field=1"], "valid config fields"),
    (["--algo=a3c", "--num-envs=many"], "expected int"),
    (["--algo=a3c", "--reward-clip=maybe"], "expected bool"),
    (["--algo=a3c", "--unit=gaussian"], "valid: none, sa, fsa, hp, dropout"),
    (["--algo=a3c", "--total-env-steps=-10"], "must be > 0"),
    (["--algo=a3c", "--env=NoSuchGame"], "valid: CartPole-v1"),
    (["--algo=a3c", "--env=atari:Pong"], "valid: Seaquest, BeamRider"),
    (["--algo=a3c", "--devices=64"], "valid: 1.."),
    (["--algo=a3c", "--preset=atari-nothing"], "valid: atari-seaquest"),
    (["--algo=crvae", "--data=cifar"], "valid: mnist, shapes, folder:PATH"),
    (["--algo=crvae", "--data=mnist", "--data-dir=/nonexistent/dir"], "python -m repthesis.data fetch mnist"),
    (["--algo=crvae", "--data=shapes", "--image-size=30"], "valid: a multiple of 4"),
    (["--algo=criwae", "--iw-samples=0"], "iw_samples=0 must be > 0"),
    (["--algo=crvae", "--blocks=3"], "divisible by blocks=3"),
    (["--algo=vae", "--total-steps=0"], "must be > 0"),
])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(tmp_path, capsys, argv, needle):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(argv + [f"--out={out_dir}"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("repthesis.train: error:") and needle in lines[0], err
    assert not out_dir.exists()


def test_resume_on_empty_dir_and_unwritable_out(tmp_path, capsys):
    code, _, err = run_cli(["--algo=a3c", "--resume", f"--out={tmp_path}"], capsys)
    assert code == 2 and "no run in" in err and len(err.strip().splitlines()) == 1
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(["--algo=a3c", f"--out={blocker}/sub"], capsys)
    assert code == 2 and "not writable" in err and blocker.read_text() == "x"


def _checkpoint_arrays(out_dir):
    from repthesis.utils.checkpoint import CheckpointStore
    import orbax.checkpoint as ocp

    store = CheckpointStore(os.path.join(out_dir, "checkpoints"))
    step = store.steps()[-1]
    tree = store._manager.restore(step, args=ocp.args.StandardRestore())
    store.close()
    import jax

    return step, jax.tree_util.tree_flatten_with_path(jax.tree.map(np.asarray, tree))[0]


def test_existing_run_is_protected_then_resume_is_bit_identical(tmp_path, capsys):
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    common = ["--algo=hpa3c", "--seed=3", "--no-progress"] + tiny_args()
    assert run_cli(common + [f"--out={full}", f"--total-env-steps={4 * STEPS_PER_CHUNK}"], capsys)[0] == 0
    assert run_cli(common + [f"--out={part}", f"--total-env-steps={2 * STEPS_PER_CHUNK}"], capsys)[0] == 0

    # starting over an existing run without --resume is refused and changes nothing
    before = {p: open(p, "rb").read() for p in glob.glob(f"{part}/*.*")}
    code, _, err = run_cli(common + [f"--out={part}"], capsys)
    assert code == 2 and "--resume" in err
    assert before == {p: open(p, "rb").read() for p in glob.glob(f"{part}/*.*")}
    # resuming with a different hyper-parameter is refused too
    code, _, err = run_cli(common[:3] + tiny_args(gamma=0.5) + [f"--out={part}", "--resume"], capsys)
    assert code == 2 and "gamma" in err

    code, out, _ = run_cli(common + [f"--out={part}", "--resume", f"--total-env-steps={4 * STEPS_PER_CHUNK}"], capsys)
    assert code == 0 and "resumed from checkpoint" in out
    step_full, a = _checkpoint_arrays(full)
    step_part, b = _checkpoint_arrays(part)
    assert step_full == step_part == 4 * STEPS_PER_CHUNK
    assert [p for p, _ in a] == [p for p, _ in b]
    for (path, x), (_, y) in zip(a, b):
        np.testing.assert_array_equal(x, y, err_msg=str(path))
    rows = lambda d: open(os.path.join(d, "metrics.csv")).read().splitlines()  # noqa: E731
    strip = lambda lines: [",".join(c for i, c in enumerate(l.split(",")) if i not in drop) for l in lines]  # noqa: E731
    header = rows(full)[0].split(",")
    drop = {header.index("sps"), header.index("wall_time")}
    assert strip(rows(full)) == strip(rows(part))
    for name in ("curve.png", "config.json"):
        assert os.path.getsize(os.path.join(part, name)) > 0
    assert json.load(open(os.path.join(part, "config.json")))["algo"] == "hpa3c"


def test_corrupt_newest_checkpoint_falls_back_with_warning(tmp_path, capsys):
    out = str(tmp_path / "run")
    common = ["--algo=a3c", "--no-progress", f"--out={out}"] + tiny_args()
    assert run_cli(common + [f"--total-env-steps={3 * STEPS_PER_CHUNK}"], capsys)[0] == 0
    newest = os.path.join(out, "checkpoints", str(3 * STEPS_PER_CHUNK))
    for f in glob.glob(f"{newest}/**/*", recursive=True):
        if os.path.isfile(f):
            with open(f, "wb") as fh:
                fh.write(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"):
        code, out_text, _ = run_cli(common + ["--resume", f"--total-env-steps={4 * STEPS_PER_CHUNK}"], capsys)
    assert code == 0
    assert f"resumed from checkpoint at env step {2 * STEPS_PER_CHUNK}" in out_text


def test_non_finite_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, capsys):
    out = str(tmp_path / "run")
    # An absurd learning rate overflows the parameters within a few updates.
    argv = ["--algo=a3c", "--no-progress", f"--out={out}", "--learning-rate=1e35", "--max-grad-norm=1e30",
            f"--total-env-steps={6 * STEPS_PER_CHUNK}"] + tiny_args()
    code, _, err = run_cli(argv, capsys)
    assert code == 1
    assert "non-finite loss" in err and "Last good checkpoint" in err
    from repthesis.utils.checkpoint import CheckpointStore

    store = CheckpointStore(os.path.join(out, "checkpoints"))
    for step in store.steps():  # whatever was saved before the blow-up is finite
        import orbax.checkpoint as ocp
        import jax

        tree = store._manager.restore(step, args=ocp.args.StandardRestore())
        assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(tree) if np.asarray(x).dtype.kind == "f")
    store.close()


def test_cli_data_parallel_run_and_resume_on_four_devices(tmp_path):
    """--devices=4 through the CLI, then --resume: the restored state is re-laid on the mesh."""
    import subprocess
    import sys
    import textwrap

    out = str(tmp_path / "dp")
    code = textwrap.dedent(f"""
        import jax
        from repthesis import train
        from tests.algos.tiny import STEPS_PER_CHUNK, tiny_args
        common = ["--algo=sa3c", "--devices=4", "--no-progress", "--out={out}"] + tiny_args()
        assert len(jax.devices()) == 4
        assert train.main(common + [f"--total-env-steps={{2 * STEPS_PER_CHUNK}}"]) == 0
        assert train.main(common + ["--resume", f"--total-env-steps={{3 * STEPS_PER_CHUNK}}"]) == 0
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed from checkpoint at env step 320" in res.stdout
    rows = open(os.path.join(out, "metrics.csv")).read().splitlines()
    assert len(rows) == 1 + 3


def test_atari_cli_trains_validates_and_resumes_with_new_episodes(tmp_path, capsys):
    pytest.importorskip("envpool")
    out_dir = tmp_path / "atari"
    argv = tiny_args(env="atari:Breakout", num_envs=4, torso="cnn_slim", updates_per_chunk=2, val_max_steps=60) + [
        "--algo=hpa3c", f"--out={out_dir}"]
    code, out, err = run_cli(argv + ["--total-env-steps=40"], capsys)
    assert code == 0, err
    assert "val return" in out or "val_return" in open(out_dir / "metrics.csv").read()
    code, out, err = run_cli(argv + ["--total-env-steps=80", "--resume"], capsys)
    assert code == 0, err
    assert "resumed from checkpoint at env step 40" in out
    rows = open(out_dir / "metrics.csv").read().strip().splitlines()
    assert len(rows) == 3 and rows[-1].startswith("80,")  # header + one row per chunk
    code, out, err = run_cli(argv + ["--total-env-steps=80", "--resume", "--devices=1"], capsys)
    assert code == 0  # nothing left to do, nothing broken


GEN_TINY = ["--data=shapes", "--image-size=16", "--latent-channels=8", "--blocks=4", "--lstm-size=16",
            "--batch-size=16", "--steps-per-chunk=20", "--checkpoint-every=1"]


def test_generative_cli_trains_writes_images_and_resumes_bit_identically(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    code, out, err = run_cli(["--algo=crvae", *GEN_TINY, "--total-steps=40", f"--out={a}"], capsys)
    assert code == 0, err
    for name in ("samples.png", "reconstructions.png", "curve.png", "traversal.png", "interpolation.png", "metrics.csv",
                 "config.json"):
        assert (a / name).exists(), name
    code, out, err = run_cli(["--algo=crvae", *GEN_TINY, "--total-steps=20", f"--out={b}"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["--algo=crvae", *GEN_TINY, "--total-steps=40", f"--out={b}", "--resume"], capsys)
    assert code == 0 and "resumed from checkpoint at step 20" in out, err
    import csv

    keep = ("step", "elbo", "reconstruction", "kl", "val_elbo")  # everything but wall-clock timings
    rows_a, rows_b = ([{k: r[k] for k in keep} for r in csv.DictReader(open(d / "metrics.csv"))] for d in (a, b))
    assert rows_a == rows_b and len(rows_a) == 2
    # evaluate --nll: the resumed run's model is the uninterrupted one's, so its NLL is the same number
    from repthesis import evaluate

    assert evaluate.main(["--nll", f"--run={a}", f"--run={b}", "--samples=8", "--test-images=10",
                          "--checkpoint=latest", f"--out={tmp_path}"]) == 0
    table = [line for line in open(tmp_path / "nll.md") if line.startswith("| a |") or line.startswith("| b |")]
    nll = [float(line.split("|")[3]) for line in table]
    assert len(nll) == 2 and nll[0] == nll[1] and 0 < nll[0] < 16 * 16 * 3 * 10, table
    assert evaluate.main(["--nll", f"--run={a}", "--samples=0"]) == 2
    assert "--samples=0 must be > 0" in capsys.readouterr().err
    assert evaluate.main([f"--run={a}", "--test-images=-1"]) == 2  # a generative run gets --nll by itself
    assert "--test-images=-1 must be >= 0" in capsys.readouterr().err
    assert evaluate.main(["--quality", f"--run={a}", "--quality-samples=20", "--classifier-steps=5", f"--out={tmp_path}"]) == 0
    score = float(open(tmp_path / "quality.md").read().split("| a | crvae | ")[1].split(" ±")[0])
    assert 1.0 <= score <= 3.0  # from 1 (one class, or none sure) to the shapes set's 3 classes
    from repthesis import complete  # completion by latent optimisation (§5.4.4) on the same run

    assert complete.main([f"--run={a}", "--mask=center", "--images=2", "--steps=3", "--checkpoint=latest"]) == 0
    assert (a / "completion_center.png").exists() and "objective" in capsys.readouterr().out
    assert complete.main([f"--run={a}", "--mask=nose"]) == 2
    assert "valid: lower, upper" in capsys.readouterr().err
