"""Sweeps as a user runs them (sweep.sh, the joblib launcher, the Optuna sweeper), the presets,
the SLURM launcher config and the sweep report; see docs/sweeps.md."""
import json
import os
import re

import joblib
import pytest
import yaml
from hydra import compose, initialize_config_dir
from PIL import Image

from conftest import REPO, TINY_RUN, make_config, run_sweep, scalars, table_rows
from vae_lab import report
from vae_lab.training.callbacks import FigureLogger
from vae_lab.training import train
from vae_lab.config import CONF

TINY_SWEEP = ["epochs=1", *TINY_RUN]


def composed(*overrides: str):
    """The config with Hydra's own part, as `python train.py <overrides>` would compose it."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


@pytest.fixture(scope="module")
def beta_sweep(tmp_path_factory, data_root):
    """A 2-run sweep through ./sweep.sh, switched to the z=2 β-sweep preset with its grid cut to β = 1, 16."""
    sweep_dir = tmp_path_factory.mktemp("beta_sweep")
    result = run_sweep("experiment=conv_mse_z2_beta", "beta=1,16", *TINY_SWEEP,
                       sweep_dir=sweep_dir, command=("./sweep.sh",))
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


@pytest.fixture(scope="module")
def parallel_sweep(tmp_path_factory, data_root):
    """2 jobs at once on the joblib launcher; job 0's lr makes its loss NaN, job 1 trains."""
    sweep_dir = tmp_path_factory.mktemp("parallel_sweep")
    env = {key: value for key, value in os.environ.items() if key != "OMP_NUM_THREADS"}  # as a fresh shell
    result = run_sweep("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "lr=1e6,1e-3", *TINY_SWEEP,
                       sweep_dir=sweep_dir, env=env)
    return sweep_dir, result


def test_sweep_sh_runs_a_presets_grid_with_its_arguments(beta_sweep):
    runs = sorted(path.name for path in beta_sweep.iterdir() if path.is_dir())
    assert runs == ["0", "1"]
    for run, beta in zip(runs, (1, 16)):
        config = yaml.safe_load((beta_sweep / run / "config.yaml").read_text())
        assert (config["beta"], config["z_dim"], config["epochs"]) == (beta, 2, 1)
        assert config["model"]["name"] == "conv"
        assert config["loss"]["likelihood"] == "mse"
        assert (beta_sweep / run / "checkpoints" / "last.ckpt").is_file()


def test_joblib_runs_jobs_side_by_side_each_on_its_share_of_the_cores(parallel_sweep):
    sweep_dir, result = parallel_sweep
    threads = max(joblib.cpu_count() // 2, 1)
    for run in ("0", "1"):
        assert f"torch uses {threads} CPU threads" in (sweep_dir / run / "train.log").read_text()
    # the failed job is reported and does not stop the other one
    assert result.returncode != 0
    assert "training loss became nan at step 1 (epoch 0)" in result.stderr
    assert not (sweep_dir / "0" / "checkpoints").exists()
    assert (sweep_dir / "1" / "checkpoints" / "last.ckpt").is_file()


def test_report_has_a_row_per_run_with_its_final_losses_and_the_plots(beta_sweep, capsys):
    report.main([str(beta_sweep)])
    assert capsys.readouterr().out == (f"wrote report.md, rate_distortion.png, samples_by_run.png, "
                                       f"manifolds_by_run.png to {beta_sweep}\n")
    header, *rows = table_rows((beta_sweep / "report.md").read_text())
    assert header == ["run", "beta", "status", "train loss", "val loss", "val recon", "val KL"]
    assert [row[:3] for row in rows] == [["0", "1", "finished"], ["1", "16", "finished"]]
    for row in rows:
        events = scalars(beta_sweep / row[0])
        final = [events[tag][-1][1] for tag in ("train/loss_epoch", "val/loss", "val/recon", "val/kl")]
        assert row[3:] == [f"{value:.2f}" for value in final]
    for name, runs in (("samples_by_run", 2), ("manifolds_by_run", 2), ("rate_distortion", 1)):
        width, height = Image.open(beta_sweep / f"{name}.png").size
        assert width >= runs * 300 and height >= 300, name  # one panel per run, side by side


def test_report_marks_the_failed_run_and_adds_metrics_json_columns(parallel_sweep, capsys):
    sweep_dir, _ = parallel_sweep
    (sweep_dir / "1" / "metrics.json").write_text('{"fid": 12.5, "sharpness": 3, "note": "not a number"}')
    report.main([str(sweep_dir)])
    assert capsys.readouterr().out.startswith("wrote report.md, rate_distortion.png, samples_by_run.png to")
    header, failed, finished = table_rows((sweep_dir / "report.md").read_text())
    assert header == ["run", "lr", "status", "train loss", "val loss", "val recon", "val KL", "fid", "sharpness"]
    assert failed == ["0", "1e+06", "**failed**", "—", "—", "—", "—", "—", "—"]
    assert finished[:3] == ["1", "0.001", "finished"] and finished[-2:] == ["12.5", "3"]
    assert "1 of 2 runs did not finish" in (sweep_dir / "report.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["{tmp}/missing"], "error: {tmp}/missing: no such folder"),
    (["{tmp}"], "error: {tmp}: no runs in it"),
    ([], "error: give run or sweep folders"),
    (["{tmp}/*-nothing"], "error: {tmp}/*-nothing: matches no folder"),
    (["{tmp}", "--out"], "error: --out needs a folder"),
])
def test_report_bad_input_is_one_error_line(argv, message, tmp_path):
    with pytest.raises(SystemExit) as exit:
        report.main([arg.format(tmp=tmp_path) for arg in argv])
    assert str(exit.value.code).startswith(message.format(tmp=tmp_path))
    assert "\n" not in str(exit.value.code)


