"""Crashes, bad checkpoints and runaway losses on short real trainings; see docs/reliability.md."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import DATA_ROOT, REPO, SHORT_RUN, TINY_RUN, make_config, run_sweep, run_train, scalars
from vae_lab.checkpoint import AtomicCheckpointIO, load_checkpoint
from vae_lab.errors import VaeLabError
from vae_lab.module import LitVAE
from vae_lab.train import train


@pytest.fixture(scope="module")
def dense_checkpoint(tmp_path_factory, data_root):
    """last.ckpt of a one-epoch dense run (z_dim=20)."""
    run_dir = tmp_path_factory.mktemp("dense")
    train(make_config(run_dir, "epochs=1", *TINY_RUN))
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("binarize", ["none", "dynamic"])  # dynamic: a fresh draw every step
def test_killed_run_resumes_to_the_same_weights_and_metrics_as_an_uninterrupted_one(binarize, tmp_path, data_root):
    epochs, steps = 5, 20
    overrides = [f"epochs={epochs}", f"data.binarize={binarize}", *SHORT_RUN, f"trainer.limit_train_batches={steps}", "trainer.limit_val_batches=2"]
    whole = run_train(*overrides, run_dir=tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed_dir = tmp_path / "killed"
    last = killed_dir / "checkpoints" / "last.ckpt"
    process = subprocess.Popen(
        [sys.executable, "train.py", *overrides, f"hydra.run.dir={killed_dir}"], cwd=REPO,
        env={**os.environ, "VAE_LAB_DATA": str(DATA_ROOT)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    # kill it as soon as the second epoch's checkpoint is there; saves are atomic, so reading is safe
    while not (last.exists() and torch.load(last, weights_only=True)["global_step"] >= 2 * steps):
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert load_checkpoint(last)["global_step"] < epochs * steps  # it really was cut short

    resumed = run_train(*overrides, f"ckpt_path={last}", run_dir=tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, found = (torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)
                       for run in ("whole", "resumed"))
    assert found["global_step"] == expected["global_step"] == epochs * steps
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(found["state_dict"][name], tensor), name
    for name, tensor in expected["optimizer_states"][0]["state"][0].items():
        assert torch.equal(found["optimizer_states"][0]["state"][0][name], tensor), name
    whole_scalars, resumed_scalars = scalars(tmp_path / "whole"), scalars(tmp_path / "resumed")
    for tag in ("val/loss", "train/loss_epoch"):
        assert resumed_scalars[tag][-1] == whole_scalars[tag][-1], tag  # same (step, value)


def test_a_save_killed_midway_leaves_the_previous_checkpoint_readable(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 1}, path)

    def dies_midway(checkpoint, file):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # stands in for SIGKILL during the write

    monkeypatch.setattr(torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        AtomicCheckpointIO().save_checkpoint({"global_step": 2}, path)
    assert torch.load(path, weights_only=True) == {"global_step": 1}


def test_a_new_run_never_writes_into_another_runs_folder(tmp_path):
    run_dir = tmp_path / "earlier"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("beta: 4.0\n")
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"the earlier run's weights")
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}

    result = run_train("epochs=1", run_dir=run_dir)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"error: output_dir={run_dir} already holds a run (config.yaml, checkpoints)")
    assert {path: path.read_bytes() for path in before} == before
    assert {path.name for path in run_dir.iterdir()} == {"config.yaml", "checkpoints", ".hydra", "train.log"}


def test_non_finite_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, data_root):
    losses = LitVAE._losses

    def nan_from_step_7(self, batch):
        terms = losses(self, batch)
        if self.training and self.global_step >= 7:
            terms["loss"] = terms["loss"] * float("nan")
        return terms

    monkeypatch.setattr(LitVAE, "_losses", nan_from_step_7)
    last = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(VaeLabError, match=rf"training loss became nan at step 7 \(epoch 1\); stopped, "
                                          rf"last good checkpoint: {last}; try a lower lr"):
        train(make_config(tmp_path, "epochs=3", *TINY_RUN))
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["global_step"] == 5  # the end of epoch 0, not written again after the NaN
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())
    assert sorted(path.name for path in last.parent.iterdir()) == ["best-epoch00.ckpt", "last.ckpt"]


def test_non_finite_weights_are_never_saved(tmp_path, monkeypatch, data_root):
    def poison_after_last_batch(self, outputs, batch, batch_idx):
        if self.global_step == 5:  # after the last step of epoch 0, before its checkpoint
            next(self.parameters()).data.fill_(float("inf"))

    monkeypatch.setattr(LitVAE, "on_train_batch_end", poison_after_last_batch, raising=False)
    with pytest.raises(VaeLabError, match=r"weights became non-finite by step 5 \(epoch 0\); stopped without "
                                          r"saving, no checkpoint was saved yet"):
        train(make_config(tmp_path, "epochs=2", *TINY_RUN))
    assert not list(tmp_path.glob("checkpoints/*.ckpt"))


def test_absurd_lr_fails_its_run_and_the_rest_of_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_sweep("lr=1e6,1e-3", "epochs=1", *TINY_RUN, sweep_dir=sweep)
    assert result.returncode != 0
    assert "error: training loss became nan at step 1 (epoch 0); stopped, no checkpoint was saved yet" in result.stderr
    assert not (sweep / "0" / "checkpoints").exists()  # job 0 (lr=1e6) failed first ...
    assert torch.load(sweep / "1" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 5  # ... job 1 ran


def crafted_checkpoint(path, marker):
    """A checkpoint whose unpickling writes the file marker: what a malicious download could do."""

    class WritesAFile:
        def __reduce__(self):
            return exec, (f"open({str(marker)!r}, 'w').write('ran code')",)

    torch.save({"state_dict": {}, "optimizer_states": [], "loops": {}, "epoch": WritesAFile(), "global_step": 0}, path)


def test_a_checkpoint_crafted_to_run_code_is_refused(tmp_path):
    evil, marker = tmp_path / "evil.ckpt", tmp_path / "marker"
    crafted_checkpoint(evil, marker)
    torch.load(evil, weights_only=False)  # the exploit is real: a plain unpickling runs it
    assert marker.exists()
    marker.unlink()

    result = run_train(f"ckpt_path={evil}", *TINY_RUN, run_dir=tmp_path / "run")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {evil}: refused, loading it would call exec; a checkpoint holds only tensors "
        "and plain values (loaded with weights_only=True)")
    # Lightning's own loading goes through the same check, whatever it asks for
    with pytest.raises(VaeLabError, match="refused"):
        AtomicCheckpointIO().load_checkpoint(evil, weights_only=False)
    assert not marker.exists()


BAD_CHECKPOINTS = {
    "truncated": ("half", "not a readable checkpoint (truncated or corrupt)"),
    "empty": ("empty", "not a readable checkpoint (truncated or corrupt)"),
    "corrupt": ("flipped", "not a readable checkpoint (truncated or corrupt)"),
    "a tensor, not a checkpoint": ("tensor", "not a vae_lab training checkpoint (no state_dict, optimizer_states"),
    "another model": ("model=conv", "holds weights of vae_lab.models.dense.DenseVAE (z_dim=20), which do not fit "
                                    "the configured model vae_lab.models.conv.ConvVAE (z_dim=20)"),
    "another z_dim": ("z_dim=2", "holds weights of vae_lab.models.dense.DenseVAE (z_dim=20), which do not fit "
                                 "the configured model vae_lab.models.dense.DenseVAE (z_dim=2)"),
}


@pytest.mark.parametrize("case", BAD_CHECKPOINTS)
def test_bad_checkpoint_gives_one_line_naming_the_file(case, dense_checkpoint, tmp_path):
    how, message = BAD_CHECKPOINTS[case]
    data, path, overrides = dense_checkpoint.read_bytes(), tmp_path / "bad.ckpt", []
    if how == "half":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "flipped":  # the zip's central directory at the end of the file, overwritten
        path.write_bytes(data[:-200] + bytes(200))
    elif how == "tensor":
        torch.save(torch.zeros(3), path)
    else:
        path, overrides = dense_checkpoint, [how]
    with pytest.raises(VaeLabError) as error:
        train(make_config(tmp_path / "run", f"ckpt_path={path}", *overrides, *TINY_RUN))
    assert str(error.value).startswith(f"{path}: {message}")
    assert "\n" not in str(error.value) and not (tmp_path / "run").exists()
