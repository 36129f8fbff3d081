"""Train one run from a composed config: ``train(cfg)``; ``python train.py`` wraps it with Hydra."""
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from lightning.pytorch.callbacks import Callback, Checkpoint, ProgressBar
from omegaconf import DictConfig, OmegaConf

from vae_lab.arguments import check_arguments
from vae_lab.checkpoint import AtomicCheckpointIO, check_fits, load_checkpoint, stored_config
from vae_lab.config import check_config
from vae_lab.errors import VaeLabError
from vae_lab.models import build_model
from vae_lab.module import LitVAE


def build(node: DictConfig, name: str, **kwargs):
    """``instantiate(node)``; a value that does not fit its target's signature, or that the target
    rejects, becomes one VaeLabError line naming ``name``."""
    arguments = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if not k.startswith("_")}
    if problem := check_arguments(get_object(node._target_), arguments, name):
        raise VaeLabError(problem)
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        reason = " ".join(str(error.__cause__ or error).split())
        raise VaeLabError(f"{name}: {reason}") from None


def train(cfg: DictConfig, callbacks: Sequence[Callback] = ()) -> float:
    """Train (or resume) the run described by ``cfg``; returns the final val/loss per sample.

    The run's callbacks are ``cfg.callbacks`` (one entry each; ``null`` switches one off), followed
    by ``callbacks`` (scripts use them to watch a run: benchmarks, tests).

    Everything that can be checked (config, checkpoint, data, trainer arguments) is checked before
    the run folder gets a file, so a refused run leaves nothing behind but what Hydra wrote.
    """
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    config = OmegaConf.to_container(cfg, resolve=True)
    module = LitVAE(
        model=build_model(config["model"]),  # the registry, as when a checkpoint is read
        loss=build(cfg.loss, "loss"),
        optimizer=build(cfg.optimizer, "optimizer"),
        kl_schedule=build(cfg.kl_schedule, "kl_schedule"),
        lr_schedule=build(cfg.lr_schedule, "lr_schedule"),
        seed=cfg.seed,
        config=config,
    )
    if cfg.ckpt_path is not None:
        checkpoint = load_checkpoint(cfg.ckpt_path)
        stored_config(checkpoint, cfg.ckpt_path)  # a checkpoint with a config that names code is refused here too
        check_fits(checkpoint, module, cfg.ckpt_path)
    if cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise VaeLabError(f"trainer.accelerator={cfg.trainer.accelerator}, but torch finds no GPU here; "
                          "leave out trainer=gpu (the default trainer takes a GPU when there is one)")
    datamodule = build(cfg.data, "data")
    datamodule.setup("fit")  # fail on missing or bad data now, before any training starts
    output_dir = Path(cfg.output_dir)
    run_callbacks = [build(node, f"callbacks.{name}") for name, node in cfg.callbacks.items() if node is not None]
    run_callbacks += callbacks
    trainer = build(
        cfg.trainer, "trainer", logger=build(cfg.logger, "logger"), callbacks=run_callbacks,
        plugins=[AtomicCheckpointIO()], default_root_dir=output_dir,
        # Lightning adds a progress bar and a checkpoint callback of its own unless told not to:
        # the run has those of cfg.callbacks, and no others.
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in run_callbacks),
        enable_checkpointing=any(isinstance(c, Checkpoint) for c in run_callbacks),
    )

    output_dir.mkdir(parents=True, exist_ok=True)
    if trainer.is_global_zero:  # with DDP, every process runs this; one writes
        OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    if cfg.ckpt_path is None:
        # val/* at step 0: every loss curve starts from the untrained model
        trainer.validate(module, datamodule=datamodule, verbose=False)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    return trainer.callback_metrics["val/loss"].item()