CONV, DENSE, CVAE, HVAE = "conv", "dense", "cvae", "hvae"
# preset -> (model, likelihood, z_dim, epochs, beta, hydra.sweeper.params); the reference numbers are in docs/sweeps.md
PRESETS = {
    "conv_mse_z20": (CONV, "mse", 20, 20, 1.0, None),
    "conv_mse_z20_beta": (CONV, "mse", 20, 10, 1.0, {"beta": "1,3,8,16"}),
    "conv_mse_z2": (CONV, "mse", 2, 20, 1.0, None),
    "conv_mse_z2_beta": (CONV, "mse", 2, 15, 1.0, {"beta": "3,8,16"}),
    "cvae_mse_z20": (CVAE, "mse", 20, 40, 1.0, None),
    "dense_losses": (DENSE, "bce", 20, 20, 1.0, {"loss": "bce,mse"}),
    "binarized_baseline": (DENSE, "bce", 50, 350, 1.0, None),
    "hierarchical_baseline": (HVAE, "bce", 64, 360, 1.0, None),
    "vamp_baseline": (DENSE, "bce", 50, 280, 1.0, None),
    "fashion_beta": (CONV, "mse", 20, 10, 1.0, {"beta": "1,3,8,16"}),
    "fashion_z2": (CONV, "mse", 2, 20, 1.0, None),
    "fashion_bits": (CONV, {"name": "logistic_mixture", "components": 5}, 32, 30, 1.0, None),
    "disentangle_beta": (CONV, "mse", 10, 10, 1.0, {"beta": "1,3,8,16", "seed": "0,1,2"}),
    "disentangle_btcvae": (CONV, "mse", 10, 10, 1.0, {"beta": "8,16", "seed": "0,1,2"}),
}


def test_every_preset_is_tested():
    assert sorted(path.stem for path in (CONF / "experiment").glob("*.yaml")) == sorted(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_to_its_reference_experiment(name):
    cfg = composed(f"+experiment={name}")
    params = cfg.hydra.sweeper.params
    found = (cfg.model.name, cfg.loss.likelihood, cfg.z_dim, cfg.epochs, cfg.beta, params and dict(params))
    assert found == PRESETS[name]
    command = f"python train.py {'-m ' if params else ''}+experiment={name}"
    assert command in (CONF / "experiment" / f"{name}.yaml").read_text()


def test_vamp_baseline_is_the_binarized_baseline_with_a_vampprior_trained_longer():
    vamp, baseline = composed("+experiment=vamp_baseline"), composed("+experiment=binarized_baseline")
    assert (vamp.prior.name, baseline.prior.name) == ("vamp", "standard")
    assert (vamp.epochs, baseline.epochs) == (280, 350)
    for key in ("model", "loss", "kl_schedule", "lr_schedule", "data", "z_dim", "lr", "batch_size"):
        assert vamp[key] == baseline[key], key


def test_sweeps_page_lists_every_preset_with_its_command_and_numbers():
    rows = {cells[0]: cells for cells in table_rows((REPO / "docs" / "sweeps.md").read_text())}
    for name in PRESETS:
        preset = (CONF / "experiment" / f"{name}.yaml").read_text()
        row = rows[f"`{name}`"]
        command = re.search(r"^#\s+(python train\.py .+)$", preset, re.M)[1]
        assert f"`{command}`" in row[3], name
        assert re.findall(r"\d+\.\d\d", row[2]) == re.findall(r"\d+\.\d\d", preset), name  # reference numbers


def test_slurm_launcher_composes_with_partition_time_and_gpus_set():
    launcher = composed("hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=30",
                        "hydra.launcher.gpus_per_node=2").hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.timeout_min, launcher.gpus_per_node) == ("gpu", 30, 2)


