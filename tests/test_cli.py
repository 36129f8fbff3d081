"""Bad command lines end with one clear line and a non-zero exit, before any training."""
import time

import pytest

from conftest import run_train

# Each bad command line, and how the last line it prints must begin. Paths are relative to the repo.
BAD_OVERRIDES = {
    "beta=-1": "error: beta=-1 must be a number >= 0",
    "beta=abc": "error: beta=abc must be a number >= 0",
    "z_dim=0": "error: z_dim=0 must be an integer >= 1",
    "z_dim=2.5": "error: z_dim=2.5 must be an integer >= 1",
    "epochs=true": "error: epochs=True must be an integer >= 1",
    "epochs=0": "error: epochs=0 must be an integer >= 1",
    "batch_size=0": "error: batch_size=0 must be an integer >= 1",
    "batch_size=abc": "error: batch_size=abc must be an integer >= 1",
    "lr=-1": "error: lr=-1 must be a number > 0",
    "lr=0": "error: lr=0 must be a number > 0",
    "seed=-1": "error: seed=-1 must be an integer >= 0",
    "ckpt_path=/no/such.ckpt": "error: ckpt_path=/no/such.ckpt: no such checkpoint file",
    "ckpt_path=conf": "error: ckpt_path=conf: no such checkpoint file",
    "ckpt_path=train.py": "error: train.py: not a readable checkpoint (truncated or corrupt)",
    "data.root=/no/such/folder data.download=false": "error: MNIST not found in /no/such/folder/MNIST/raw",
    "data.root=train.py": "error: data root train.py is a file, not a folder",
    "data.binarize=sometimes": "error: data.binarize=sometimes must be one of none, dynamic, static",
    "evaluate.k=-1": "error: evaluate: k=-1, n_images=10000, n_samples=0: k and n_samples must be >= 0",
    "trainer.accelerator=banana": "error: trainer: You selected an invalid accelerator name: `accelerator='banana'`",
    "trainer.devices=0": "error: trainer: `Trainer(devices=0)` value is not a valid input",
    "+model.width=3": "error: model: DenseVAE.__init__() got an unexpected keyword argument 'width'",
}


@pytest.mark.parametrize("overrides", BAD_OVERRIDES)
def test_invalid_value_gives_one_line(overrides, tmp_path):
    run_dir = tmp_path / "run"
    started = time.monotonic()
    result = run_train(*overrides.split(), run_dir=run_dir)
    assert time.monotonic() - started < 20  # refused before any training (config errors: < 1 s)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(BAD_OVERRIDES[overrides]), result.stderr[-2000:]
    assert not run_dir.exists()  # Hydra made it, and it is removed again, not left half-made


def test_a_refused_run_removes_no_folder_it_did_not_make(tmp_path):
    """A folder holding only Hydra's files from an earlier run is not this run's to delete."""
    run_dir = tmp_path / "earlier"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "train.log").write_text("an earlier run\n")
    result = run_train("beta=-1", run_dir=run_dir)
    assert result.returncode != 0
    assert (run_dir / "train.log").read_text().startswith("an earlier run\n")


def test_unknown_model_keeps_hydras_message_listing_the_choices(tmp_path):
    result = run_train("model=transformer", run_dir=tmp_path / "run")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "Could not find 'model/transformer'" in result.stderr
    assert all(name in result.stderr for name in ("dense", "conv", "cvae"))
    assert not (tmp_path / "run").exists()


def test_unknown_key_is_refused(tmp_path):
    result = run_train("betta=8", run_dir=tmp_path / "run")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "Could not override 'betta'" in result.stderr
    assert not (tmp_path / "run").exists()


def test_unknown_loss_is_refused(tmp_path):
    result = run_train("loss=l1", run_dir=tmp_path / "run")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "Could not find 'loss/l1'" in result.stderr
    assert not (tmp_path / "run").exists()
