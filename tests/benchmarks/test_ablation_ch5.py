"""benchmarks/ablation_ch5.py: a run stopped by --time-limit and continued with --resume scores
exactly what an uninterrupted run scores, and earlier results are never overwritten by mistake."""

import gzip
import importlib.util
import json
import os
import pickle

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("ablation_ch5", os.path.join(ROOT, "benchmarks", "ablation_ch5.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.CHUNK = 10  # 3 chunks of 10 steps for --steps=30
    return module


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    splits = tuple((rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n)) for n in (256, 8, 100))
    with gzip.open(d / "mnist.pkl.gz", "wb") as f:
        pickle.dump(splits, f)
    return str(d)


def results(out):
    with open(os.path.join(out, "results.json")) as f:
        return json.load(f)


def test_time_limit_then_resume_equals_an_uninterrupted_run(ablation, mnist_dir, tmp_path, capsys):
    args = ["--budget=smoke", "--seeds=1", "--models=vae", "--steps=30", "--eval-every=10", f"--data-dir={mnist_dir}"]
    whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
    assert ablation.main(args + [f"--out={whole}"]) == 0
    assert ablation.main(args + [f"--out={parts}", "--time-limit=0"]) == 0  # stops after the first chunk
    assert "--resume" in capsys.readouterr().out
    assert results(parts)["results"] == {}
    partial = open(os.path.join(parts, "results.md")).read()
    assert "Incomplete: 1 run(s)" in partial and "| 10 | " in partial  # the unfinished run's curve so far
    with pytest.raises(SystemExit):  # its checkpoint is not overwritten by a fresh start
        ablation.main(args + [f"--out={parts}"])
    assert "pass --resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # nor resumed under another budget
        ablation.main(args[:3] + ["--steps=40", f"--data-dir={mnist_dir}", f"--out={parts}", "--resume"])
    assert "another budget" in capsys.readouterr().err
    assert ablation.main(args + [f"--out={parts}", "--resume"]) == 0
    assert "resumed at step 10" in capsys.readouterr().out
    (a,), (b,) = results(whole)["results"]["vae {}"], results(parts)["results"]["vae {}"]
    assert [s for s, _ in a["curve"]] == [10, 20, 30]
    assert a["curve"] == b["curve"] and a["nll"] == b["nll"] == a["curve"][-1][1]
    assert a["train_bound"] == b["train_bound"] and np.isfinite(a["nll"])
    assert 0 <= b["active_units"] <= b["latent_units"] == 256 and b["kl"] > 0
    table = open(os.path.join(parts, "results.md")).read()
    assert "Incomplete" not in table and f"| 30 | {a['nll']:.2f} |" in table
    assert os.path.isfile(os.path.join(parts, "nll_curve.png"))
    # its final model is a run folder that repthesis.evaluate --nll scores (here with the same keys)
    from repthesis import evaluate

    run = os.path.join(parts, "runs", "vae-seed0")
    assert evaluate.main(["--nll", f"--run={run}", "--checkpoint=latest", "--samples=10", "--test-images=100",
                          f"--data-dir={mnist_dir}", f"--out={tmp_path}"]) == 0
    assert f"NLL {b['nll']:.2f}" in capsys.readouterr().out
    # a finished run is kept, not retrained, by a later --resume (e.g. one adding seeds)
    assert ablation.main(args + [f"--out={parts}", "--resume"]) == 0
    assert results(parts)["results"]["vae {}"] == [b]


def test_eval_every_must_fall_on_a_chunk(ablation, mnist_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        ablation.main(["--budget=smoke", "--steps=30", "--eval-every=15", f"--data-dir={mnist_dir}",
                       f"--out={tmp_path}"])
    assert "multiple of the chunk, 10" in capsys.readouterr().err


def test_crvae_latent_stats_split_the_total_by_block(ablation):
    import jax

    from repthesis import registry

    cfg = registry.make_config("crvae", {"width": 8, "lstm_size": 16})
    images = (np.random.default_rng(0).random((40, 28, 28, 1)) < 0.3).astype(np.float32)
    trainer = registry.get_algo("crvae").make_train(cfg, images, True)
    params = trainer.init(jax.random.PRNGKey(0)).params
    stats = ablation.latent_stats(trainer, params, images)
    assert stats["latent_units"] == 256 and len(stats["active_per_block"]) == len(stats["kl_per_block"]) == 8
    assert sum(stats["active_per_block"]) == stats["active_units"]
    np.testing.assert_allclose(sum(stats["kl_per_block"]), stats["kl"], rtol=1e-5)
    mean = np.asarray(trainer.network.apply(params, images, method=trainer.network.encode)[0])
    assert stats["active_units"] == int((mean.reshape(40, -1).var(axis=0) > 0.01).sum())


def test_set_reaches_every_run_and_names_it(ablation, mnist_dir, tmp_path, capsys):
    args = ["--budget=smoke", "--seeds=1", "--models=crvae", "--steps=10", f"--data-dir={mnist_dir}"]
    for bad, why in (("lstm_layer=2", "unknown option --lstm_layer"), ("lstm_layers=two", "expected int"),
                     ("width=4", "width is set by the rows and --budget")):
        with pytest.raises(SystemExit):
            ablation.main(args + [f"--set={bad}", f"--out={tmp_path / 'bad'}"])
        assert why in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "bad")  # refused before anything is written
    out = str(tmp_path / "set")
    assert ablation.main(args + ["--set=lstm_layers=1", "--set=lstm_size=8", f"--out={out}", "--time-limit=0"]) == 0
    with open(os.path.join(out, "runs", "crvae-lstm_layers=1-lstm_size=8-seed0", "config.json")) as f:
        cfg = json.load(f)["config"]
    assert (cfg["lstm_layers"], cfg["lstm_size"], cfg["mean_path"]) == (1, 8, "dense")
    assert "mean path dense, 1-layer block LSTMs of 8 units" in open(os.path.join(out, "results.md")).read()


def test_merge_makes_one_table_of_parts_run_side_by_side(ablation, mnist_dir, tmp_path, capsys):
    args = ["--budget=smoke", "--seeds=1", "--steps=10", f"--data-dir={mnist_dir}"]
    a, b, out = str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "merged")
    assert ablation.main(args + ["--models=vae", f"--out={a}"]) == 0
    assert ablation.main(args + ["--models=cvae", f"--out={b}"]) == 0
    assert ablation.main(["--budget=smoke", "--seeds=1", "--steps=10", "--models=vae,cvae", f"--merge={a},{b}",
                          f"--out={out}", "--data-dir=/nonexistent"]) == 0  # merging needs no data
    merged = results(out)
    assert merged["results"] == {**results(a)["results"], **results(b)["results"]}
    assert merged["wall_s"] == max(results(a)["wall_s"], results(b)["wall_s"])
    table = open(os.path.join(out, "results.md")).read()
    assert "--models=vae" in table and "--models=cvae" in table and "the longest of 2 parts" in table
    assert "Incomplete" not in table
    vae_nll = results(a)["results"]["vae {}"][0]["nll"]
    assert f"| VAE | – | {vae_nll:.2f} ± 0.00 |" in table
    # every row of the default table, 2 seeds: the missing runs are counted
    assert ablation.main(["--budget=smoke", "--seeds=2", "--steps=10", f"--merge={a},{b}", f"--out={out}"]) == 0
    assert "Incomplete: 8 run(s)" in open(os.path.join(out, "results.md")).read()
    for bad, why in ((f"--merge={a},{a}", "vae seed 0 is in two of the --merge folders"),
                     (f"--merge={a},{tmp_path}", "holds no results.json"),
                     (f"--merge={a} --out={a}", "is one of the --merge folders"),
                     (f"--merge={a} --steps=20", "another budget"),
                     (f"--merge={a} --models=cvae", "no row here"),
                     ("--merge=,", "names no folder")):
        with pytest.raises(SystemExit):
            ablation.main(["--budget=smoke", "--seeds=1", "--steps=10", f"--out={tmp_path / 'm2'}"] + bad.split())
        assert why in capsys.readouterr().err
    assert results(a)["results"].keys() == {"vae {}"}  # the parts are left as they were

    # the orderings the thesis reports, judged on the means over seeds of the merged runs
    fake = str(tmp_path / "fake")
    os.makedirs(fake)
    run = {k: v for k, v in results(a)["results"]["vae {}"][0].items() if k in ("nll", "steps_per_s", "latent_units")}
    nll = {"crvae": (85.0, 85.4), "crvae-2layer": (85.3, 85.3), "criwae": (84.6, 84.7)}
    with open(os.path.join(fake, "results.json"), "w") as f:
        json.dump({**results(a), "results": {f"{algo} {{}}": [{**run, "seed": s, "nll": v} for s, v in enumerate(vs)]
                                             for algo, vs in nll.items()}}, f)
    assert ablation.main(["--budget=smoke", "--seeds=2", "--steps=10", "--models=vae,crvae,crvae-2layer,criwae",
                          f"--merge={a},{fake}", f"--out={tmp_path / 'm3'}"]) == 0
    table = open(os.path.join(tmp_path, "m3", "results.md")).read()
    assert "- crIWAE < crVAE: holds here (84.65 vs 85.20)" in table
    assert "- crVAE with 2 stochastic layers < crVAE: does NOT hold here (85.30 vs 85.20)" in table
    assert f"- crVAE < VAE: {'holds' if 85.2 < vae_nll else 'does NOT hold'} here (85.20 vs {vae_nll:.2f})" in table
