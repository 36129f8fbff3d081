"""What every likelihood provides. The decoder gives one number per pixel (``logits``, the shape of
the images, (B, C, H, W)); a likelihood says what they mean:

    log_prob(logits, x)        log p(x|z) per image (B,), summed over the pixels (nats for a
                               discrete x, a log-density for a continuous one)
    reconstruction(logits, x)  the reconstruction term the loss minimises, per image (B,);
                               −log_prob by default, a likelihood may drop constants
    mean(logits)               the image the decoder expects, pixels in [0, 1]: what pictures,
                               samples and the classifier see

The loss, the IWAE bound, the metrics and every picture call these, never a formula of their own.
"""
import torch


class Likelihood:
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
