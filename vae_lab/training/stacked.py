"""A sweep over β, seed and lr trained as one stacked model (issue 44): ``train_stacked(cfgs)``.

M runs that differ only in β, seed and learning rate have models of the same shapes, and train as
one LightningModule (``StackedVAE``): one Trainer, one copy of the data, one loop, one optimizer
over the M models (a parameter group per member), and each step a step of all M on their own
batches (M, B, C, H, W). A step of the members is either each member's own, ``workers`` of them
side by side in threads (the CPU default: a member per core), or one ``torch.func.vmap`` of the
model over the members' weights stacked (M, *shape) (``functional_call``; the GPU default: each
layer one batched product, fewer and larger kernels). Building, the data, Lightning's loop and
each epoch's validation batches are paid once instead of M times (docs/performance.md measures
what that is worth).

Each member trains as its separate run would (``vae_lab.training.train``): its initial weights from
``seed_everything(seed)`` and ``build_model``; its batch order from ``EpochBatchSampler(seed)``; its
reparameterisation noise from its own generator seeded as ``LitVAE._reseed`` seeds the default one;
its KL schedule's term added to its own loss; its gradient its own loss's; its own learning rate
and optimizer state (its parameter group: the optimizer steps each group as a separate optimizer
would). The stepping is ``MultiStepVAE``'s own (subclassed, not copied), so Lightning's loop state,
which every member's checkpoint carries, is a separate run's.

Each member writes what its separate run writes, into its own folder: config.yaml, TensorBoard
events (the same tags at the same steps), ``checkpoints/last.ckpt`` and ``best-epochNN.ckpt``
(Lightning checkpoints of the member alone, split from the stacked state by ``MemberCheckpointIO``,
so they resume as normal runs), the pictures and ``summary.json``: the run's own ``FigureLogger``
and ``RunSummary`` (and ``RunCheckpoints``' state), called with ``MemberTrainer``, the stacked trainer
as seen from that member, so no line of theirs is repeated here.

What cannot stack is refused in one line before anything is written (``check_stackable``, and
running statistics once the models are built): different shapes or settings other than β, seed and lr,
noise drawn inside the model (``model=hvae``), losses other than ``elbo``, DReG's hooks, gradient
clipping (a norm per member), resuming, several devices, evaluation at the end, and binarized
data with different seeds (one copy of the data is shared).
"""
import copy
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.func import functional_call, vmap
from torch.utils.data import DataLoader, Sampler, TensorDataset

from vae_lab.cli import start_process
from vae_lab.config import upgraded
from vae_lab.data import EpochBatchSampler, ImageDataModule
from vae_lab.data.splits import bernoulli_draw
from vae_lab.errors import VaeLabError
from vae_lab.evaluation.inference import ACTIVE_UNIT_VARIANCE
from vae_lab.models import build_model
from vae_lab.registry import KL_SCHEDULES, LR_SCHEDULES, OPTIMIZERS, SAMPLERS, load_plugins
from vae_lab.training.callbacks import (AtomicCheckpointIO, FigureLogger, FiniteGuard, RunCheckpoints, RunSummary,
                                       build_callbacks)
from vae_lab.training.losses import VAELoss, bits_per_dim, build_loss
from vae_lab.training.module import LitVAE, MultiStepVAE
from vae_lab.training.trainer import build_logger, build_trainer, stepping

# What members may differ in: everything else must be equal (shapes, schedules, data, trainer).
MEMBER_KEYS = ("beta", "kl_schedule.beta", "seed", "data.seed", "lr", "optimizer.lr", "output_dir")
SHAPE_GROUPS = ("model.", "prior.", "data.", "loss.likelihood", "z_dim", "batch_size")
CALLBACKS_STACKED = ("checkpoints", "finite_guard", "figures", "progress_bar", "summary")
RUN = "run without hydra/launcher=stacked"


