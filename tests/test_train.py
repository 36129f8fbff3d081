"""Short real trainings on real MNIST, through train.py as a user runs it."""
import json
import os
import re

import pytest
import torch
import yaml

from lightning.pytorch.callbacks import Callback

from conftest import SHORT_RUN, SHORT_RUNS, TINY_RUN, make_config, run_train, scalars
from vae_lab.errors import VaeLabError
from vae_lab.training import train

SCALARS = [f"{split}/{term}" for split in ("train", "val") for term in ("loss", "recon", "kl")]


@pytest.fixture(params=SHORT_RUNS)
def finished_run(request, short_runs):
    model, loss = request.param.split("-")[:2]
    return model, loss, short_runs(request.param)


def test_validation_loss_falls_clearly_below_its_initial_value(finished_run):
    _, _, run_dir = finished_run
    val_loss = scalars(run_dir)["val/loss"]
    (first_step, initial), (last_step, final) = val_loss[0], val_loss[-1]
    assert first_step == 0 and last_step == 200  # before the first and after the 200th optimizer step
    assert final < 0.6 * initial, val_loss


def test_run_folder_has_events_checkpoints_and_resolved_config(finished_run):
    model, loss, run_dir = finished_run
    assert set(SCALARS) <= set(scalars(run_dir))
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run_dir / "checkpoints").glob("best-epoch*.ckpt"))) == 1
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["name"] == model
    assert config["loss"]["likelihood"] == loss and config["output_dir"] == str(run_dir)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"] == config and checkpoint["global_step"] == 200


