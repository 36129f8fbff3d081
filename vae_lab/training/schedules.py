"""How the KL term and the learning rate move as training goes.

A KL schedule turns the batch-mean KL (nats, a scalar tensor) into the loss's KL term at a point
of training given in epochs (a float: steps / steps per epoch); ``epoch=None`` means the end of
the schedule, where validation losses are measured so that epochs compare. ``logged(epoch)`` is
what the run logs as ``train/beta`` (and ``train/capacity``).

An LR schedule is called with the optimizer and the trainer and returns a
``torch.optim.lr_scheduler`` stepped after every optimizer step, or None for a constant learning
rate. Its factor is a function of ``trainer.global_step`` alone, so a resumed run continues the
schedule exactly where it stopped.

Both kinds are registered (``vae_lab.registry.KL_SCHEDULES``, ``LR_SCHEDULES``) under the names of
their config files: ``kl_schedule=constant|linear_warmup|cyclical|capacity``, ``lr_schedule=constant|cosine``.
"""
import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from vae_lab.arguments import NonNegative, PositiveFloat
from vae_lab.registry import KL_SCHEDULES, LR_SCHEDULES


@KL_SCHEDULES.register("constant")
class Constant:
    """β · KL throughout (β = 1: the ELBO; β > 1: a β-VAE, Higgins et al. 2017)."""

    def __init__(self, beta: NonNegative = 1.0):
        if not beta >= 0:
            raise ValueError(f"beta={beta} must be >= 0")
        self.beta = beta

    def weight(self, epoch: float | None) -> float:
        """β at this point of training (the target β when epoch is None): the weight of the KL
        term, and of the prior ratio in an importance-weighted loss (``loss.iwae_k`` > 1)."""
        return self.beta

    def term(self, kl: torch.Tensor, epoch: float | None = None) -> torch.Tensor:
        return self.weight(epoch) * kl

    def logged(self, epoch: float | None) -> dict[str, float]:
        return {"beta": self.weight(epoch)}


@KL_SCHEDULES.register("linear_warmup")
class LinearWarmup(Constant):
    """β rises linearly from 0 to β over the first ``warmup_epochs`` epochs, then stays (KL
    annealing: Bowman et al. 2016; "warm-up", Sønderby et al. 2016)."""

    def __init__(self, beta: NonNegative = 1.0, warmup_epochs: PositiveFloat = 10.0):
        super().__init__(beta)
        if not warmup_epochs > 0:
            raise ValueError(f"warmup_epochs={warmup_epochs} must be > 0")
        self.warmup_epochs = warmup_epochs

    def weight(self, epoch: float | None) -> float:
        return self.beta if epoch is None else self.beta * min(1.0, epoch / self.warmup_epochs)


@KL_SCHEDULES.register("cyclical")
class Cyclical(Constant):
    """β repeats a cycle of ``cycle_epochs`` epochs: 0 rising linearly to β over the first ``ramp``
    of the cycle, then β for the rest (cyclical annealing, Fu et al. 2019)."""

    def __init__(self, beta: NonNegative = 1.0, cycle_epochs: PositiveFloat = 10.0, ramp: PositiveFloat = 0.5):
        super().__init__(beta)
        if not (cycle_epochs > 0 and 0 < ramp <= 1):
            raise ValueError(f"cycle_epochs={cycle_epochs} must be > 0 and ramp={ramp} in (0, 1]")
        self.cycle_epochs, self.ramp = cycle_epochs, ramp

    def weight(self, epoch: float | None) -> float:
        if epoch is None:
            return self.beta
        within = (epoch % self.cycle_epochs) / self.cycle_epochs  # 0 ... 1 through each cycle
        return self.beta * min(1.0, within / self.ramp)


@KL_SCHEDULES.register("capacity")
class Capacity(Constant):
    """β · |KL − C(t)|: the KL is pulled towards a capacity C that rises linearly from 0 to
    ``capacity`` nats over ``capacity_epochs`` epochs (capacity-controlled β-VAE, Burgess et al.
    2018, who use a large β, their γ). Logged as ``train/beta`` (β) and ``train/capacity`` (C)."""

    def __init__(self, beta: NonNegative = 100.0, capacity: NonNegative = 25.0, capacity_epochs: PositiveFloat = 10.0):
        super().__init__(beta)
        if not (capacity >= 0 and capacity_epochs > 0):
            raise ValueError(f"capacity={capacity} must be >= 0 and capacity_epochs={capacity_epochs} > 0")
        self.capacity, self.capacity_epochs = capacity, capacity_epochs

    def weight(self, epoch: float | None) -> float:
        return 1.0  # the KL term is not β·KL here; an importance-weighted loss uses the plain prior ratio

    def target(self, epoch: float | None) -> float:
        """C(t), nats."""
        return self.capacity if epoch is None else self.capacity * min(1.0, epoch / self.capacity_epochs)

    def term(self, kl: torch.Tensor, epoch: float | None = None) -> torch.Tensor:
        return self.beta * (kl - self.target(epoch)).abs()

    def logged(self, epoch: float | None) -> dict[str, float]:
        return {"beta": self.beta, "capacity": self.target(epoch)}


@LR_SCHEDULES.register("constant")
class FixedLR:
    """No schedule: the configured learning rate throughout."""

    def __call__(self, optimizer, trainer):
        return None


@LR_SCHEDULES.register("cosine")
class CosineLR:
    """The learning rate rises linearly from 0 over ``warmup_epochs`` epochs, then falls along a
    half cosine to ``final_fraction`` of itself at the end of training (Loshchilov & Hutter 2017,
    without restarts)."""

    def __init__(self, warmup_epochs: NonNegative = 0.0, final_fraction: NonNegative = 0.0):
        if not (warmup_epochs >= 0 and 0 <= final_fraction <= 1):
            raise ValueError(f"warmup_epochs={warmup_epochs} must be >= 0 and final_fraction={final_fraction} in [0, 1]")
        self.warmup_epochs, self.final_fraction = warmup_epochs, final_fraction

    def factor(self, epoch: float, epochs: float) -> float:
        """The learning rate's multiplier at a point of training (in epochs) of ``epochs``."""
        if epoch < self.warmup_epochs:
            return epoch / self.warmup_epochs
        progress = min(1.0, (epoch - self.warmup_epochs) / max(epochs - self.warmup_epochs, 1e-9))
        return self.final_fraction + (1 - self.final_fraction) * 0.5 * (1 + math.cos(math.pi * progress))

    def __call__(self, optimizer, trainer):
        # trainer.num_training_batches is known once training starts (inf before: epoch 0 then)
        def factor(_):
            return self.factor(trainer.global_step / trainer.num_training_batches, trainer.max_epochs)

        return LambdaLR(optimizer, factor)