def flat(config: dict, prefix: str = "") -> dict:
    """{'a.b.c': value} of a nested dict of plain values."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _why(key: str) -> str:
    if key.startswith(SHAPE_GROUPS):
        return "stacked members must share every shape"
    if key in ("epochs", "trainer.max_epochs", "trainer.max_steps", "trainer.limit_train_batches"):
        return "stacked members train the same steps and stop together"
    return "stacked members may differ only in beta, seed and lr"


def check_stackable(configs: Sequence[dict]) -> None:
    """Raise VaeLabError, one line, unless the runs (resolved configs, plain values) can train as one
    stacked model: equal but for ``MEMBER_KEYS``, and nothing in them that a stacked step cannot give
    each member exactly as its own run would."""
    flats = [flat(config) for config in configs]
    for key in dict.fromkeys(k for f in flats for k in f):
        values = [f.get(key) for f in flats]
        if key not in MEMBER_KEYS and any(v != values[0] for v in values):
            shown = ", ".join(map(str, dict.fromkeys(map(str, values))))
            raise VaeLabError(f"{key} differs between jobs ({shown}): {_why(key)}; {RUN}")
    config, refuse = configs[0], []
    trainer, loss = config["trainer"], config["loss"]
    if config["model"]["name"] == "hvae":
        refuse.append("model=hvae draws noise inside its prior, which a stacked step cannot give each member as its run would")
    if loss.get("name", "elbo") != "elbo":
        refuse.append(f"loss.name={loss['name']}: only the ELBO (loss=bce, loss=mse) trains stacked")
    if loss.get("estimator", "standard") == "dreg":
        refuse.append("loss.estimator=dreg reweights gradients with hooks, which vmap does not run per member")
    if any(key in trainer for key in ("gradient_clip_val", "gradient_clip_algorithm")):
        refuse.append("gradient clipping takes one norm over all weights; stacked, it would mix the members")
    if config.get("ckpt_path") is not None:
        refuse.append("ckpt_path: a stacked sweep starts from scratch; resume each member as a normal run")
    if trainer.get("devices", "auto") not in ("auto", 1, [0]) or "ddp" in str(trainer.get("strategy", "")):
        refuse.append(f"trainer.devices={trainer.get('devices')}, strategy={trainer.get('strategy', 'auto')}: a stacked sweep trains in one process on one device")
    others = [key for key, value in config["callbacks"].items() if value is not None and key not in CALLBACKS_STACKED]
    if others:
        refuse.append(f"callbacks.{others[0]} runs inside a single run's trainer; evaluate each member afterwards "
                      "(python -m vae_lab.evaluate run=<member folder>)")
    if config["data"].get("binarize", "none") != "none" and len({c["seed"] for c in configs}) > 1:
        refuse.append(f"data.binarize={config['data']['binarize']} draws fixed binary images from each seed, and "
                      "stacked members share one copy of the data: give the members one seed")
    if refuse:
        raise VaeLabError(f"{refuse[0]}; {RUN}")


class Member:
    """One run of the sweep inside the stacked model: its config, folder, model (built exactly as
    ``train`` builds it, so its initial weights are the separate run's), KL schedule, noise
    generator, logger, and the callbacks that write its files."""

    def __init__(self, config: dict, data: ImageDataModule, plugins):
        self.config, self.seed, self.folder = config, config["seed"], Path(config["output_dir"])
        self.name = self.folder.name
        L.seed_everything(self.seed, workers=True, verbose=False)
        self.model = build_model(config)
        self.kl_schedule = KL_SCHEDULES.build(config["kl_schedule"], plugins)
        self.loss = build_loss(config["loss"], self.model, self.kl_schedule, len(data.train_set), plugins)
        self.sampler = SAMPLERS.build(config["sampler"], plugins)
        self.data = copy.copy(data)  # the same tensors; its own seed for what a fitted sampler reads
        self.data.seed = self.seed
        callbacks = {type(c): c for c in build_callbacks(config["callbacks"], data.source, plugins)}
        self.checkpoints = callbacks.get(RunCheckpoints)  # its state, kept here (None: callbacks.checkpoints=null)
        if self.checkpoints is not None:
            self.checkpoints.dirpath = str(self.folder / "checkpoints")
        self.guarded = FiniteGuard in callbacks  # callbacks.finite_guard: stop at a non-finite loss
        self.figures, self.summary = callbacks.get(FigureLogger), callbacks.get(RunSummary)
        self.weights = list(self.model.parameters())  # in the order of its run's optimizer
        self.terms = MemberLoss(self.model, self.loss)
        self.noise = torch.Generator()
        self.metrics: dict[str, torch.Tensor] = {}  # the latest value of every epoch-level tag
        self.logger = None

    def start(self) -> None:
        """The run folder's first files, as ``train`` writes them (after everything is built)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(self.config), self.folder / "config.yaml")
        self.logger = build_logger(self.config.get("logger"), self.folder) or None

    def log(self, scalars: dict, step: int) -> None:
        if self.logger is not None:
            self.logger.log_metrics(scalars, step=step)

    def views(self, trainer, module) -> tuple["MemberTrainer", "MemberModule"]:
        return MemberTrainer(trainer, self), MemberModule(self, module.device)

    def call(self, callback, hook: str, trainer, module, *args) -> None:
        """Run the member's own ``callback.hook`` as its separate run's Trainer would."""
        if callback is not None:
            getattr(callback, hook)(*self.views(trainer, module), *args)


class MemberTrainer:
    """The stacked trainer as one member's callbacks (``RunSummary``, ``FigureLogger``) see it: its
    own folder, logger, epoch-level metrics, checkpoints and callbacks; the steps, epochs and state
    of the stacked trainer, which are every member's."""

    def __init__(self, trainer: L.Trainer, member: Member):
        self._trainer, self.ckpt_path = trainer, None
        self.default_root_dir, self.logger, self.datamodule = str(member.folder), member.logger, member.data
        self.callback_metrics, self.checkpoint_callback = member.metrics, member.checkpoints
        self.callbacks = [c for c in (member.checkpoints, member.figures, member.summary) if c is not None]

    def __getattr__(self, name):
        return getattr(self._trainer, name)


class MemberModule:
    """A member as its callbacks read the LightningModule: ``model`` (its own, trained in place),
    ``config``, ``seed``, ``sampler``, ``device``."""

    def __init__(self, member: Member, device: torch.device):
        self.model, self.config, self.seed, self.sampler, self.device = (member.model, member.config, member.seed,
                                                                          member.sampler, device)


class MemberLoss(nn.Module):
    """One member's loss terms as a module, called as it is (each member's own step) or through
    ``functional_call`` with the members' weights stacked (vmap): (x, y, eps, weight) -> ({'fit',
    'penalised', 'recon', 'kl', ...}, mu), the terms a run logs (``VAELoss.__call__``'s,
    ``bits_per_dim`` included). Its weights are named ``model.<name>`` as in a run's checkpoint."""

    def __init__(self, model: nn.Module, loss: VAELoss):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, x, y, eps, weight):
        mu, logvar = self.model.encode(x, y)
        terms, _ = self.loss.terms(self.model, x, y, mu, logvar, weight, eps)
        return {**terms, **bits_per_dim(self.model, x, terms["recon"], terms["kl"])}, mu


