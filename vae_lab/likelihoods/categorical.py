"""``loss=categorical``: every pixel value a 256-way categorical over its levels, the softmax of
PixelRNN and PixelCNN (van den Oord et al. 2016), each channel on its own:

    log p(x|z) = Σ_i log softmax(ℓ_i)[k_i],      k_i = round(255·x_i),

in nats of a probability over the levels (bits per dimension: ÷ C·H·W·ln 2). As in those papers the
256 logits of a value come from a linear map shared by every pixel (their last 1×1 convolution):
the decoder gives ``features`` numbers per channel and pixel position, and this likelihood maps
them to ℓ_i (256·(features + 1) weights of its own, trained with the model). A decoder layer of
256 outputs per value instead would need a 256·C·H·W-wide last layer: 51 million weights after the
dense model's 256 units on 28×28 images, too many for the conv model's dense decoder on 32×32
colour images (its ``MAX_DECODER_WEIGHTS``)."""
import torch
import torch.nn.functional as F
from torch import nn

from vae_lab.arguments import PositiveInt
from vae_lab.likelihoods.base import Likelihood
from vae_lab.likelihoods.discretized import LEVELS, draw_index, levels
from vae_lab.registry import LIKELIHOODS


@LIKELIHOODS.register("categorical")
class Categorical(Likelihood):
    discrete_8bit = True

    def __init__(self, features: PositiveInt = 16):
        self.features = features
        self.readout = nn.Linear(features, LEVELS)

    def outputs(self, channels):
        return self.features * channels

    def log_softmax(self, logits):
        """(B, features·C, H, W) -> log-probabilities of the levels, (B, C, H, W, 256)."""
        batch, _, height, width = logits.shape
        features = logits.view(batch, -1, self.features, height, width).movedim(2, -1)
        return F.log_softmax(self.readout(features), dim=-1)

    def log_prob(self, logits, x):
        return self.log_softmax(logits).gather(-1, levels(x).unsqueeze(-1)).flatten(1).sum(1)

    def mean(self, logits):
        values = torch.linspace(0, 1, LEVELS, dtype=logits.dtype, device=logits.device)
        return self.log_softmax(logits).exp() @ values

    def sample(self, logits, generator=None):
        return draw_index(self.log_softmax(logits), generator).to(logits.dtype) / (LEVELS - 1)
