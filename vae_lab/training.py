"""Train one run from a composed config: ``train(cfg)``; ``python -m vae_lab.train`` (and ``python train.py``)
wraps it with Hydra."""
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from lightning.pytorch.callbacks import Callback, Checkpoint, ProgressBar
from omegaconf import DictConfig, OmegaConf, open_dict

from vae_lab.arguments import check_arguments
from vae_lab.checkpoint import AtomicCheckpointIO, check_fits, load_checkpoint, stored_config
from vae_lab.config import check_config
from vae_lab.errors import VaeLabError
from vae_lab.models import build_model
from vae_lab.module import LitVAE, MultiStepVAE
from vae_lab.registry import MODELS, load_plugins, name_of
from vae_lab.samplers import build_sampler
from vae_lab.summary import Recording


def quiet_lightning() -> None:
    """Let Lightning's log lines ("GPU available", tips, "Trainer.fit stopped") go where the
    application's logging sends them (a run's train.log) instead of to the console: Lightning
    hangs console handlers of its own on its loggers when it is imported. Two warnings a user
    cannot act on are dropped: a deprecation inside Lightning and torch, and the notice that an
    epoch is shorter than log_every_n_steps (vae_lab logs by global step, across epochs)."""
    warnings.filterwarnings("ignore", message=r".*LeafSpec.* is deprecated")
    warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")
    # MultiStepVAE takes K batches per step from the dataloader_iter, and its callbacks count
    # batches by the index of the last one (docs/performance.md), which the warning is about
    warnings.filterwarnings("ignore", message=r"You are using the `dataloader_iter` step flavor")
    warnings.filterwarnings("ignore", message=r"Found `dataloader_iter` argument in the `training_step`")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True


quiet_lightning()


def build(node: DictConfig, name: str, **kwargs):
    """``instantiate(node)``; a value that does not fit its target's signature, or that the target
    rejects, becomes one VaeLabError line naming ``name``."""
    arguments = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if not k.startswith("_")}
    if problem := check_arguments(get_object(node._target_), arguments, name):
        raise VaeLabError(problem)
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, VaeLabError):  # already one line naming its key
            raise VaeLabError(str(error.__cause__)) from None
        reason = " ".join(str(error.__cause__ or error).split())
        raise VaeLabError(f"{name}: {reason}") from None


def execution(trainer: DictConfig) -> tuple[DictConfig, dict]:
    """Split ``cfg.trainer`` into the ``lightning.Trainer``'s arguments and the LightningModule's
    way of stepping: ``{}`` for one optimizer step per Lightning step, else ``MultiStepVAE``'s
    settings (``steps_per_execution``, and the gradient clipping it applies itself)."""
    trainer = trainer.copy()
    with open_dict(trainer):
        steps = trainer.pop("steps_per_execution", 1)
        if steps == 1:
            return trainer, {}
        if trainer.get("val_check_interval", 1.0) != 1.0:  # Lightning would count its steps, not batches
            raise VaeLabError(f"trainer.val_check_interval={trainer.val_check_interval} needs "
                              f"trainer.steps_per_execution=1 (it is {steps}); vae_lab validates after every epoch")
        if trainer.get("accumulate_grad_batches", 1) != 1:
            raise VaeLabError(f"trainer.accumulate_grad_batches={trainer.accumulate_grad_batches} needs "
                              f"trainer.steps_per_execution=1 (it is {steps}): each of several steps per "
                              "execution updates the weights")
        clipping = {key: trainer.pop(key) for key in ("gradient_clip_val", "gradient_clip_algorithm") if key in trainer}
    return trainer, {"steps_per_execution": steps, **clipping}


def check_resumable(stored: dict, steps: int, path) -> None:
    """Refuse to resume a run with one optimizer step per Lightning step as a run with several, or
    the other way round: Lightning counts the steps of the two in different places of its state."""
    trained = (stored.get("trainer") or {}).get("steps_per_execution", 1)  # 1 for runs from before the key
    if (trained == 1) != (steps == 1):
        raise VaeLabError(f"{path}: trained with trainer.steps_per_execution={trained}; resume it with "
                          f"trainer.steps_per_execution={trained}")