class StackedBatchSampler(Sampler):
    """(M, B) index batches: row m is the batch member m's ``EpochBatchSampler`` yields (its own
    order, from its seed and the epoch)."""

    def __init__(self, n: int, batch_size: int, seeds: Sequence[int], device: torch.device):
        self.samplers = [EpochBatchSampler(n, batch_size, True, seed, device=device) for seed in seeds]

    def set_epoch(self, epoch: int) -> None:  # Lightning calls it at every epoch
        for sampler in self.samplers:
            sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.samplers[0])

    def __iter__(self):
        return map(torch.stack, zip(*self.samplers))


class StackedVAE(LitVAE):
    """M members' models in one LightningModule (``member_models``, so Lightning moves them to its
    device), one optimizer over all of them with a parameter group per member (its own learning
    rate; its state is its run's), one loop. A step's batch is (x (M, B, C, H, W), y (M, B)); the
    members' gradients are taken as the step's loss is made (``_run_members``) and handed to the
    optimizer by ``backward``. Logging, epoch means, validation and the members' files go to each
    member (``Member``)."""

    def __init__(self, members: Sequence[Member], data: ImageDataModule, plugins=(), **steps):
        config = members[0].config
        groups = [{"params": member.weights,  # an lr grid: each member's own learning rate
                   **({"lr": member.config["optimizer"]["lr"]} if "lr" in member.config["optimizer"] else {})}
                  for member in members]
        super().__init__(model=members[0].model, loss=members[0].loss,
                         optimizer=OPTIMIZERS.build(config["optimizer"], plugins, params=groups),
                         lr_schedule=LR_SCHEDULES.build(config["lr_schedule"], plugins), sampler=members[0].sampler,
                         seed=members[0].seed, config=config, **steps)
        self.members, self.data = list(members), data
        self.member_models = nn.ModuleList(member.model for member in members)
        self.vectorized, self.workers, self.pool, self.grads = False, 1, None, None
        self.started = time.perf_counter()

    def member_state(self, i: int) -> dict:
        """Member i's model state_dict as its run's checkpoint holds it (``model.<name>``), copies."""
        return {f"model.{name}": t.detach().clone() for name, t in self.members[i].model.state_dict().items()}

    def sync(self) -> None:
        """Each member's model as its pictures and summary read it: in eval mode, as a run's after its validation."""
        for member in self.members:
            member.model.eval()

    def _run_members(self, x, y, eps, weight, x_dims: int | None, epoch: float | None, backward: bool):
        """Every member's loss (M,), terms ({name: (M,)}) and posterior means (M, B, z_dim), for x and
        y per member (x_dims=0) or shared (None); the loss is the member's fit plus its own KL
        schedule's term, as its run adds it. With ``backward``, each member's gradients go to
        ``grads`` for ``backward``.

        Each member's own step (not ``vectorized``): its model steps as its run's does (the very
        operations), ``workers`` members side by side in threads, each at one of torch's threads: on
        a CPU, two small models on two cores finish sooner than one after another on both cores
        (docs/performance.md). ``vectorized``: one ``vmap`` over the members' weights stacked (M,
        *shape), each layer one batched product (fewer, larger operations: what a GPU wants)."""
        members = range(len(self.members))
        if self.vectorized:
            def stacked(named):  # name -> (M, *shape), named for functional_call of MemberLoss
                tensors = [dict(named(member.model)) for member in self.members]
                return {f"model.{name}": torch.stack([t[name] for t in tensors]) for name in tensors[0]}

            def one(params, buffers, x, y, eps, weight):
                return functional_call(self.members[0].terms, (params, buffers), (x, y, eps, weight))

            terms, mu = vmap(one, in_dims=(0, 0, x_dims, x_dims, 0, 0))(stacked(nn.Module.named_parameters),
                                                              stacked(nn.Module.named_buffers), x, y, eps, weight)
            losses = torch.stack([terms["fit"][i] + self.members[i].kl_schedule.term(terms["penalised"][i], epoch)
                                  for i in members])
            if backward:  # d(sum)/d(member i's weights) = d(loss_i)/d(its weights)
                weights = [w for m in self.members for w in m.weights]
                grads = iter(torch.autograd.grad(losses.sum(), weights, allow_unused=True))
                self.grads = [[next(grads) for _ in m.weights] for m in self.members]
            return losses.detach(), {key: value.detach() for key, value in terms.items()}, mu.detach()
        modes = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

        def one(i):  # grad and inference mode are per thread: the caller's, in the worker
            with torch.inference_mode(modes[1]), torch.set_grad_enabled(modes[0]):
                member = self.members[i]
                terms, mu = member.terms(x if x_dims is None else x[i], y if x_dims is None else y[i], eps[i], weight[i])
                loss = terms["fit"] + member.kl_schedule.term(terms["penalised"], epoch)
                grads = torch.autograd.grad(loss, member.weights, allow_unused=True) if backward else None
                return loss.detach(), {key: value.detach() for key, value in terms.items()}, mu.detach(), grads

        if self.workers > 1 and self.pool is None:
            self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="vae_lab-member")
        outputs = list(self.pool.map(one, members) if self.workers > 1 else map(one, members))
        if backward:
            self.grads = [grads for *_, grads in outputs]
        terms = {key: torch.stack([terms[key] for _, terms, _, _ in outputs]) for key in outputs[0][1]}
        return torch.stack([loss for loss, *_ in outputs]), terms, torch.stack([mu for _, _, mu, _ in outputs])

    def backward(self, loss: torch.Tensor, *args, **kwargs) -> None:
        """Lightning's backward hook (``loss``, the members' summed, has no graph): each member's
        gradients as ``_run_members`` took them (None where a weight was not used, as in its run)."""
        for member, grads in zip(self.members, self.grads):
            for weights, grad in zip(member.weights, grads):
                # the layout autograd would give .grad: the fused optimizers read both tensors as laid
                # out alike, and vmap's gradient of a linear weight comes transposed
                if grad is not None and grad.stride() != weights.stride():
                    grad = torch.empty_like(weights).copy_(grad)
                weights.grad = grad
        self.grads = None

    def teardown(self, stage: str) -> None:
        if self.pool is not None:
            self.pool.shutdown()
            self.pool = None

    def _noise(self, step: int | None, batch: int) -> torch.Tensor:
        """(M, k, B, z_dim): each member's draw as its run's ``VAELoss`` makes it after
        ``LitVAE._reseed(step, rank)`` (step None: go on from the last draw, as validation does)."""
        draws = []
        for member in self.members:
            if step is not None:
                member.noise.manual_seed((member.seed * 1_000_003 + step) * 1_009 + self.global_rank)
            shape = (self.loss.iwae_k, batch, member.model.z_dim)
            draws.append(torch.randn(shape, generator=member.noise, device=member.noise.device))
        return torch.stack(draws).to(self.device)

    @staticmethod
    def _values(losses: torch.Tensor, terms: dict) -> tuple[torch.Tensor, list[str]]:
        """(values (M, T) detached, term names): what a run logs, its loss first."""
        names = ["loss", *(key for key in terms if key not in ("fit", "penalised"))]
        return torch.stack([losses.detach(), *(terms[key].detach() for key in names[1:])], dim=1), names

    def on_fit_start(self):
        super().on_fit_start()
        for member in self.members:  # the generator of the device that LitVAE._reseed seeds
            member.noise = torch.Generator(device=self.device)
        for member in self.members:
            member.call(member.summary, "on_fit_start", self.trainer, self)

    def setup(self, stage: str) -> None:
        for member in self.members:
            for callback in (member.figures, member.summary):
                member.call(callback, "setup", self.trainer, self, stage)

    def train_dataloader(self):
        device = self.trainer.strategy.root_device
        images, labels = (t.to(device) for t in self.data.train_set.tensors)
        sampler = StackedBatchSampler(len(images), self.data.batch_size, [m.seed for m in self.members], device)
        sampler.set_epoch(self.trainer.fit_loop.epoch_progress.current.processed)
        return DataLoader(TensorDataset(images, labels), sampler=sampler, batch_size=None)

    def val_dataloader(self):
        device = self.trainer.strategy.root_device
        dataset = TensorDataset(*(t.to(device) for t in self.data.val_set.tensors))
        return DataLoader(dataset, sampler=EpochBatchSampler(len(dataset), self.data.batch_size, False, device=device),
                          batch_size=None)

    def on_train_epoch_start(self):
        self.epoch_sums, self.epoch_count, self.started = 0.0, 0, time.perf_counter()
        for member in self.members:  # what a run's checkpoints callback does as an epoch starts
            member.model.train()
            member.call(member.checkpoints, "on_train_epoch_start", self.trainer, self)

    def _step_loss(self, batch) -> torch.Tensor:
        """The summed loss of one optimizer step of every member (its logging and epoch sums done)."""
        step, (x, y) = self.global_step, batch
        epoch = step / self.trainer.num_training_batches
        if self.data.binarize == "dynamic":  # the data module's draw, per member (one seed: refused otherwise)
            x = torch.stack([bernoulli_draw(x[i], (m.seed * 1_000_003 + step) * 2 + 1)
                             for i, m in enumerate(self.members)])
        weight = torch.tensor([m.kl_schedule.weight(epoch) for m in self.members], device=self.device)
        losses, terms, _ = self._run_members(x, y, self._noise(step, x.shape[1]), weight, 0, epoch, backward=True)
        values, names = self._values(losses, terms)
        every = self.trainer.log_every_n_steps
        if self.members[0].guarded and (self.device.type == "cpu" or (every and step % every == 0)):
            self._check_finite(losses)  # as FiniteGuard: every step on the CPU, on a GPU when the values are read
        if every and step % every == 0:
            groups = self.trainer.optimizers[0].param_groups  # a group per member
            for member, row, group in zip(self.members, values.tolist(), groups):  # one host copy for all
                scalars = {f"train/{k}": v for k, v in zip(names, row)}
                scalars.update({f"train/{k}": v for k, v in member.kl_schedule.logged(epoch).items()})
                member.log({**scalars, "train/lr": group["lr"]}, step)
        self.epoch_sums = self.epoch_sums + values * x.shape[1]
        self.epoch_count += x.shape[1]
        self.loss_terms = names
        return losses.sum()  # what Lightning records; the gradients are taken already (backward)

    def _check_finite(self, losses: torch.Tensor) -> None:
        bad = [m.name for m, ok in zip(self.members, torch.isfinite(losses.detach()).tolist()) if not ok]
        if bad:
            raise VaeLabError(f"training loss of {bad[0]} became non-finite by step {self.global_step} "
                              f"(epoch {self.current_epoch}); the stacked sweep stopped, its members' last good "
                              f"checkpoints are their checkpoints/last.ckpt; try a lower lr")

    def on_train_epoch_end(self):
        means = self.epoch_sums / self.epoch_count
        for member, row in zip(self.members, means):
            values = {f"train/{k}_epoch": v for k, v in zip(self.loss_terms, row)}
            member.metrics.update(values)
            member.log({k: v.item() for k, v in values.items()}, self.global_step)
        losses = ", ".join(f"{m.metrics['val/loss'].item():.2f}" for m in self.members)
        print(f"stacked epoch {self.current_epoch + 1}/{self.trainer.max_epochs} of {len(self.members)} runs: "
              f"val loss {losses}, {time.perf_counter() - self.started:.1f} s", flush=True)

    def on_validation_epoch_start(self):
        for member in self.members:  # LitVAE._reseed(-1): the same validation noise every epoch
            member.noise.manual_seed((member.seed * 1_000_003 - 1) * 1_009)
        self.val_sums, self.val_count, self.val_moments = 0.0, 0, 0.0

    def validation_step(self, batch, batch_idx):
        x, y = batch
        weight = torch.tensor([m.kl_schedule.weight(None) for m in self.members], device=self.device)
        losses, terms, mu = self._run_members(x, y, self._noise(None, len(x)), weight, None, None, backward=False)
        values, self.val_terms = self._values(losses, terms)
        self.val_sums = self.val_sums + values * len(x)
        self.val_count += len(x)
        # Σ mu, Σ mu², count per member: (M, 3, z_dim), as LitVAE's running sums
        self.val_moments = self.val_moments + torch.stack([mu.sum(1), mu.pow(2).sum(1),
                                                           torch.full_like(mu[:, 0], len(x))], dim=1)

    def on_validation_epoch_end(self):
        means = self.val_sums / self.val_count
        self.sync()
        for member, row, (total, squares, count) in zip(self.members, means, self.val_moments):
            variance = (squares - total.pow(2) / count) / (count - 1).clamp(min=1)
            values = {**{f"val/{k}": v for k, v in zip(self.val_terms, row)},
                      "val/active_units": (variance > ACTIVE_UNIT_VARIANCE).sum().float()}
            member.metrics.update(values)
            member.log({k: v.item() for k, v in values.items()}, self.global_step)
            member.call(member.figures, "on_validation_epoch_end", self.trainer, self)

    def on_train_end(self):
        self.sync()
        for member in self.members:
            member.call(member.figures, "on_train_end", self.trainer, self)

    def on_fit_end(self):
        super().on_fit_end()
        for member in self.members:
            member.call(member.summary, "on_fit_end", self.trainer, self)
            if member.logger is not None:
                member.logger.finalize("success")


