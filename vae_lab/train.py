"""Train one run from a composed config: ``train(cfg)``; ``python train.py`` wraps it with Hydra."""
import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from vae_lab.checkpoint import AtomicCheckpointIO, check_fits, load_checkpoint
from vae_lab.config import check_config
from vae_lab.errors import VaeLabError
from vae_lab.guards import FiniteGuard
from vae_lab.module import LitVAE

log = logging.getLogger(__name__)


def build(cfg: DictConfig, key: str, **kwargs):
    """``instantiate(cfg[key])``; an argument its target rejects becomes one VaeLabError line."""
    try:
        return instantiate(cfg[key], **kwargs)
    except InstantiationException as error:
        reason = " ".join(str(error.__cause__ or error).split())
        raise VaeLabError(f"{key}: {reason}") from None


def train(cfg: DictConfig, callbacks: Sequence[Callback] = ()) -> float:
    """Train (or resume) the run described by ``cfg``; returns the final val/loss per sample.

    ``callbacks`` run after the run's own ones (scripts use them to watch a run: benchmarks, tests).

    Everything that can be checked (config, checkpoint, data, trainer arguments) is checked before
    the run folder gets a file, so a refused run leaves nothing behind but what Hydra wrote.
    """
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    module = LitVAE(
        model=build(cfg, "model"),
        loss=build(cfg, "loss"),
        optimizer=build(cfg, "optimizer"),
        seed=cfg.seed,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    if cfg.ckpt_path is not None:
        check_fits(load_checkpoint(cfg.ckpt_path), module, cfg.ckpt_path)
    if cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise VaeLabError(f"trainer.accelerator={cfg.trainer.accelerator}, but torch finds no GPU here; "
                          "leave out trainer=gpu (the default trainer takes a GPU when there is one)")
    datamodule = build(cfg, "data")
    datamodule.setup("fit")  # fail on missing or bad data now, before any training starts
    output_dir = Path(cfg.output_dir)
    checkpoints = ModelCheckpoint(
        dirpath=output_dir / "checkpoints", filename="best-epoch{epoch:02d}", monitor="val/loss",
        save_last=True, auto_insert_metric_name=False,
    )
    logger = TensorBoardLogger(output_dir, name="", version="", default_hp_metric=False)
    # Evaluate before figures: FigureLogger puts metrics.json into the HPARAMS table. What is off
    # gets no callback: Lightning calls every callback at every step, ~1% of a dense CPU step each.
    run_callbacks = [checkpoints, FiniteGuard()]
    if (evaluate := build(cfg, "evaluate")).k:
        run_callbacks.append(evaluate)
    run_callbacks.append(build(cfg, "figures"))
    if cfg.trainer.enable_progress_bar:
        run_callbacks.append(build(cfg, "progress_bar"))
    trainer = build(cfg, "trainer", logger=logger, callbacks=[*run_callbacks, *callbacks],
                    plugins=[AtomicCheckpointIO()], default_root_dir=output_dir)

    output_dir.mkdir(parents=True, exist_ok=True)
    if trainer.is_global_zero:  # with DDP, every process runs this; one writes
        OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    if cfg.ckpt_path is None:
        # val/* at step 0: every loss curve starts from the untrained model
        trainer.validate(module, datamodule=datamodule, verbose=False)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    return trainer.callback_metrics["val/loss"].item()