def test_resume_continues_from_the_checkpoint(short_runs, tmp_path):
    run_dir = short_runs("dense-bce")
    last = run_dir / "checkpoints" / "last.ckpt"
    result = run_train("epochs=3", f"ckpt_path={last}", *SHORT_RUN, run_dir=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    resumed = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == 300 and resumed["epoch"] == 2
    steps = [step for step, _ in scalars(tmp_path)["train/loss"]]
    assert min(steps) >= 200  # continued where it stopped, not from scratch


def test_a_run_resumes_with_one_step_per_execution_only_if_it_trained_so(short_runs, tmp_path):
    last = short_runs("dense-bce") / "checkpoints" / "last.ckpt"  # trained with the default, 8 steps per execution
    with pytest.raises(VaeLabError, match=rf"^{last}: trained with trainer.steps_per_execution=8; resume it with "
                                          r"trainer.steps_per_execution=8$"):
        train(make_config(tmp_path, f"ckpt_path={last}", "trainer.steps_per_execution=1", *SHORT_RUN))
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("epochs", [1, 2])
def test_resuming_a_run_that_has_trained_its_epochs_asks_for_more(epochs, short_runs, tmp_path):
    last = short_runs("dense-bce") / "checkpoints" / "last.ckpt"  # 2 epochs trained
    with pytest.raises(VaeLabError, match=rf"^{last}: its run has trained 2 epochs, and epochs={epochs} leaves none "
                                          r"to train; to go on, ask for more \(epochs=12, say\)$"):
        train(make_config(tmp_path, f"ckpt_path={last}", f"epochs={epochs}", *SHORT_RUN))
    assert not (tmp_path / "checkpoints").exists()


def test_same_seed_gives_identical_runs(tmp_path):
    overrides = ["epochs=1", "seed=7", *SHORT_RUN, "trainer.limit_train_batches=20", "trainer.limit_val_batches=5"]
    losses = [train(make_config(tmp_path / run, *overrides)) for run in ("a", "b")]
    weights = [torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
               for run in ("a", "b")]
    assert losses[0] == losses[1]
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name


class Executions(Callback):
    """The Lightning steps of each epoch, and where the progress bar stood at the epoch's end."""

    def __init__(self):
        self.steps, self.bar = [], []

    def on_train_epoch_start(self, trainer, pl_module):
        self.steps.append(0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps[-1] += 1

    def on_train_epoch_end(self, trainer, pl_module):
        self.bar.append(trainer.progress_bar_callback.train_progress_bar.n)


def test_eight_optimizer_steps_per_lightning_step_train_exactly_as_one(tmp_path):
    # Two epochs of 21 batches (the last execution of each takes 5), with everything that moves
    # from step to step: the shuffle, the reparameterisation noise, the dynamic binarization draw,
    # the KL warm-up, the cosine learning rate, and gradient clipping.
    overrides = ["epochs=2", *SHORT_RUN, "trainer.limit_train_batches=21", "trainer.limit_val_batches=5",
                 "trainer.log_every_n_steps=7", "data.binarize=dynamic", "kl_schedule=linear_warmup",
                 "lr_schedule=cosine", "+trainer.gradient_clip_val=0.5"]
    bar = [o for o in overrides if not o.startswith("callbacks.progress_bar")] + ["+callbacks.progress_bar.lines=false"]
    executions = {1: Executions(), 8: Executions()}
    for k, watch in executions.items():
        train(make_config(tmp_path / f"k{k}", *bar, f"trainer.steps_per_execution={k}"), callbacks=[watch])
    one, eight = (torch.load(tmp_path / f"k{k}" / "checkpoints" / "last.ckpt", weights_only=True) for k in (1, 8))
    assert one["global_step"] == eight["global_step"] == 42
    for name, weights in one["state_dict"].items():
        assert torch.equal(weights, eight["state_dict"][name]), name
    logged = scalars(tmp_path / "k1")
    assert logged == scalars(tmp_path / "k8")  # every value, at the same optimizer steps
    assert [step for step, _ in logged["train/lr"]] == [0, 7, 14, 21, 28, 35] and logged["val/loss"][-1][0] == 42
    assert executions[1].steps == [21, 21] and executions[8].steps == [3, 3]
    assert executions[8].bar == executions[1].bar == [21, 21]  # the bar counts batches


class NvmlProbe(Callback):
    """Stands in for torch.cuda._device_count_nvml and counts the calls made while training runs."""

    def __init__(self, nvml_count):
        self.nvml_count, self.training, self.asked = nvml_count, False, 0

    def __call__(self):
        self.asked += self.training
        return self.nvml_count()

    def on_train_start(self, trainer, pl_module):
        self.training = True

    def on_train_end(self, trainer, pl_module):
        self.training = False


def test_a_fit_on_the_cpu_does_not_ask_nvml_for_cuda_at_every_step(tmp_path, data_root, monkeypatch):
    # Lightning's import sets PYTORCH_NVML_BASED_CUDA_CHECK=1, and Adam asks whether CUDA is there at
    # every step; LitVAE.on_fit_start makes a fit on the CPU ask the CUDA runtime (docs/performance.md)
    if not torch.backends.cuda.is_built() or torch.cuda.is_initialized():
        pytest.skip("only a CUDA build of torch that has not started CUDA asks NVML")
    # torch's private NVML count is what the check calls; if torch renames it, setattr fails loudly
    probe = NvmlProbe(torch.cuda._device_count_nvml)
    monkeypatch.setattr(torch.cuda, "_device_count_nvml", probe)
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    weight = torch.zeros(3, requires_grad=True)
    weight.grad = torch.ones(3)
    probe.training = True
    torch.optim.Adam([weight]).step()  # an optimizer step outside vae_lab's fit
    assert probe.asked >= 1, "the probe does not see Adam ask NVML"
    probe.training, probe.asked = False, 0
    train(make_config(tmp_path, "epochs=2", *TINY_RUN), callbacks=[probe])
    assert probe.asked == 0
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"  # put back after the fit


@pytest.mark.parametrize("setting, message", [
    ("+trainer.accumulate_grad_batches=2", "trainer.accumulate_grad_batches=2 needs trainer.steps_per_execution=1 "
                                           "(it is 8): each of several steps per execution updates the weights"),
    ("+trainer.val_check_interval=50", "trainer.val_check_interval=50 needs trainer.steps_per_execution=1 (it is 8); "
                                       "vae_lab validates after every epoch"),
])
def test_what_several_steps_per_execution_cannot_keep_is_refused_in_one_line(setting, message, tmp_path, data_root):
    with pytest.raises(VaeLabError, match=rf"^{re.escape(message)}$"):
        train(make_config(tmp_path, setting, *SHORT_RUN))
    assert not (tmp_path / "config.yaml").exists()


def test_one_step_per_execution_keeps_lightnings_gradient_accumulation(tmp_path, data_root):
    train(make_config(tmp_path, "+trainer.accumulate_grad_batches=2", "trainer.steps_per_execution=1", "epochs=1",
                      *TINY_RUN))
    # 5 batches: an optimizer step after the 2nd, the 4th and the epoch's last
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3


def test_epoch_means_are_the_means_of_the_logged_steps(tmp_path):
    # train/*_epoch are summed in the module, not by Lightning: check them against the steps, over
    # two epochs (so the sums start again), with the progress bar drawn as by default.
    run_dir = tmp_path / "run"
    with_bar = [o for o in TINY_RUN if not o.startswith("callbacks.progress_bar")]
    result = run_train("epochs=2", *with_bar, "+callbacks.progress_bar.lines=false", "trainer.log_every_n_steps=1",
                       run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    logged = scalars(run_dir)
    for term in ("loss", "recon", "kl"):
        steps = [value for _, value in logged[f"train/{term}"]]
        epochs = [value for _, value in logged[f"train/{term}_epoch"]]
        assert len(steps) == 10 and len(epochs) == 2
        assert epochs == pytest.approx([sum(steps[:5]) / 5, sum(steps[5:]) / 5], rel=1e-5)
    assert "Epoch 1: 100%" in result.stdout  # the bar, asked for although stdout is no terminal (TQDM writes to stdout)


REFERENCE_PARAMETERS = {"dense": 476_216, "conv": 826_424, "cvae": 330_824}


def test_summary_records_what_the_run_trained_and_how_it_ended(finished_run):
    model, loss, run_dir = finished_run
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["error"] is None
    assert summary["settings"] == yaml.safe_load((run_dir / "hparams.yaml").read_text())
    assert (summary["settings"]["model"], summary["settings"]["loss"], summary["settings"]["epochs"]) == (model, loss, 2)
    logged = scalars(run_dir)
    for key, tag in (("val_loss", "val/loss"), ("val_kl", "val/kl"), ("train_loss", "train/loss_epoch")):
        assert summary["final"][key] == pytest.approx(logged[tag][-1][1])
    if summary["settings"]["z_dim"] == 20:
        assert summary["parameters"] == REFERENCE_PARAMETERS[model]
    assert (summary["global_step"], summary["epochs_trained"], summary["device"]) == (200, 2, "cpu")
    assert summary["seconds"] > 0 and summary["versions"]["torch"] == torch.__version__
    assert summary["checkpoints"]["last"] == "checkpoints/last.ckpt"
    assert summary["figures"]["error"] is None and "reconstructions.png" in summary["figures"]["written"]


def test_the_console_says_what_trains_where_and_at_the_end_what_it_wrote(tmp_path):
    run_dir = tmp_path / "run"
    with_bar = [o for o in TINY_RUN if not o.startswith("callbacks.progress_bar")]
    result = run_train("epochs=2", *with_bar, run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "\r" not in result.stdout and "it/s" not in result.stdout  # stdout is no terminal: no bar redrawn
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 + 2 + 3  # one line per epoch between the first and the last ones
    assert lines[0] == f"vae_lab: model=dense on data=mnist, 476,216 parameters, on cpu; run folder {run_dir}"
    assert re.fullmatch(r"epoch 2/2: train loss [\d.]+, val loss [\d.]+ \(recon [\d.]+, kl [\d.]+\), [\d.]+ s", lines[2]), lines
    summary = json.loads((run_dir / "summary.json").read_text())
    final = summary["final"]
    assert lines[-3] == (f"finished 2 epochs in {summary['seconds']:.0f} s: val loss {final['val_loss']:.2f} per sample "
                         f"(recon {final['val_recon']:.2f} + KL {final['val_kl']:.2f}), train loss {final['train_loss']:.2f}")
    assert lines[-2].startswith("wrote checkpoints/last.ckpt, checkpoints/best-epoch01.ckpt, ") and lines[-2].endswith(f" to {run_dir}")
    assert lines[-1] == f"see it: tensorboard --logdir {run_dir}"
    assert all(line.startswith(("vae_lab:", "epoch ", "finished", "wrote", "see it")) for line in lines), lines
    # none of Lightning's notices, tips or deprecations; its notices stay in the run's log
    for noise in ("GPU available", "Tip", "LeafSpec", "INFO", "litlogger", "┏"):
        assert noise not in result.stdout + result.stderr
    assert "GPU available" in (run_dir / "train.log").read_text()