class MultiStepStackedVAE(StackedVAE, MultiStepVAE):
    """``StackedVAE`` making K optimizer steps per Lightning step, with ``MultiStepVAE``'s own
    ``training_step`` (its loop calls ``_step_loss``), so that Lightning's loop state, which every
    member's checkpoint carries, is exactly a separate K-step run's."""


class MemberCheckpointIO(AtomicCheckpointIO):
    """Writes the stacked trainer's checkpoint as one Lightning checkpoint per member: the member's
    weights (``model.<name>``), its parameter group of the optimizer and its state (numbered as in
    its run), its entry of each LR scheduler's per-group lists, its config as the hyperparameters,
    its ``RunCheckpoints`` state, and the loops, epoch and step as they are (every member's).
    ``select`` says which members the next save is for;
    ``trainer.save_checkpoint(name)`` then writes ``<member>/checkpoints/<name>`` for each."""

    def __init__(self, module: StackedVAE):
        super().__init__()
        self.module, self.selected = module, []

    def select(self, members: Sequence[Member]) -> "MemberCheckpointIO":
        self.selected = list(members)
        return self

    def member_checkpoint(self, checkpoint: dict, i: int) -> dict:
        member = self.module.members[i]
        optimizers = []
        for optimizer in checkpoint["optimizer_states"]:  # the member's parameter group, numbered as in its run
            group = copy.deepcopy(optimizer["param_groups"][i])
            state = {new: copy.deepcopy(optimizer["state"][old]) for new, old in enumerate(group["params"])
                     if old in optimizer["state"]}
            optimizers.append({"state": state, "param_groups": [{**group, "params": list(range(len(group["params"])))}]})
        groups = len(self.module.members)
        schedulers = [{key: [value[i]] if isinstance(value, list) and len(value) == groups else copy.deepcopy(value)
                       for key, value in scheduler.items()}  # base_lrs, _last_lr, ...: one per group
                      for scheduler in checkpoint.get("lr_schedulers", [])]
        state = member.checkpoints.state_dict()
        return {**checkpoint, "state_dict": self.module.member_state(i), "optimizer_states": optimizers,
                **({"lr_schedulers": schedulers} if "lr_schedulers" in checkpoint else {}),
                "callbacks": {member.checkpoints.state_key: state}, "hparams_name": "config",
                "hyper_parameters": copy.deepcopy(member.config)}

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        for member in self.selected:
            split = self.member_checkpoint(checkpoint, self.module.members.index(member))
            if not all(torch.isfinite(t).all() for t in split["state_dict"].values()):
                raise VaeLabError(f"weights of {member.name} became non-finite by step {checkpoint['global_step']}; "
                                  "stopped without saving; try a lower lr")
            super().save_checkpoint(split, member.folder / "checkpoints" / path)


