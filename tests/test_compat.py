"""Runs written by earlier versions of vae_lab still open: tests/fixtures/run_0945847 is a real run
(dense, hidden=[8], z_dim=2, prior=mog, linear warm-up, cosine LR; 2 epochs of 16 batches)
trained by the code of commit 0945847, before the configs stopped naming code (``_target_``).
Its checkpoint stores the old config, ``_target_`` strings and all; generate, evaluate, load_run
and resume read it as they read a new one."""
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import vae_lab
from conftest import TINY_RUN, make_config
from vae_lab.config import upgraded
from vae_lab.errors import VaeLabError
from vae_lab.registry import KL_SCHEDULES, LOSSES

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "run_0945847"
# what the fixture was trained with (its config.yaml), for a resumed run's composed config
TRAINED_WITH = ["model=dense", "model.hidden=[8]", "z_dim=2", "prior=mog", "prior.components=3",
                "kl_schedule=linear_warmup", "lr_schedule=cosine"]


def copied_run(tmp_path) -> Path:
    """A copy of the fixture: the tools write their results into the run folder."""
    return Path(shutil.copytree(FIXTURE, tmp_path / "run"))


def test_an_old_run_opens_with_load_run(tmp_path, data_root):
    run = vae_lab.load_run(copied_run(tmp_path))
    assert (run.model.z_dim, run.config["prior"]["name"]) == (2, "mog")
    assert run.summary["status"] == "finished"
    assert run.samples(n=16).size == (2 + 4 * 30, 2 + 4 * 30)  # a 4x4 grid of 28-pixel images, 2-pixel padding
    images = torch.rand(3, 1, 28, 28)
    logits = run.model.decode(run.model.encode(images)[0])
    assert logits.shape == (3, 1, 28, 28)


def test_an_old_run_opens_with_generate_and_evaluate(tmp_path, data_root):
    from vae_lab.evaluate import main as evaluate_main
    from vae_lab.generate import main as generate_main

    run = copied_run(tmp_path)
    generate_main([f"run={run}", "n=16"])
    assert {"samples.png", "samples.npy", "manifold.png", "interpolation.png"} <= {p.name for p in (run / "generated").iterdir()}
    evaluate_main([f"run={run}", "k=4", "n_images=100", "n_samples=0", "disentanglement=false"])
    metrics = vae_lab.load_run(run).metrics
    assert metrics["iwae_k"] == 4 and 0 < metrics["test_nll_bce"] < 800


def test_an_old_run_resumes(tmp_path, data_root):
    from vae_lab.training import train

    run = copied_run(tmp_path)
    cfg = make_config(tmp_path / "resumed", *TRAINED_WITH, *TINY_RUN, "trainer.limit_train_batches=16",
                      "epochs=3", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}")
    train(cfg)
    resumed = vae_lab.load_run(tmp_path / "resumed")
    assert resumed.summary["status"] == "finished" and resumed.summary["epochs_trained"] == 3
    assert resumed.summary["resumed_from"].endswith("last.ckpt")
    before = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    after = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert before.keys() == after.keys()
    assert not torch.equal(before["model.mu.weight"], after["model.mu.weight"])  # it trained on


def test_the_old_configs_targets_are_read_as_the_registered_names_they_meant():
    """``vae_lab.config.upgraded``: a stored config (or a user's old yaml) that named vae_lab's own
    classes by ``_target_`` chooses the same components by name; any other ``_target_`` stays, for
    the registry to refuse."""
    old = yaml.safe_load((FIXTURE / "config.yaml").read_text())
    assert "_target_" in json.dumps(old)
    config = upgraded(old)
    assert "_target_" not in json.dumps(config) and "_partial_" not in json.dumps(config)
    names = {group: config[group]["name"] for group in ("loss", "kl_schedule", "lr_schedule", "optimizer")}
    assert names == {"loss": "elbo", "kl_schedule": "linear_warmup", "lr_schedule": "cosine", "optimizer": "adam"}
    assert config["callbacks"]["checkpoints"] == {} and config["callbacks"]["summary"] == {"console": True}
    assert config["logger"] == {"default_hp_metric": False}
    assert config["data"]["name"] == "mnist" and config["trainer"]["max_epochs"] == 2
    assert KL_SCHEDULES.build(config["kl_schedule"]).warmup_epochs == 10
    assert upgraded({"loss": {"_target_": "os.system", "command": "true"}})["loss"]["_target_"] == "os.system"
    with pytest.raises(VaeLabError, match=r"^loss._target_=os.system names code"):
        LOSSES.build({"_target_": "os.system"})


def test_no_config_names_code_and_a_new_checkpoint_stores_none(short_runs):
    """One way in: every group chooses by registered name; no file of vae_lab/conf/ (the Hydra
    plugins' own configs aside) and no new checkpoint holds a ``_target_``."""
    from vae_lab.config import CONF

    for path in CONF.rglob("*.yaml"):
        assert "_target_" not in path.read_text(), path
    stored = torch.load(short_runs("dense-bce") / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert "_target_" not in json.dumps(stored) and "_partial_" not in json.dumps(stored)
    assert (stored["loss"]["name"], stored["optimizer"]["name"], stored["kl_schedule"]["name"]) == ("elbo", "adam", "constant")
