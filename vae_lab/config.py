"""Checks on a composed config that need nothing heavier than OmegaConf, so bad input fails fast."""
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vae_lab.errors import VaeLabError

CONF = Path(__file__).resolve().parent / "conf"  # the configs, shipped inside the package

# What a run writes into its folder; a folder holding any of these belongs to another run.
RUN_FILES = ("config.yaml", "checkpoints")
BINARIZE = ("none", "dynamic", "static")  # the values of data.binarize (vae_lab.data.ImageDataModule)
# Nested keys that follow a top-level one: the top-level key is the one setting, shown in the run
# folder's name, the HPARAMS table and the report, so the copy may not be set on its own.
ALIASES = {
    "model.z_dim": "z_dim",
    "kl_schedule.beta": "beta",
    "trainer.max_epochs": "epochs",
    "optimizer.lr": "lr",
    "data.batch_size": "batch_size",
    "data.seed": "seed",
    "logger.save_dir": "output_dir",
}


def check_choice(key: str, value, choices) -> None:
    """Raise VaeLabError unless value is one of choices."""
    if value not in choices:
        raise VaeLabError(f"{key}={value} must be one of {', '.join(choices)}")


def process_rank() -> int:
    """This process's rank in a multi-process (DDP) run, from the variables its launcher sets (the
    ones Lightning reads); 0 for a single process. Read here without importing Lightning."""
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if key in os.environ:
            return int(os.environ[key])
    return 0


def check_aliases(cfg: DictConfig) -> None:
    """Raise VaeLabError naming the top-level key to use when a key of ``ALIASES`` was set apart from it."""
    for nested, top in ALIASES.items():
        parent_key, _, key = nested.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key)
        if parent is None or key not in parent:
            continue
        raw = OmegaConf.to_container(parent, resolve=False)[key]
        if raw != f"${{{top}}}":
            raise VaeLabError(f"{nested}={raw}: {nested} follows {top}; set {top}={raw} instead")


def check_config(cfg: DictConfig) -> None:
    """Raise VaeLabError naming the first invalid value, before anything is built."""
    if missing := sorted(OmegaConf.missing_keys(cfg)):
        raise VaeLabError(f"{missing[0]} has no value: give it on the command line, {missing[0]}=...")
    check_aliases(cfg)

    def positive_int(value):
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    rules = [
        ("beta", isinstance(cfg.beta, (int, float)) and cfg.beta >= 0, "must be a number >= 0"),
        ("z_dim", positive_int(cfg.z_dim), "must be an integer >= 1"),
        ("epochs", positive_int(cfg.epochs), "must be an integer >= 1"),
        ("batch_size", positive_int(cfg.batch_size), "must be an integer >= 1"),
        ("lr", isinstance(cfg.lr, (int, float)) and cfg.lr > 0, "must be a number > 0"),
        ("seed", isinstance(cfg.seed, int) and cfg.seed >= 0, "must be an integer >= 0"),
    ]
    steps = cfg.trainer.get("steps_per_execution", 1)
    rules.append(("trainer.steps_per_execution", positive_int(steps), "must be an integer >= 1"))
    for key, ok, requirement in rules:
        if not ok:
            raise VaeLabError(f"{key}={OmegaConf.select(cfg, key)} {requirement} (e.g. python train.py {key}=...)")
    if cfg.trainer.get("limit_val_batches") in (0, 0.0):
        raise VaeLabError("trainer.limit_val_batches=0: every epoch is validated (val/loss picks the best "
                          "checkpoint); give a number of batches or a fraction > 0")
    check_choice("data.binarize", cfg.data.get("binarize", "none"), BINARIZE)
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).is_file():
        raise VaeLabError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    taken = [name for name in RUN_FILES if (Path(cfg.output_dir) / name).exists()]
    if taken and process_rank() == 0:  # the other DDP processes join the folder of process 0
        raise VaeLabError(f"output_dir={cfg.output_dir} already holds a run ({', '.join(taken)}); "
                          "a new run needs a new folder (resume with ckpt_path=.../last.ckpt)")
