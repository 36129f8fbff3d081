"""What every likelihood p(x|z) provides. The decoder gives ``outputs(C)`` numbers per pixel
position for images of C channels (``logits``, (B, outputs(C), H, W); one per pixel value, the
shape of the images, unless a likelihood says otherwise); a likelihood says what they mean:

    outputs(channels)          decoder outputs per pixel position (default: one per channel); the
                               model builds its last layer from it
    log_prob(logits, x)        log p(x|z) per image (B,), summed over the pixels (nats for a
                               discrete x, a log-density for a continuous one)
    reconstruction(logits, x)  the reconstruction term the loss minimises, per image (B,);
                               −log_prob by default, a likelihood may drop constants
    mean(logits)               the image the decoder expects (B, C, H, W), pixels in [0, 1]: what
                               pictures, samples and the classifier see

The model owns its likelihood (``model.likelihood``, built once by ``vae_lab.models.build_model``):
the loss, the IWAE bound, the metrics and every picture call these through it, never a formula of
their own. A likelihood is a module of the model, so one with parameters trains with it and
travels in its checkpoint.
"""
import torch
from torch import nn


class Likelihood(nn.Module):
    def __new__(cls, *args, **kwargs):
        # A likelihood of one's own may set its settings in an __init__ that never calls
        # super().__init__() (docs/extending.md showed one so); the module's bookkeeping is made
        # here, before any __init__ runs, so that it is a well-formed submodule of the model all the same.
        likelihood = super().__new__(cls)
        nn.Module.__init__(likelihood)
        return likelihood

    def __init__(self):
        pass  # nn.Module.__init__ ran in __new__; running it again would drop what a subclass set before it

    def outputs(self, channels: int) -> int:
        return channels

    def log_prob(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reconstruction(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return -self.log_prob(logits, x)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def flat_log_prob(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) (B, n) of logits (B, n, D) of n latents per image against images x (B, D), flat
        over the D pixels. A likelihood may override it to avoid the n copies of x made here."""
        images, n = logits.shape[:2]
        return self.log_prob(logits.flatten(0, 1), x.unsqueeze(1).expand_as(logits).flatten(0, 1)).view(images, n)
