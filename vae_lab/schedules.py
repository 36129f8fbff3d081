"""How the KL term and the learning rate move as training goes.

A KL schedule turns the batch-mean KL (nats, a scalar tensor) into the loss's KL term at a point
of training given in epochs (a float: steps / steps per epoch); ``epoch=None`` means the end of
the schedule, where validation losses are measured so that epochs compare. ``logged(epoch)`` is
what the run logs as ``train/beta`` (and ``train/capacity``).

An LR schedule is called with the optimizer and the run's number of optimizer steps and returns a
``torch.optim.lr_scheduler`` stepped every step, or None for a constant learning rate.
"""
import torch


class Constant:
    """β · KL throughout (β = 1: the ELBO; β > 1: a β-VAE, Higgins et al. 2017)."""

    def __init__(self, beta: float = 1.0):
        if not beta >= 0:
            raise ValueError(f"beta={beta} must be >= 0")
        self.beta = beta

    def weight(self, epoch: float | None) -> float:
        return self.beta

    def term(self, kl: torch.Tensor, epoch: float | None = None) -> torch.Tensor:
        return self.weight(epoch) * kl

    def logged(self, epoch: float | None) -> dict[str, float]:
        return {"beta": self.weight(epoch)}


class FixedLR:
    """No schedule: the configured learning rate throughout."""

    def __call__(self, optimizer, trainer):
        return None