def test_optuna_sweep_tunes_lr_on_the_final_val_loss(tmp_path, data_root):
    sweeper = composed("hydra/sweeper=tune_lr").hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert (sweeper.direction, dict(sweeper.params)) == ("minimize", {"lr": "tag(log, interval(1e-4, 1e-2))"})

    result = run_sweep("hydra/sweeper=tune_lr", "hydra.sweeper.n_trials=2", *TINY_SWEEP, sweep_dir=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    trials = {}
    for run in ("0", "1"):
        lr = yaml.safe_load((tmp_path / run / "config.yaml").read_text())["lr"]
        trials[lr] = scalars(tmp_path / run)["val/loss"][-1][1]
    assert len(trials) == 2 and all(1e-4 <= lr <= 1e-2 for lr in trials)
    best_lr = min(trials, key=trials.get)
    assert best["best_params"] == {"lr": best_lr}
    assert best["best_value"] == pytest.approx(trials[best_lr])


def test_a_run_whose_pictures_fail_keeps_its_losses_and_is_marked_so(tmp_path, monkeypatch, capsys, data_root):
    def out_of_disk(self, trainer, model):
        raise OSError("No space left on device")

    monkeypatch.setattr(FigureLogger, "write_pictures", out_of_disk)
    run_dir = tmp_path / "0"
    train(make_config(run_dir, "epochs=1", *TINY_RUN))  # the run itself succeeds
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["figures"] == {"written": [], "error": "OSError: No space left on device"}
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    report.main([str(tmp_path)])
    header, row = table_rows((tmp_path / "report.md").read_text())
    assert row[header.index("status")] == "finished, pictures failed"
    assert row[header.index("val loss")] == f"{summary['final']['val_loss']:.2f}"


def test_report_compares_any_runs_and_groups_those_that_differ_only_in_seed(tmp_path, data_root):
    for name, overrides in {"seed0": ["seed=0"], "seed1": ["seed=1"], "beta4": ["seed=0", "beta=4"]}.items():
        train(make_config(tmp_path / "runs" / name, "epochs=1", *overrides, *TINY_RUN))
    out = tmp_path / "mine"
    report.main([str(tmp_path / "runs" / "seed*"), str(tmp_path / "runs" / "beta4"), "--out", str(out)])
    text = (out / "report.md").read_text()
    header, *rows = table_rows(text.split("## Over seeds")[0])
    assert header == ["run", "beta", "seed", "status", "train loss", "val loss", "val recon", "val KL"]
    assert [row[:3] for row in rows] == [["seed0", "1", "0"], ["seed1", "1", "1"], ["beta4", "4", "0"]]
    (group_header, group), = [table_rows(text.split("## Over seeds")[1])]
    assert group_header == ["beta", "seeds", "train loss", "val loss", "val recon", "val KL"]
    finals = [json.loads((tmp_path / "runs" / run / "summary.json").read_text())["final"]["val_loss"]
              for run in ("seed0", "seed1")]
    mean, spread = sum(finals) / 2, abs(finals[0] - finals[1]) / 2 ** 0.5
    assert group[:2] == ["1", "0, 1"] and group[3] == f"{mean:.2f} ± {spread:.2f}"
    assert (out / "rate_distortion.png").is_file() and (out / "samples_by_run.png").is_file()
