"""Beyond one process: DDP on the CPU (2 gloo processes, real data), and the GPU trainer config."""
import os
import subprocess
import sys

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from conftest import DATA_ROOT, REPO, SHORT_RUN, TINY_RUN, make_config, run_train, scalars
from vae_lab.runs import load_model
from vae_lab.data import load_mnist
from vae_lab.training import train

DDP_RUN = ["trainer=ddp", "epochs=1", *TINY_RUN]  # 5 steps of 128 digits in each of 2 processes


def test_ddp_run_through_train_py_writes_one_valid_run(tmp_path, data_root):
    run_dir = tmp_path / "run"
    result = run_train(*DDP_RUN, run_dir=run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    # Lightning starts process 1 as train.py again, into the same folder, with its own log
    assert "process 0 of 2 trains on 30000 of the 60000" in (run_dir / "train.log").read_text()
    assert "process 1 of 2 trains on 30000 of the 60000" in (run_dir / "train_ddp_process_1.log").read_text()
    model, config, path = load_model(run_dir)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["global_step"] == 5 and config["trainer"]["strategy"] == "ddp"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert len(list(run_dir.glob("events.out.tfevents.*"))) >= 1 and (run_dir / "samples.png").is_file()


def test_ddp_processes_train_on_disjoint_shards_of_real_digits(tmp_path, data_root):
    env = {**os.environ, "VAE_LAB_DATA": str(DATA_ROOT), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "tests/ddp_probe.py", str(tmp_path), *DDP_RUN],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = [torch.load(tmp_path / f"seen-rank{rank}.pt", weights_only=True).flatten(1) for rank in (0, 1)]
    assert [len(images) for images in seen] == [5 * 128, 5 * 128]
    training_digits = {row.numpy().tobytes() for row in load_mnist(data_root, train=True, download=False).tensors[0].flatten(1)}
    rows = [{row.numpy().tobytes() for row in images} for images in seen]
    assert rows[0] <= training_digits and rows[1] <= training_digits
    assert not rows[0] & rows[1]  # no digit trained on by both processes
    # the gradients were averaged over the processes at every optimizer step, so both made the same updates
    weights = [torch.load(tmp_path / f"weights-rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_gpu_config_on_a_machine_without_one_is_one_clear_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = run_train("trainer=gpu", run_dir=tmp_path / "run")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: trainer.accelerator=gpu, but torch finds no GPU")
    assert not (tmp_path / "run").exists()  # the refused run leaves no folder behind


def test_bf16_mixed_precision_of_the_gpu_config_trains(tmp_path, data_root):
    # The GPU config's precision, run on the CPU (autocast supports bf16 there too): the losses stay
    # finite and fall as in float32.
    run_dir = tmp_path / "run"
    result = run_train("trainer=gpu", "epochs=1", *SHORT_RUN, run_dir=run_dir)  # SHORT_RUN: accelerator=cpu
    assert result.returncode == 0, result.stderr[-3000:]
    val_loss = [value for _, value in scalars(run_dir)["val/loss"]]
    assert len(val_loss) == 2 and val_loss[-1] < 0.7 * val_loss[0], val_loss


class SyncWatch(Callback):
    """Turns torch.cuda's sync debug mode to "error" for the Lightning steps whose optimizer steps
    (trainer.steps_per_execution of them) include no logging step, so that any host copy or
    .item() there raises."""

    def __init__(self, steps_per_execution: int):
        self.steps_per_execution = steps_per_execution

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        steps = range(trainer.global_step, trainer.global_step + self.steps_per_execution)
        quiet = all(step % trainer.log_every_n_steps != 0 for step in steps)
        torch.cuda.set_sync_debug_mode("error" if quiet else "default")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("steps_per_execution", [1, 8])
@pytest.mark.parametrize("model", ["dense", "conv"])
def test_a_gpu_step_never_waits_for_the_host(model, steps_per_execution, tmp_path, data_root):
    watch = SyncWatch(steps_per_execution)
    try:
        short = [o for o in SHORT_RUN if not o.startswith(("trainer.accelerator", "trainer.log_every_n_steps"))]
        train(make_config(tmp_path, f"model={model}", "trainer=gpu", "epochs=1", "data.binarize=dynamic", *short,
                          "trainer.limit_train_batches=60", "trainer.log_every_n_steps=25",
                          f"trainer.steps_per_execution={steps_per_execution}"), callbacks=[watch])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert load_model(tmp_path)[0] is not None
