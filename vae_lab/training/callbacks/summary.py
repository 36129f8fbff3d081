"""One record of every run: ``<run folder>/summary.json``, and TensorBoard's HPARAMS table.

``RunSummary`` writes the record when training starts (``"status": "running"``, which a killed
run keeps), when it fails (``"failed"`` with the error) and when it ends (``"finished"``, with
the final losses). Callbacks that produce something at the end of training (pictures, metrics)
derive from ``Recording`` (``base.py``): they do their work in ``on_train_end`` and ``record()``
returns what goes into the summary, read in ``on_fit_end``, which Lightning calls after every
``on_train_end``. ``vae_lab.report`` and ``vae_lab.load_run`` read the record; nothing reads
TensorBoard tags to learn how a run went.
"""
import datetime
import os
import platform
import time
from pathlib import Path

import lightning
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.core.saving import save_hparams_to_yaml

from vae_lab.config import ALIASES
from vae_lab.io import write_json
from vae_lab.registry import CALLBACKS, name_of
from vae_lab.runs import SUMMARY_FILE, numbers
from vae_lab.training.callbacks.base import Recording

# the losses a summary holds at the end: key -> what LitVAE logs
FINAL = {"val_loss": "val/loss", "val_recon": "val/recon", "val_kl": "val/kl", "train_loss": "train/loss_epoch",
         "val_active_units": "val/active_units", "val_bits_per_dim": "val/bits_per_dim"}


def run_settings(config: dict) -> dict:
    """The settings that tell runs apart, flat, for the HPARAMS table, the summary and the report:
    the model, data set, likelihood and top-level keys, and every other setting of the model, the
    prior, the loss, the KL and LR schedules, the optimizer and the sampler (``model.hidden``,
    ``prior.components``, ``loss.iwae_k``, …), each chosen component by its registered name
    (``loss.name``: elbo or btcvae). Copies of top-level keys (vae_lab.config.ALIASES) are left out."""
    settings = {"model": name_of(config["model"]), "data": config["data"]["name"],
                "loss": name_of(config["loss"]["likelihood"]),
                **{key: config[key] for key in ("beta", "z_dim", "epochs", "batch_size", "lr", "seed")},
                "data.binarize": config["data"].get("binarize", "none")}
    for group in ("model", "prior", "loss", "kl_schedule", "lr_schedule", "optimizer", "sampler"):
        node = config.get(group) or {}
        node = {"name": node} if isinstance(node, str) else node
        if group in ("kl_schedule", "lr_schedule", "optimizer", "prior", "sampler"):
            settings[group] = node["name"]
        for key, value in node.items():
            if key not in ("name", "likelihood") and f"{group}.{key}" not in ALIASES:
                settings[f"{group}.{key}"] = str(value) if isinstance(value, (list, dict)) else value
    return settings


@CALLBACKS.register("summary")
class RunSummary(Callback):
    """Writes ``summary.json`` into the run folder (``trainer.default_root_dir``) and, at the end,
    fills the HPARAMS table with the settings and final numbers; see the module docstring. With
    ``console`` it also prints the run's first and last lines: what trains where, and at the end
    its final losses, its files and the TensorBoard command."""

    def __init__(self, console: bool = True):
        self.console = console

    def say(self, trainer, line: str) -> None:
        if self.console and trainer.is_global_zero:
            print(line, flush=True)

    def setup(self, trainer, pl_module, stage):
        if getattr(self, "announced", False):  # setup runs for the validation at initialisation and for fit
            return
        self.announced = True
        config, parameters = pl_module.config, sum(p.numel() for p in pl_module.model.parameters())
        resumed = f", resumed from {trainer.ckpt_path}" if trainer.ckpt_path else ""
        self.say(trainer, f"vae_lab: model={config['model']['name']} on data={config['data']['name']}, "
                          f"{parameters:,} parameters, on {trainer.strategy.root_device.type}{resumed}; "
                          f"run folder {trainer.default_root_dir}")

    def on_fit_start(self, trainer, pl_module):
        self.started, self.device = time.time(), str(pl_module.device)
        self.summary = {
            "status": "running",
            "error": None,
            "settings": run_settings(pl_module.config),
            "parameters": sum(p.numel() for p in pl_module.model.parameters()),
            "device": self.device,
            "resumed_from": None if trainer.ckpt_path is None else str(trainer.ckpt_path),
            "started": datetime.datetime.fromtimestamp(self.started).isoformat(timespec="seconds"),
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "lightning": lightning.__version__},
        }
        self._write(trainer)

    def _write(self, trainer, **changes) -> None:
        if trainer.is_global_zero:
            self.summary.update(changes, seconds=round(time.time() - self.started, 1),
                               epochs_trained=trainer.current_epoch, global_step=trainer.global_step)
            write_json(self.summary, Path(trainer.default_root_dir) / SUMMARY_FILE)

    def on_exception(self, trainer, pl_module, exception):
        if hasattr(self, "summary"):  # the run had started
            self._write(trainer, status="failed", error=" ".join(str(exception).split()) or type(exception).__name__)

    def on_fit_end(self, trainer, pl_module):
        metrics = trainer.callback_metrics
        final = {key: metrics[tag].item() for key, tag in FINAL.items() if tag in metrics}
        results = {}
        for callback in trainer.callbacks:
            if isinstance(callback, Recording):
                results.update(callback.record())
        checkpoint = trainer.checkpoint_callback
        files = {"last": getattr(checkpoint, "last_model_path", ""), "best": getattr(checkpoint, "best_model_path", "")}
        self._write(trainer, status="finished", final=final, **results,
                    checkpoints={k: os.path.relpath(v, trainer.default_root_dir) for k, v in files.items() if v})
        if not trainer.is_global_zero:  # with DDP, the first process reports
            return
        folder = Path(trainer.default_root_dir)
        if final:
            self.say(trainer, f"finished {trainer.current_epoch} epoch{'s' * (trainer.current_epoch != 1)} in {self.summary['seconds']:.0f} s: val loss "
                              f"{final['val_loss']:.2f} per sample (recon {final['val_recon']:.2f} + KL "
                              f"{final['val_kl']:.2f}), train loss {final.get('train_loss', float('nan')):.2f}")
        files = sorted(str(p.relative_to(folder)) for p in folder.glob("*.png")) + [SUMMARY_FILE]
        self.say(trainer, f"wrote {', '.join([*self.summary['checkpoints'].values(), *files])} to {folder}")
        self.say(trainer, f"see it: tensorboard --logdir {folder}")
        if trainer.logger is not None:
            metrics = {f"hparams/{key}": value for key, value in {**final, **numbers(results.get("metrics", {}))}.items()}
            trainer.logger.log_hyperparams(self.summary["settings"], metrics)
            # Lightning writes hparams.yaml once, at the start, from the module's (empty) logged
            # hparams; write it again with the settings.
            save_hparams_to_yaml(Path(trainer.logger.log_dir) / "hparams.yaml", self.summary["settings"])
