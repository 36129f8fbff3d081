"""``loss=logistic``: the discretized mixture of logistics of PixelCNN++ (Salimans et al. 2017), as
VDVAE uses it (Child 2021): each pixel position draws one of K components (weights π_k), and in it
each channel c is a logistic of mean μ_kc and scale s_kc, discretized to the 256 levels
(``vae_lab.likelihoods.discretized``); the colour channels depend on each other as in those papers,
the mean of channel c moved linearly by the levels of the channels before it,

    m_kc = μ_kc + Σ_{j<c} α_kcj · x_j           (α = tanh(·); for RGB: G on R, B on R and G)
    log p(x|z) = Σ_pixels log Σ_k π_k Π_c [σ((x_c + 1/510 − m_kc)/s_kc) − σ((x_c − 1/510 − m_kc)/s_kc)]

in nats of a probability over the levels (bits per dimension: ÷ C·H·W·ln 2). The decoder gives
K·(1 + 2C + C(C−1)/2) numbers per pixel position: 3K for grey, 10K for colour images, laid out as
the K mixture logits, then μ, log s and α, each K·C (α: K·C(C−1)/2) channels. Pixels are in [0, 1]
here (the papers' [−1, 1] halved), so the floor of log s is VDVAE's −7 less log 2."""
import math

import torch
import torch.nn.functional as F

from vae_lab.arguments import PositiveInt
from vae_lab.likelihoods.base import Likelihood
from vae_lab.likelihoods.discretized import clamped_mean, draw_index, levels, log_bin_mass, nearest_level
from vae_lab.registry import LIKELIHOODS

MIN_LOG_SCALE = -7.0 - math.log(2)


@LIKELIHOODS.register("logistic_mixture")
class LogisticMixture(Likelihood):
    discrete_8bit = True

    def __init__(self, components: PositiveInt = 10):
        self.components = components

    def outputs(self, channels):
        return self.components * (1 + 2 * channels + channels * (channels - 1) // 2)

    def split(self, logits):
        """(B, outputs(C), H, W) -> log π (B, K, H, W), μ and s (B, K, C, H, W), α (B, K, C(C−1)/2, H, W)."""
        k, (batch, _, height, width) = self.components, logits.shape
        channels = round((math.sqrt(8 * logits.shape[1] / k + 1) - 3) / 2)  # outputs(C)/K = (C + 1)(C + 2)/2
        pairs = channels * (channels - 1) // 2
        weights, means, log_scales, coefficients = logits.split([k, k * channels, k * channels, k * pairs], dim=1)
        scales = log_scales.reshape(batch, k, channels, height, width).clamp(min=MIN_LOG_SCALE).exp()
        return (F.log_softmax(weights, dim=1), means.reshape(batch, k, channels, height, width), scales,
                torch.tanh(coefficients).reshape(batch, k, pairs, height, width))

    @staticmethod
    def channel_by_channel(means, coefficients, value):
        """For c = 0, 1, …: m_c = μ_c + Σ_{j<c} α_cj · v_j and v_c = value(c, m_c), what stands for
        channel c's level in the channels after it (its own level in log_prob, its mean in mean, a
        draw in sample); channels along dimension −3 of each tensor. Returns the lists [m_c], [v_c]."""
        shifted, values, pair = [], [], 0
        for c in range(means.shape[-3]):
            m = means[..., c, :, :]
            for j in range(c):
                m = m + coefficients[..., pair, :, :] * values[j]
                pair += 1
            shifted.append(m)
            values.append(value(c, m))
        return shifted, values

    def log_prob(self, logits, x):
        log_weights, means, scales, coefficients = self.split(logits)
        x = (levels(x).to(logits.dtype) / 255).unsqueeze(1)  # (B, 1, C, H, W): one x for every component
        means, _ = self.channel_by_channel(means, coefficients, lambda c, _: x[:, :, c])
        per_component = log_bin_mass(torch.stack(means, dim=2), scales, x, F.logsigmoid).sum(2)  # channels: a product
        return torch.logsumexp(log_weights + per_component, dim=1).flatten(1).sum(1)

    def mean(self, logits):
        """Σ_k π_k E_k[x_c]: each component's mean pixel value (``clamped_mean``), which for colour
        images stands for its level in the channels after it: the mixture's mean for grey images,
        and for colour ones where no channel's draws reach beyond 0 or 1 (the shift is linear)."""
        log_weights, means, scales, coefficients = self.split(logits)
        _, expected = self.channel_by_channel(means, coefficients,
                                              lambda c, m: clamped_mean(m, scales[:, :, c], F.softplus))
        return (log_weights.exp().unsqueeze(2) * torch.stack(expected, dim=2)).sum(1)

    def sample(self, logits, generator=None):
        log_weights, means, scales, coefficients = self.split(logits)
        chosen = draw_index(log_weights.movedim(1, -1), generator)[:, None, None]  # (B, 1, 1, H, W): one per position
        means, scales, coefficients = (t.gather(1, chosen.expand(-1, 1, t.shape[2], -1, -1)).squeeze(1)
                                       for t in (means, scales, coefficients))

        def draw(c, m):  # a logistic draw of channel c, m + s·logit(u), at its level
            u = torch.rand(m.shape, generator=generator, dtype=m.dtype).to(m.device).clamp(1e-6, 1 - 1e-6)
            return nearest_level(m + scales[:, c] * (torch.log(u) - torch.log1p(-u)))

        return torch.stack(self.channel_by_channel(means, coefficients, draw)[1], dim=1)
