"""``loss=bce``: every pixel a Bernoulli variable with probability sigmoid(logit); −log p(x|z) is the
binary cross-entropy summed over the pixels, in nats. A likelihood only for binary x: on grey
levels it is a cross-entropy, not comparable to NLLs on binarized digits."""
import torch
import torch.nn.functional as F

from vae_lab.likelihoods.base import Likelihood
from vae_lab.registry import LIKELIHOODS


@LIKELIHOODS.register("bce")
class Bernoulli(Likelihood):
    def log_prob(self, logits, x):
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)

    def mean(self, logits):
        return torch.sigmoid(logits)

    def flat_log_prob(self, logits, x):
        # −BCE = x·l − softplus(l); the x·l sum as one batched product over the flat pixels, x never copied
        logits = logits.flatten(2)
        return torch.bmm(logits, x.flatten(1).unsqueeze(-1)).squeeze(-1) - F.softplus(logits).sum(-1)
