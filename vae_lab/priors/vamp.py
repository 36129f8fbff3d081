"""``prior=vamp``: the VampPrior of Tomczak & Welling (2018), "VAE with a VampPrior",

    p(z) = (1/K) Σ_k q(z | u_k),

the mixture of the model's own posteriors at K learned pseudo-inputs u_k: images of the data's
shape (C, H, W), pixels σ(a_k) in (0, 1) for learned logits a_k drawn from N(0, 1) with the run's
seed (the paper's random initialisation; a sigmoid rather than its hardtanh, so no pixel stops
learning at an edge). The pseudo-inputs train with the model and travel in its checkpoint; the
encoder is the model's own, so its weights get the prior's gradient too. No closed-form KL: the
loss and the metrics estimate it from their draws of z (``Prior.kl``). A conditional model's
encoder needs labels, which pseudo-inputs do not have: it is refused.
"""
import math

import torch
from torch import nn

from vae_lab.arguments import PositiveInt
from vae_lab.priors.base import Prior
from vae_lab.priors.mixture import mixture_log_prob, mixture_sample
from vae_lab.registry import PRIORS


@PRIORS.register("vamp")
class VampPrior(Prior):
    def __init__(self, z_dim: int, components: PositiveInt = 500, *, model: nn.Module):
        super().__init__(z_dim)
        if model.conditional:
            raise ValueError("the conditional model's encoder needs labels, which its pseudo-inputs do not have; "
                             "use prior=standard or prior=mog with it")
        self.pseudo_logits = nn.Parameter(torch.randn(components, *model.image_shape))
        # A reference, not a submodule: the prior is the model's submodule, and the encoder's weights
        # belong to the model (its state dict and optimizer hold them once).
        self.encode = model.encode_top  # a model with a layer above its codes encodes to the top

    def pseudo_inputs(self) -> torch.Tensor:
        """The K pseudo-inputs u_k (K, C, H, W), pixels in (0, 1)."""
        return torch.sigmoid(self.pseudo_logits)

    def components(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Means and log-variances (K, z_dim) of the mixture's components q(z | u_k)."""
        return self.encode(self.pseudo_inputs())

    def log_prob(self, z):
        means, log_vars = self.components()
        return mixture_log_prob(z, means, log_vars, means.new_full((len(means),), -math.log(len(means))))

    def sample(self, n, generator=None, temperature=1.0):
        means, log_vars = self.components()
        return mixture_sample(n, means, log_vars, torch.ones(len(means)), generator, temperature)
