"""A sweep over β and seed trained as one stacked model (hydra/launcher=stacked,
vae_lab.training.stacked): the same training and the same files as its runs trained one by one."""
import json
import re
import subprocess
import sys

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from conftest import TINY_RUN, make_config, run_sweep, run_train, scalars
from vae_lab.errors import VaeLabError
from vae_lab.training import train
from vae_lab.training.stacked import check_stackable, train_stacked

# Each member's own step (vectorized=False, the default on the CPU), one after another (workers=1)
# at its run's thread count: the very operations of the separate run; at 2 threads every member's
# weights have come out bit-identical to its run's, at one thread (MKL's single-threaded products
# are not the same bit for bit on every buffer) within 1e-9 after 10 steps. Side by side (workers=2),
# each member at one thread against its run's two (measured with -n 0): dense's weights came out bit-identical, conv's
# within 1.1e-6 (oneDNN's convolutions sum in another order at one thread; Adam's step is about lr
# wherever a gradient is near 0, so a last-bit difference there moves a weight by more). One vmap
# over the members (vectorized=True, the default on a GPU): a batched product sums in another
# order than one product, so the last bits differ from the first step on; after 10 Adam steps (lr
# 1e-3: a weight moves by up to 1e-2) a weight is within 1e-4 of its run's (measured: 8e-6, dense).
WEIGHTS_ATOL = {"exact": 1e-7, "one thread": 1e-5, "vmap": 1e-4}
ADAM = {"exact": dict(rtol=1e-5, atol=1e-8), "one thread": dict(rtol=1e-3, atol=1e-5),
        "vmap": dict(rtol=1e-3, atol=1e-5)}  # the first moments
# What the TensorBoard values of a member and its run may differ by (the losses of those weights).
VALUES = {"exact": dict(rel=1e-6, abs=1e-6), "one thread": dict(rel=1e-5, abs=1e-5), "vmap": dict(rel=1e-4, abs=1e-4)}

def _files(folder):
    """The run folder's files by name, TensorBoard event files (named by time and process) as one."""
    return sorted({"events" if p.name.startswith("events.out") else str(p.relative_to(folder))
                   for p in folder.rglob("*") if p.is_file()})


BETA_AND_SEED = [["beta=1", "seed=0"], ["beta=8", "seed=1"]]  # a β grid and a seed grid at once
# and an lr grid, under a schedule (each member's learning rate its own, scheduled as in its run)
BETA_SEED_AND_LR = [[*job, "lr_schedule=cosine"] for job in BETA_AND_SEED[:1] + [[*BETA_AND_SEED[1], "lr=3e-3"]]]


@pytest.mark.parametrize("model, grid, vectorized, workers, way", [
    ("dense", BETA_AND_SEED, False, 1, "exact"), ("dense", BETA_SEED_AND_LR, False, 2, "one thread"),
    ("dense", BETA_AND_SEED, True, None, "vmap"),
    ("conv", [["beta=3", "seed=0"], ["beta=3", "seed=2"]], False, 2, "one thread"),  # the CPU's way (vmap of conv: benchmarks/stacking.py)
], ids=["dense-one-by-one", "dense-side-by-side", "dense-vmap", "conv-side-by-side"])
def test_stacked_members_train_and_write_what_their_separate_runs_do(model, grid, vectorized, workers, way, tmp_path,
                                                                     data_root):
    common = [f"model={model}", "epochs=2", *TINY_RUN]
    losses = train_stacked([make_config(tmp_path / "stacked" / str(i), *common, *job) for i, job in enumerate(grid)],
                           vectorized=vectorized, workers=workers)
    values, atol = VALUES[way], WEIGHTS_ATOL[way]
    for i, job in enumerate(grid):
        alone, stacked = tmp_path / "alone" / str(i), tmp_path / "stacked" / str(i)
        assert losses[i] == pytest.approx(train(make_config(alone, *common, *job)), **values)
        a, b = (torch.load(run / "checkpoints" / "last.ckpt", weights_only=True) for run in (alone, stacked))
        assert b.keys() == a.keys() and b["loops"] == a["loops"] and b["global_step"] == a["global_step"] == 10
        assert list(b["state_dict"]) == list(a["state_dict"])
        for name, weights in a["state_dict"].items():
            torch.testing.assert_close(b["state_dict"][name], weights, rtol=0, atol=atol, msg=name)
        (adam_a,), (adam_b,) = a["optimizer_states"], b["optimizer_states"]
        assert adam_b["param_groups"] == adam_a["param_groups"] and b["lr_schedulers"] == a["lr_schedulers"]
        for key, state in adam_a["state"].items():
            assert torch.equal(adam_b["state"][key]["step"], state["step"])
            torch.testing.assert_close(adam_b["state"][key]["exp_avg"], state["exp_avg"], **ADAM[way])
        assert b["hyper_parameters"] == yaml.safe_load((stacked / "config.yaml").read_text())
        assert {**b["hyper_parameters"], "output_dir": None} == {**a["hyper_parameters"], "output_dir": None}
        (callback, state_a), (key_b, state_b) = *a["callbacks"].items(), *b["callbacks"].items()
        assert key_b == callback and state_b["best_model_path"] == str(stacked / "checkpoints" / "best-epoch01.ckpt")
        # the same TensorBoard tags, at the same steps, with the same values within the tolerance
        logged_a, logged_b = scalars(alone), scalars(stacked)
        assert logged_b.keys() == logged_a.keys()
        for tag, points in logged_a.items():
            assert [step for step, _ in logged_b[tag]] == [step for step, _ in points], tag
            assert [value for _, value in logged_b[tag]] == pytest.approx([value for _, value in points], **values), tag
        assert _files(stacked) == _files(alone)
        summaries = [json.loads((run / "summary.json").read_text()) for run in (alone, stacked)]
        assert summaries[1]["status"] == "finished" and summaries[1]["settings"] == summaries[0]["settings"]
        assert summaries[1]["checkpoints"] == summaries[0]["checkpoints"]


