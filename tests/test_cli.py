"""Bad command lines end with one clear line and a non-zero exit, before any training."""
import re
import sys

import pytest
import yaml

from conftest import REPO, run_train
from vae_lab.config import ALIASES, CONF
from vae_lab.train import main

# Each bad command line, and how the last line it prints must begin (the run starts in the repo root).
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
    # the checkpoint is checked first: a bad one is refused before the data are looked for
    "ckpt_path=train.py data.root=/no/such/folder data.download=false": "error: train.py: not a readable checkpoint",
    "data.root=/no/such/folder data.download=false": "error: MNIST not found in /no/such/folder/MNIST/raw",
    "data.root=train.py": f"error: data root {REPO / 'train.py'} is a file, not a folder",
    "data.binarize=sometimes": "error: data.binarize=sometimes must be one of none, dynamic, static",
    "callbacks=evaluate callbacks.evaluate.k=0": "error: callbacks.evaluate.k=0 must be an integer >= 1",
    "trainer.limit_val_batches=0": "error: trainer.limit_val_batches=0: every epoch is validated",
    "trainer.steps_per_execution=0": "error: trainer.steps_per_execution=0 must be an integer >= 1",
    # a setting that follows a top-level key is never set apart from it (the run would misreport itself)
    "model.z_dim=5": "error: model.z_dim=5: model.z_dim follows z_dim; set z_dim=5 instead",
    "kl_schedule.beta=4": "error: kl_schedule.beta=4: kl_schedule.beta follows beta; set beta=4 instead",
    "trainer.max_epochs=3": "error: trainer.max_epochs=3: trainer.max_epochs follows epochs; set epochs=3 instead",
    "trainer.max_epochs=abc": "error: trainer.max_epochs=abc: trainer.max_epochs follows epochs; set epochs=abc instead",
    "optimizer.lr=0.01": "error: optimizer.lr=0.01: optimizer.lr follows lr; set lr=0.01 instead",
    "data.batch_size=64": "error: data.batch_size=64: data.batch_size follows batch_size; set batch_size=64 instead",
    "data.seed=3": "error: data.seed=3: data.seed follows seed; set seed=3 instead",
    "+logger.save_dir=/tmp/elsewhere": "error: logger.save_dir=/tmp/elsewhere: save_dir comes from the run",
    "+trainer.callbacks=[]": "error: trainer.callbacks=[]: callbacks comes from the run",
    # values of the wrong type for what they are passed to
    "trainer.log_every_n_steps=abc": "error: trainer.log_every_n_steps=abc must be an integer or null",
    "trainer.num_sanity_val_steps=abc": "error: trainer.num_sanity_val_steps=abc must be an integer or null",
    "trainer.limit_train_batches=abc": "error: trainer.limit_train_batches=abc must be an integer or a number or null",
    "callbacks.figures.every_n_epochs=abc": "error: callbacks.figures.every_n_epochs=abc must be an integer",
    "callbacks.figures.n_samples=0": "error: callbacks.figures.n_samples=0 must be an integer >= 1",
    "+callbacks.nosuch={}": "error: callbacks.nosuch.name=nosuch is not a registered callback (registered: checkpoints,",
    "+trainer.nosuch=3": "error: trainer.nosuch: lightning.Trainer has no such setting; if a preset set it",
    "optimizer=sgd +optimizer.betas=[0.9,0.99]": "error: optimizer.betas: optimizer sgd has no such setting",
    "optimizer.fused=maybe": "error: optimizer.fused=maybe must be true or false or null",
    "data.download=maybe": "error: data.download=maybe must be true or false",
    "trainer.accelerator=banana": "error: trainer: You selected an invalid accelerator name: `accelerator='banana'`",
    "trainer.devices=0": "error: trainer: `Trainer(devices=0)` value is not a valid input",
    "+model.width=3": "error: model.width: model dense has no such setting (its settings: z_dim, hidden)",
    "model.hidden=[256,0]": "error: model.hidden=[256, 0] must be a list of integers >= 1",
    "+kl_schedule.warmup_epochs=3": "error: kl_schedule.warmup_epochs: KL schedule constant has no such setting (its settings: "
        "beta); if a preset set it for another choice of kl_schedule, drop it with ~kl_schedule.warmup_epochs",
    # components that do not go together
    "model=cvae prior=vamp": "error: prior vamp: the conditional model's encoder needs labels, which its pseudo-inputs do not have",
    "loss.estimator=dreg": "error: loss elbo: estimator=dreg reweights the k samples of the importance-weighted bound: it needs iwae_k > 1",
    "loss.estimator=dreg loss.iwae_k=5 kl_schedule=linear_warmup": "error: loss.estimator=dreg is the gradient of the plain "
        "importance-weighted bound: it needs kl_schedule=constant and beta=1 (this run: LinearWarmup, beta=1.0)",
}


