"""A composed config's top-level keys checked with nothing heavier than OmegaConf, so that bad input
fails fast (each component checks its own settings when it is built); and the configs of runs from
before the configs chose every component by name, read as the same runs by name (``upgraded``)."""
import os
import shutil
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from vae_lab.errors import VaeLabError

CONF = Path(__file__).resolve().parent / "conf"  # the configs, shipped inside the package

# What a run writes into its folder; a folder holding any of these belongs to another run.
RUN_FILES = ("config.yaml", "checkpoints")
# Nested keys that follow a top-level one: the top-level key is the one setting, shown in the run
# folder's name, the HPARAMS table and the report, so the copy may not be set on its own.
ALIASES = {
    "model.z_dim": "z_dim",
    "kl_schedule.beta": "beta",
    "trainer.max_epochs": "epochs",
    "optimizer.lr": "lr",
    "data.batch_size": "batch_size",
    "data.seed": "seed",
}
# Runs trained before vae_lab chose every component by name stored Hydra's ``_target_`` for some;
# these (and only these) are read as the registered names they meant. Any other ``_target_`` stays,
# and the registry refuses it as naming code.
LEGACY_TARGETS = {
    "loss": {"vae_lab.losses.VAELoss": "elbo", "vae_lab.losses.BTCVAELoss": "btcvae"},
    "kl_schedule": {"vae_lab.schedules.Constant": "constant", "vae_lab.schedules.LinearWarmup": "linear_warmup",
                    "vae_lab.schedules.Cyclical": "cyclical", "vae_lab.schedules.Capacity": "capacity"},
    "lr_schedule": {"vae_lab.schedules.FixedLR": "constant", "vae_lab.schedules.CosineLR": "cosine"},
    "optimizer": {"torch.optim.Adam": "adam", "torch.optim.AdamW": "adamw", "torch.optim.SGD": "sgd"},
}
# nodes whose _target_ was the one thing vae_lab builds there: the key says what it is
LEGACY_FIXED = {"data": "vae_lab.data.ImageDataModule", "trainer": "lightning.Trainer",
                "logger": "lightning.pytorch.loggers.TensorBoardLogger"}
LEGACY_CALLBACKS = {"checkpoints": "vae_lab.checkpoint.RunCheckpoints", "finite_guard": "vae_lab.guards.FiniteGuard",
                    "figures": "vae_lab.figures.FigureLogger", "progress_bar": "vae_lab.progress.TrainingBar",
                    "summary": "vae_lab.summary.RunSummary", "evaluate": "vae_lab.evaluate.EvaluateAtEnd"}
LOGGER_SET_BY_VAE_LAB = ("save_dir", "name", "version")  # the run folder, with no subfolders


def upgraded(config: dict) -> dict:
    """A run config (plain values) with the ``_target_`` of ``LEGACY_TARGETS``, ``LEGACY_FIXED`` and
    ``LEGACY_CALLBACKS`` replaced by what chooses the same component today; a copy, the rest as it was."""
    config = {key: dict(value) if isinstance(value, dict) else value for key, value in config.items()}
    for group, names in LEGACY_TARGETS.items():
        node = config.get(group)
        if isinstance(node, dict) and node.get("_target_") in names:
            node["name"] = names[node.pop("_target_")]
            node.pop("_partial_", None)
    for group, target in LEGACY_FIXED.items():
        node = config.get(group)
        if isinstance(node, dict) and node.get("_target_") == target:
            del node["_target_"]
            if group == "logger":
                for key in LOGGER_SET_BY_VAE_LAB:
                    node.pop(key, None)
    callbacks = config.get("callbacks")
    if isinstance(callbacks, dict):
        for name, node in callbacks.items():
            if isinstance(node, dict) and node.get("_target_") == LEGACY_CALLBACKS.get(name):
                callbacks[name] = {key: value for key, value in node.items() if key != "_target_"}
    return config


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


def check_config(cfg: DictConfig, own_folder: bool = False) -> None:
    """Raise VaeLabError naming the first invalid top-level value, before anything is built (the
    command line and ``vae_lab.train_run`` call it before they import torch and Lightning).
    ``own_folder``: output_dir holds this very run, which a sweep job goes on with (``vae_lab.sweep``)."""
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
    for key, ok, requirement in rules:
        if not ok:
            raise VaeLabError(f"{key}={OmegaConf.select(cfg, key)} {requirement} (e.g. python train.py {key}=...)")
    if cfg.ckpt_path is not None and not Path(cfg.ckpt_path).is_file():
        raise VaeLabError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    taken = [name for name in RUN_FILES if (Path(cfg.output_dir) / name).exists()]
    if taken and not own_folder and process_rank() == 0:  # the other DDP processes join the folder of process 0
        raise VaeLabError(f"output_dir={cfg.output_dir} already holds a run ({', '.join(taken)}); "
                          "a new run needs a new folder (resume with ckpt_path=.../last.ckpt)")


# What Hydra writes into a run folder before train(cfg) runs.
HYDRA_FILES = {".hydra", ".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "train.log"}


def remove_if_half_made(run_dir: Path) -> None:
    """Remove run_dir if it holds nothing but what Hydra wrote for this process.

    Hydra rewrites .hydra/ for every run it starts in a folder, so only train.log, which it appends
    to, could hold something older: the folder is removed only while train.log is still empty.
    """
    log = run_dir / "train.log"
    if ({str(path.relative_to(run_dir)) for path in run_dir.rglob("*")} <= HYDRA_FILES
            and (not log.exists() or log.stat().st_size == 0)):
        shutil.rmtree(run_dir)