def test_a_stacked_sweep_through_train_py_is_a_sweep_whose_runs_resume_as_normal_runs(tmp_path, data_root):
    sweep = tmp_path / "sweep"
    result = run_sweep("beta=1,8", "epochs=2", *TINY_RUN, "hydra/launcher=stacked", sweep_dir=sweep)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training 2 runs as one stacked model: beta=1 seed=0, beta=8 seed=0" in result.stdout
    for job, beta in ((0, 1), (1, 8)):
        run = sweep / str(job)
        assert (run / ".hydra" / "overrides.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
        assert yaml.safe_load((run / "config.yaml").read_text())["beta"] == beta
        assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    report = subprocess_report(sweep)
    assert report.returncode == 0, report.stderr
    assert len(re.findall(r"\| finished \|", (sweep / "report.md").read_text())) == 2
    # a member resumes as a normal run, without stacking: its step, its best checkpoint carried over
    resumed = tmp_path / "resumed"
    result = run_train("beta=8", "epochs=3", *TINY_RUN, f"ckpt_path={sweep / '1' / 'checkpoints' / 'last.ckpt'}",
                       run_dir=resumed)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 15 and checkpoint["epoch"] == 2
    assert min(step for step, _ in scalars(resumed)["train/loss"]) >= 10


def subprocess_report(sweep):
    return subprocess.run([sys.executable, "-m", "vae_lab.report", str(sweep)], capture_output=True, text=True)


REFUSED = [
    (["model=dense", "model=conv"], "model.name differs between jobs (dense, conv): stacked members must share every shape"),
    (["z_dim=2", "z_dim=20"], "model.z_dim differs between jobs (2, 20): stacked members must share every shape"),
    (["beta=1", "beta=2 +optimizer.weight_decay=0.01"], "optimizer.weight_decay differs between jobs (None, 0.01): "
                                                         "stacked members may differ only in beta, seed and lr"),
    (["epochs=1", "epochs=2"], "trainer.max_epochs differs between jobs (1, 2): stacked members train the same steps "
                               "and stop together"),
    (["model=hvae beta=1", "model=hvae beta=2"], "model=hvae draws noise inside its prior, which a stacked step "
                                                 "cannot give each member as its run would"),
    (["loss=btcvae beta=1", "loss=btcvae beta=2"], "loss.name=btcvae: only the ELBO (loss=bce, loss=mse) trains stacked"),
    (["+trainer.gradient_clip_val=1 beta=1", "+trainer.gradient_clip_val=1 beta=2"],
     "gradient clipping takes one norm over all weights; stacked, it would mix the members"),
    (["callbacks=evaluate beta=1", "callbacks=evaluate beta=2"], "callbacks.evaluate runs inside a single run's trainer"),
    (["data.binarize=dynamic seed=0", "data.binarize=dynamic seed=1"], "data.binarize=dynamic draws fixed binary images "
                                                                       "from each seed"),
]


@pytest.mark.parametrize("jobs, message", REFUSED, ids=[message.split(" ")[0] for _, message in REFUSED])
def test_what_cannot_stack_is_refused_in_one_line(jobs, message, tmp_path):
    configs = [OmegaConf.to_container(make_config(tmp_path / str(i), *job.split()), resolve=True)
               for i, job in enumerate(jobs)]
    with pytest.raises(VaeLabError, match=rf"^{re.escape(message)}.*; run without hydra/launcher=stacked$"):
        check_stackable(configs)


@pytest.mark.parametrize("grid, error", [
    (["z_dim=2,20"], "model.z_dim differs between jobs (2, 20): stacked members must share every shape; "
                     "run without hydra/launcher=stacked"),
    (["beta=1,8", "hydra.launcher.workers=0"], "hydra.launcher.workers=0 must be an integer >= 1 (or null: one per "
                                               "CPU thread)"),
], ids=["shapes", "workers"])
def test_a_refused_stacked_sweep_writes_no_run(grid, error, tmp_path, data_root):
    sweep = tmp_path / "sweep"
    result = run_sweep(*grid, *TINY_RUN, "hydra/launcher=stacked", sweep_dir=sweep)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {error}"]
    assert not [p for p in sweep.iterdir() if p.is_dir()]  # Hydra's job folders removed again


def test_a_member_whose_loss_stops_being_finite_stops_the_stacked_sweep_naming_it(tmp_path, data_root):
    sweep = tmp_path / "sweep"
    result = run_sweep("lr=1e6", "beta=1,8", "epochs=2", *TINY_RUN, "hydra/launcher=stacked", sweep_dir=sweep)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.fullmatch(r"error: training loss of [01] became non-finite by step \d+ \(epoch \d\); "
                                             r"the stacked sweep stopped, .*; try a lower lr", errors[0]), errors
    for job in (0, 1):
        summary = json.loads((sweep / str(job) / "summary.json").read_text())
        assert summary["status"] == "failed" and "non-finite" in summary["error"]
