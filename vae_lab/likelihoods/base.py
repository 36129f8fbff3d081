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
    sample(logits, generator)  an image drawn from p(x|z) (B, C, H, W) (default: the mean); pictures
                               show one beside the mean where the likelihood draws its own
    discrete_8bit              True when log_prob is a probability over the 256 levels of 8-bit
                               pixels (vae_lab.likelihoods.discretized): its NLLs are also reported
                               in bits per dimension

The model owns its likelihood (``model.likelihood``, built once by ``vae_lab.models.build_model``):
the loss, the IWAE bound, the metrics and every picture call these through it, never a formula of
their own. A likelihood is a module of the model, so one with parameters trains with it and
travels in its checkpoint.
"""
import torch
from torch import nn


class Likelihood(nn.Module):
    discrete_8bit = False

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

    def sample(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mean(logits)

    def flat_log_prob(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) (B, n) of the decoder outputs (B, n, outputs(C), H, W) of n latents per image
        against the images x (B, C, H, W), as the IWAE bound asks. A likelihood may override it to
        avoid the n copies of x made here."""
        images, n = logits.shape[:2]
        copies = x.unsqueeze(1).expand(images, n, *x.shape[1:])
        return self.log_prob(logits.flatten(0, 1), copies.flatten(0, 1)).view(images, n)