class StackedCheckpoints(Checkpoint):
    """Every member's ``checkpoints/last.ckpt`` after every epoch and ``checkpoints/best-epochNN.ckpt``
    at its own lowest ``val/loss``, as ``RunCheckpoints`` keeps a run's (its state, kept in each
    member's ``RunCheckpoints``, goes into the member's checkpoints); none with
    ``callbacks.checkpoints=null``. When the fit fails, each member's summary says so."""

    def __init__(self, io: MemberCheckpointIO):
        self.io = io

    def on_validation_end(self, trainer, module):
        if trainer.sanity_checking or trainer.state.fn != "fit" or module.members[0].checkpoints is None:
            return
        improved = []
        for member in module.members:
            saved, score = member.checkpoints, member.metrics["val/loss"].detach().cpu()
            saved.current_score = score
            if saved.best_model_score is None or score < saved.best_model_score:
                improved.append((member, saved.best_model_path))
                path = str(member.folder / "checkpoints" / f"best-epoch{trainer.current_epoch:02d}.ckpt")
                saved.best_model_score = saved.kth_value = score
                saved.best_model_path = saved.kth_best_model_path = path
                saved.best_k_models = {path: score}
        if improved:
            self.io.select([member for member, _ in improved])
            trainer.save_checkpoint(f"best-epoch{trainer.current_epoch:02d}.ckpt")
            for member, previous in improved:  # save_top_k=1: the earlier best goes
                if previous and previous != member.checkpoints.best_model_path:
                    Path(previous).unlink(missing_ok=True)

    def on_train_epoch_end(self, trainer, module):
        if module.members[0].checkpoints is None:  # callbacks.checkpoints=null
            return
        for member in module.members:
            member.checkpoints.last_model_path = str(member.folder / "checkpoints" / "last.ckpt")
        self.io.select(module.members)
        trainer.save_checkpoint("last.ckpt")

    def on_exception(self, trainer, module, exception):
        for member in module.members:
            member.call(member.summary, "on_exception", trainer, module, exception)