@pytest.mark.parametrize("overrides", BAD_OVERRIDES)
def test_invalid_value_gives_one_line(overrides, tmp_path, monkeypatch, capsys):
    """train.py's main in this process, as the command line calls it (a process each would cost
    seconds of imports per case; the one-line exit through a real process is the test below)."""
    run_dir = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["train.py", *overrides.split(), f"hydra.run.dir={run_dir}"])
    with pytest.raises(SystemExit) as refusal:
        main()
    printed = capsys.readouterr()
    assert str(refusal.value.code).startswith(BAD_OVERRIDES[overrides])
    assert "\n" not in str(refusal.value.code)
    # refused before anything trained or was written: no epoch, no checkpoint, no events file (how
    # long a refusal takes is benchmarks/startup.py's to measure, not a test's on a shared machine)
    assert "Epoch" not in printed.out + printed.err and "vae_lab: model=" not in printed.out
    assert not run_dir.exists()  # Hydra made it, and it is removed again, not left half-made


@pytest.mark.parametrize("overrides", ["beta=-1", "ckpt_path=train.py data.root=/no/such/folder data.download=false",
                                       "data.root=/no/such/folder data.download=false"])
def test_a_refusal_is_the_last_line_a_process_prints(overrides, tmp_path):
    run_dir = tmp_path / "run"
    result = run_train(*overrides.split(), run_dir=run_dir)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(BAD_OVERRIDES[overrides]), result.stderr[-2000:]
    assert not run_dir.exists()


def test_a_refused_run_removes_no_folder_it_did_not_make(tmp_path, monkeypatch):
    """A folder holding only Hydra's files from an earlier run is not this run's to delete."""
    run_dir = tmp_path / "earlier"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "train.log").write_text("an earlier run\n")
    monkeypatch.setattr(sys, "argv", ["train.py", "beta=-1", f"hydra.run.dir={run_dir}"])
    with pytest.raises(SystemExit):
        main()
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


def test_every_setting_that_follows_a_top_level_key_is_guarded():
    """Each `${key}` of a top-level key in a group's files is in ALIASES, so it cannot be set apart."""
    primary = yaml.safe_load((CONF / "config.yaml").read_text())
    top_level = set(primary) - {"defaults", "hydra"}
    found = set()

    def walk(node, path):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{path}.{key}")
            elif isinstance(value, str) and (match := re.fullmatch(r"\$\{(\w+)\}", value)) and match[1] in top_level:
                found.add((f"{path}.{key}", match[1]))

    walk({key: value for key, value in primary.items() if key in top_level and isinstance(value, dict)}, "")
    found = {(path.removeprefix("."), top) for path, top in found}
    for file in CONF.glob("*/*.yaml"):
        if file.parent.name not in ("experiment", "hydra"):
            walk(yaml.safe_load(file.read_text()) or {}, file.parent.name)
    assert found == set(ALIASES.items())