def train(cfg: DictConfig, callbacks: Sequence[Callback] = ()) -> float:
    """Train (or resume) the run described by ``cfg``; returns the final val/loss per sample.

    The run's callbacks are ``cfg.callbacks`` (one entry each; ``null`` switches one off), followed
    by ``callbacks`` (scripts use them to watch a run: benchmarks, tests).

    Everything that can be checked (config, checkpoint, data, trainer arguments) is checked before
    the run folder gets a file, so a refused run leaves nothing behind but what Hydra wrote.
    """
    check_config(cfg)
    load_plugins(cfg.plugins)
    checkpoint = None
    if cfg.ckpt_path is not None:  # a file that is no checkpoint is refused before the data are read
        checkpoint = load_checkpoint(cfg.ckpt_path)
        stored = stored_config(checkpoint, cfg.ckpt_path)  # a checkpoint with a config that names code is refused here too
        check_resumable(stored, cfg.trainer.get("steps_per_execution", 1), cfg.ckpt_path)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # The same thread count, set: until torch.set_num_threads is called, MKL may change how many
    # threads a product uses from call to call (MKL_DYNAMIC), and Intel makes a fixed count a
    # condition of bit-identical results from run to run (a resumed run must match a whole one).
    torch.set_num_threads(torch.get_num_threads())
    datamodule = build(cfg.data, "data")
    datamodule.setup("fit")  # fail on missing or bad data now, before any training starts
    config = OmegaConf.to_container(cfg, resolve=True)
    config["data"].update(datamodule.source)  # what was read (and its shape), so that the tools read it again
    build_sampler(config["sampler"])  # checked now; it draws the samples at the end
    if MODELS.get(name_of(config["model"]), cfg.plugins).conditional and not datamodule.labelled:
        raise VaeLabError(f"model={name_of(config['model'])} is conditional and needs labels, but "
                          f"{datamodule.source.get('path', config['data']['name'])} has none")
    trainer_arguments, stepping = execution(cfg.trainer)
    module = (MultiStepVAE if stepping else LitVAE)(
        model=build_model(config),  # the registries, as when a checkpoint is read
        loss=build(cfg.loss, "loss"),
        optimizer=build(cfg.optimizer, "optimizer"),
        kl_schedule=build(cfg.kl_schedule, "kl_schedule"),
        lr_schedule=build(cfg.lr_schedule, "lr_schedule"),
        seed=cfg.seed,
        config=config,
        **stepping,
    )
    module.loss.setup(module.model, module.kl_schedule, datamodule)  # a loss refuses what it cannot train, reads N
    if checkpoint is not None:
        check_fits(checkpoint, module, cfg.ckpt_path)
    if cfg.trainer.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise VaeLabError(f"trainer.accelerator={cfg.trainer.accelerator}, but torch finds no GPU here; "
                          "leave out trainer=gpu (the default trainer takes a GPU when there is one)")
    output_dir = Path(cfg.output_dir)
    run_callbacks = [build(node, f"callbacks.{name}") for name, node in cfg.callbacks.items() if node is not None]
    for callback in run_callbacks:
        if isinstance(callback, Recording):
            callback.check(datamodule)
    run_callbacks += callbacks
    trainer = build(
        trainer_arguments, "trainer", logger=build(cfg.logger, "logger"), callbacks=run_callbacks,
        plugins=[AtomicCheckpointIO()], default_root_dir=output_dir,
        # Lightning adds a progress bar and a checkpoint callback of its own unless told not to:
        # the run has those of cfg.callbacks, and no others.
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in run_callbacks),
        enable_checkpointing=any(isinstance(c, Checkpoint) for c in run_callbacks),
    )

    output_dir.mkdir(parents=True, exist_ok=True)
    if trainer.is_global_zero:  # with DDP, every process runs this; one writes
        # the run's record, as its checkpoints hold it: the config and what the data served
        OmegaConf.save(OmegaConf.create(config), output_dir / "config.yaml")
    if cfg.ckpt_path is None:
        # val/* at step 0: every loss curve starts from the untrained model
        trainer.validate(module, datamodule=datamodule, verbose=False)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    return trainer.callback_metrics["val/loss"].item()
