"""``hydra/launcher=stacked``: the jobs of a sweep over β, seed and lr trained as one stacked model in
this process (``vae_lab.training.stacked``), each into the run folder Hydra gives it.

    python train.py -m model=conv beta=1,3,8,16 hydra/launcher=stacked

A launcher is the one place where Hydra hands all of a sweep's jobs over at once. Each job is set
up by Hydra's own ``run_job`` exactly as the basic launcher sets it up (its config composed by
``load_sweep_config``, its folder, its ``.hydra/`` files, ``HydraConfig``), with a task function
that keeps the job's config instead of training it; then all are trained together and each
``JobReturn`` gets its run's final val/loss, as ``train.py`` would return it. Its config is
registered from Python (``ConfigStore``) when ``vae_lab.train`` is imported (no file in vae_lab/conf/
names code); Hydra finds the class through ``hydra_plugins/vae_lab_stacked.py``, as it finds every
launcher plugin.
This module imports neither torch nor Lightning, so that ``python train.py`` starts as fast.
"""
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from vae_lab.config import check_config
from vae_lab.errors import VaeLabError

log = logging.getLogger(__name__)


@dataclass
class StackedLauncherConf:
    # Hydra builds launchers only from its plugin namespace: hydra_plugins/vae_lab_stacked.py names this one there
    _target_: str = "hydra_plugins.vae_lab_stacked.StackedLauncher"
    # the members' step as one vmap (true), each member's own step (false), or null: vmap on a GPU,
    # each member's own on the CPU (vae_lab.training.stacked.StackedVAE._run_members)
    vectorized: Optional[bool] = None
    # members stepping side by side, each in a thread at one of torch's threads; null: one per CPU
    # thread (one on a GPU); 1: one after another, each member's step its run's very computation
    workers: Optional[int] = None


ConfigStore.instance().store(group="hydra/launcher", name="stacked", node=StackedLauncherConf)


class StackedLauncher(Launcher):
    """Sets up every job as Hydra's basic launcher does, then trains them as one stacked model.
    A sweep that cannot stack (``vae_lab.training.stacked.check_stackable``) stops with one
    ``error: ...`` line before training, and the job folders Hydra made are removed again."""

    def __init__(self, vectorized: bool | None = None, workers: int | None = None):
        super().__init__()
        self.vectorized, self.workers = vectorized, workers

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs as one stacked model")
        cfgs, returns = [], []

        def keep(cfg: DictConfig) -> None:  # the task function: check the job's config and keep it
            check_config(cfg)
            with read_write(cfg):
                OmegaConf.resolve(cfg)  # output_dir=${hydra:runtime.output_dir}, while this job's HydraConfig is set
            cfgs.append(cfg)

        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = sweep_config.hydra.job.num = idx
            returns.append(run_job(hydra_context=self.hydra_context, task_function=keep, config=sweep_config,
                                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir"))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)  # off the job's train.log
            if returns[-1].status.name == "FAILED":  # a job's own check (check_config) refused it
                self.refuse(returns, returns[-1]._return_value)
        # Lightning's notices go to <sweep dir>/train.log, each job's logging set up as for a run there
        with read_write(sweep_config.hydra.runtime):
            sweep_config.hydra.runtime.output_dir = str(Path(str(self.config.hydra.sweep.dir)).resolve())
        configure_log(sweep_config.hydra.job_logging, sweep_config.hydra.verbose)
        from vae_lab.training.stacked import train_stacked  # torch and Lightning, once the jobs are set up

        try:
            losses = train_stacked(cfgs, vectorized=self.vectorized, workers=self.workers)
        except VaeLabError as error:
            self.refuse(returns, error)
        for job, loss in zip(returns, losses):
            job.return_value = loss
        return returns

    @staticmethod
    def refuse(returns: Sequence[JobReturn], error: Exception) -> None:
        """Stop the sweep with one line; remove the job folders that hold only what Hydra wrote."""
        from vae_lab.config import remove_if_half_made

        if not isinstance(error, VaeLabError):
            raise error
        for job in returns:
            remove_if_half_made(Path(job.hydra_cfg.hydra.runtime.output_dir))
        sys.exit(f"error: {error}")