def train_stacked(cfgs: Sequence[DictConfig], callbacks: Sequence[Callback] = (), vectorized: bool | None = None,
                  workers: int | None = None) -> list[float]:
    """Train the runs ``cfgs`` (each as composed for its job, checked by ``vae_lab.config.check_config``)
    as one stacked model; returns each run's final val/loss per sample, in order. Refuses, in one
    line and before any file is written, runs that cannot stack (``check_stackable``). ``callbacks``
    join the stacked trainer's (scripts watch it with them; they see the stacked module).
    ``vectorized``: the members' step as one ``vmap`` (True) or each member's own step (False);
    None: vmap on a GPU, each member's own on the CPU. ``workers``: how many members step side by
    side, each in a thread at one of torch's threads (``StackedVAE._run_members``); None: as many
    as torch has threads on the CPU (one per core), one on a GPU. At ``workers=1`` each member's
    step is the very computation of its separate run at the same thread count (bit-exact)."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise VaeLabError(f"hydra.launcher.workers={workers} must be an integer >= 1 (or null: one per CPU thread)")
    start_process()
    configs = [upgraded(OmegaConf.to_container(cfg, resolve=True)) for cfg in cfgs]
    check_stackable(configs)
    plugins = load_plugins(cfgs[0].plugins)
    torch.set_num_threads(torch.get_num_threads())  # as train(): a fixed count, for exact results
    data = ImageDataModule(**configs[0]["data"])
    data.setup("fit")
    for config in configs:
        config["data"].update(data.source)
    members = [Member(config, data, plugins) for config in configs]
    for module in members[0].model.modules():
        if getattr(module, "track_running_stats", False):
            raise VaeLabError(f"model={configs[0]['model']['name']} has running statistics ({type(module).__name__}), "
                              f"which a stacked step would share between the members; {RUN}")
    steps = stepping(configs[0]["trainer"])
    module = (MultiStepStackedVAE if steps else StackedVAE)(members, data, plugins, **steps)
    io = MemberCheckpointIO(module)
    sweep_dir = Path(configs[0]["output_dir"]).parent
    trainer = build_trainer(configs[0]["trainer"], None, [StackedCheckpoints(io), *callbacks], sweep_dir, checkpoint_io=io)
    cpu = trainer.strategy.root_device.type == "cpu"
    module.vectorized = not cpu if vectorized is None else vectorized
    threads = torch.get_num_threads()
    module.workers = 1 if module.vectorized else min(len(members), workers or (threads if cpu else 1))
    for member in members:
        member.start()
    lrs = len({member.config.get("lr") for member in members}) > 1
    runs = ", ".join(f"beta={member.config['beta']} seed={member.seed}" + (f" lr={member.config['lr']}" if lrs else "")
                     for member in members)
    print(f"vae_lab: training {len(members)} runs as one stacked model: {runs}", flush=True)
    if module.workers > 1:
        torch.set_num_threads(1)  # each member's thread at one of torch's threads (read by each new thread)
    try:
        trainer.validate(module, verbose=False)  # val/* at step 0, as every run's curves start
        trainer.fit(module, weights_only=True)
    finally:
        torch.set_num_threads(threads)
    return [member.metrics["val/loss"].item() for member in members]
