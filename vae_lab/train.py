"""Train one run from a composed config: ``train(cfg)``; ``python train.py`` wraps it with Hydra."""
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from vae_lab.errors import VaeLabError
from vae_lab.module import LitVAE


def check_config(cfg: DictConfig) -> None:
    """Raise VaeLabError naming the first invalid value, before anything is built."""
    def positive_int(value):
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    rules = [
        ("beta", cfg.beta >= 0, "must be >= 0"),
        ("z_dim", positive_int(cfg.z_dim), "must be an integer >= 1"),
        ("epochs", positive_int(cfg.epochs), "must be an integer >= 1"),
        ("batch_size", positive_int(cfg.batch_size), "must be an integer >= 1"),
        ("lr", cfg.lr > 0, "must be > 0"),
    ]
    for key, ok, requirement in rules:
        if not ok:
            raise VaeLabError(f"{key}={cfg[key]} {requirement} (e.g. python train.py {key}=...)")
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).is_file():
        raise VaeLabError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")


def train(cfg: DictConfig) -> float:
    """Train (or resume) the run described by ``cfg``; returns the final val/loss per sample."""
    check_config(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)

    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")  # fail on missing data now, before any training starts
    module = LitVAE(
        model=instantiate(cfg.model),
        loss=instantiate(cfg.loss),
        optimizer=instantiate(cfg.optimizer),
        seed=cfg.seed,
        config=OmegaConf.to_container(cfg, resolve=True),
    )
    checkpoints = ModelCheckpoint(
        dirpath=output_dir / "checkpoints", filename="best-epoch{epoch:02d}", monitor="val/loss",
        save_last=True, auto_insert_metric_name=False,
    )
    logger = TensorBoardLogger(output_dir, name="", version="", default_hp_metric=False)
    callbacks = [checkpoints, instantiate(cfg.figures)]
    trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks, default_root_dir=output_dir)

    if cfg.ckpt_path is None:
        # val/* at step 0: every loss curve starts from the untrained model
        trainer.validate(module, datamodule=datamodule, verbose=False)
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    return trainer.callback_metrics["val/loss"].item()
