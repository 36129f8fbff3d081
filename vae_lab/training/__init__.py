"""Training: ``train(cfg)`` trains (or resumes) one run from a composed config. The LightningModule
(``module.py``) trains a model with a loss (``losses.py``), KL and learning-rate schedules
(``schedules.py``) and an optimizer (``optimizers.py``), each chosen by name from a registry; the
Trainer and the logger are built from plain keys (``trainer.py``) with the run's callbacks
(``callbacks/``). ``python train.py`` (vae_lab/train.py) wraps ``train`` with Hydra."""
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from vae_lab.cli import start_process
from vae_lab.config import upgraded
from vae_lab.data import ImageDataModule
from vae_lab.models import build_model
from vae_lab.registry import KL_SCHEDULES, LR_SCHEDULES, OPTIMIZERS, SAMPLERS, load_plugins
from vae_lab.training.callbacks import build_callbacks
from vae_lab.training.losses import build_loss
from vae_lab.training.module import LitVAE, MultiStepVAE
from vae_lab.training.resume import check_fits, read_resumable
from vae_lab.training.trainer import build_trainer, stepping


def train(cfg: DictConfig, callbacks: Sequence[Callback] = ()) -> float:
    """Train (or resume) the run described by ``cfg`` (as composed, its top-level keys checked by
    ``vae_lab.config.check_config``: the command line and ``vae_lab.train_run`` do it first); returns
    the final val/loss per sample. ``callbacks`` follow the run's own (scripts watch a run with them).

    Each component checks its own settings as it is built, and everything is built before the run
    folder gets a file, so a refused run leaves nothing behind but what Hydra wrote.
    """
    start_process()
    plugins = load_plugins(cfg.plugins)
    config = upgraded(OmegaConf.to_container(cfg, resolve=True))
    steps = stepping(config["trainer"])
    checkpoint = (read_resumable(cfg.ckpt_path, steps.get("steps_per_execution", 1), config["trainer"].get("max_epochs"))
                  if cfg.ckpt_path else None)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # The same thread count, set: until torch.set_num_threads is called, MKL may change how many
    # threads a product uses from call to call (MKL_DYNAMIC), and Intel makes a fixed count a
    # condition of bit-identical results from run to run (a resumed run must match a whole one).
    torch.set_num_threads(torch.get_num_threads())
    datamodule = ImageDataModule(**config["data"])
    datamodule.setup("fit")  # fail on missing or bad data now, before any training starts
    config["data"].update(datamodule.source)  # what was read (and its shape), so that the tools read it again
    model = build_model(config)  # the registries, as when a checkpoint is read
    kl_schedule = KL_SCHEDULES.build(config["kl_schedule"], plugins)
    module = (MultiStepVAE if steps else LitVAE)(
        model=model,
        loss=build_loss(config["loss"], model, kl_schedule, len(datamodule.train_set), plugins),
        optimizer=OPTIMIZERS.build(config["optimizer"], plugins, params=model.parameters()),
        kl_schedule=kl_schedule, lr_schedule=LR_SCHEDULES.build(config["lr_schedule"], plugins),
        sampler=SAMPLERS.build(config["sampler"], plugins), seed=cfg.seed, config=config, **steps)
    if checkpoint is not None:
        check_fits(checkpoint, module, cfg.ckpt_path)
    output_dir = Path(cfg.output_dir)
    run_callbacks = [*build_callbacks(config["callbacks"], datamodule.source, plugins), *callbacks]
    trainer = build_trainer(config["trainer"], config.get("logger"), run_callbacks, output_dir)

    output_dir.mkdir(parents=True, exist_ok=True)
    if trainer.is_global_zero:  # with DDP, every process runs this; one writes
        OmegaConf.save(OmegaConf.create(config), output_dir / "config.yaml")  # the run's record, as its checkpoints hold it
    if checkpoint is None:
        trainer.validate(module, datamodule=datamodule, verbose=False)  # val/* at step 0: every curve starts untrained
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    return trainer.callback_metrics["val/loss"].item()
