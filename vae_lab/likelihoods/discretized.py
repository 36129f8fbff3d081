"""What the likelihoods of 8-bit pixels share (``gaussian``, ``logistic_mixture``, ``categorical``).

A pixel value x in [0, 1] stands for the level k = round(255·x) of 256 (x = k/255 for 8-bit data;
other values are taken at their nearest level). These likelihoods are distributions over the 256
levels, so log p(x|z) is the log-probability of the image's levels, in nats, and

    bits per dimension = −log p(x) / (C·H·W · ln 2),

the unit of PixelRNN, PixelCNN++ and VDVAE's tables (van den Oord et al. 2016; Salimans et al. 2017;
Child 2021): no dequantization, since the model is discrete.

A continuous distribution of mean μ and scale s is discretized as in PixelCNN++: level k gets the
mass of [x − 1/510, x + 1/510], the first level all of (−∞, 1/510] and the last all of
[1 − 1/510, ∞), so the 256 masses sum to 1 (``log_bin_mass``); a draw is the level its continuous
draw falls in."""
import math

import torch

LEVELS = 256
HALF_BIN = 0.5 / (LEVELS - 1)  # half the spacing of the levels k/255


def levels(x: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] -> their levels k (int64, 0..255)."""
    return (x * (LEVELS - 1)).round().long()


def nearest_level(y: torch.Tensor) -> torch.Tensor:
    """Values on the real line -> the pixel value k/255 of the level whose bin holds them."""
    return (y.clamp(0, 1) * (LEVELS - 1)).round() / (LEVELS - 1)


def log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(−d)) for d > 0, accurate for small and large d (Mächler 2012); each branch sees
    only its own range, so neither is infinite where the other is taken (nor is its gradient)."""
    small = d < math.log(2)
    return torch.where(small, torch.log(-torch.expm1(-d.clamp(max=math.log(2)))),
                       torch.log1p(-torch.exp(-d.clamp(min=math.log(2)))))


def log_bin_mass(mean: torch.Tensor, scale: torch.Tensor, x: torch.Tensor, log_cdf) -> torch.Tensor:
    """log P(level of x) in nats, elementwise, for the distribution of ``mean`` and ``scale`` whose
    standardised form is symmetric about 0 with log-CDF ``log_cdf`` (``torch.special.log_ndtr``,
    ``F.logsigmoid``), discretized as the module docstring says.

    F(b) − F(a) is taken as F(b)·(1 − F(a)/F(b)) on the side of the distribution where the CDF is
    small (by symmetry, F(b) − F(a) = F(−a) − F(−b)): no cancellation in the tails, so a pixel far
    from its mean keeps a finite log-probability and gradient (PixelCNN++ needed a fallback here).
    The edge levels use the edges' own formulas, so nothing infinite enters, not even a branch
    ``torch.where`` leaves out (its gradient would be NaN)."""
    centre = levels(x).to(mean.dtype) / (LEVELS - 1)
    lower, upper = (centre - HALF_BIN - mean) / scale, (centre + HALF_BIN - mean) / scale
    right = lower + upper > 0
    a, b = torch.where(right, -upper, lower), torch.where(right, -lower, upper)
    log_b = log_cdf(b)
    # log F(b) − log F(a) > 0 but may round to 0 when the bin is a sliver of a very wide distribution
    middle = log_b + log1mexp((log_b - log_cdf(a)).clamp(min=1e-12))
    first, last = centre < HALF_BIN, centre > 1 - HALF_BIN
    return torch.where(first, log_cdf(upper), torch.where(last, log_cdf(-lower), middle))


def clamped_mean(mean: torch.Tensor, scale: torch.Tensor, cdf_integral) -> torch.Tensor:
    """E[min(max(Y, 0), 1)] for Y of ``mean`` and ``scale`` whose standardised CDF F has the
    antiderivative ``cdf_integral`` G (logistic: softplus; Gaussian: z·Φ(z) + φ(z)):
    1 − ∫_0^1 F((t − μ)/s) dt = 1 − s·[G((1 − μ)/s) − G(−μ/s)]. The discretized distribution's mean
    differs from it by less than half a level: the mean of the pixel values it draws."""
    return 1 - scale * (cdf_integral((1 - mean) / scale) - cdf_integral(-mean / scale))


def draw_index(log_probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A draw from the categorical distribution of the log-probabilities along the last dimension:
    one uniform per draw (drawn on the CPU from ``generator``) through the inverse of its CDF."""
    cdf = log_probs.softmax(-1).cumsum(-1)
    u = torch.rand((*cdf.shape[:-1], 1), generator=generator, dtype=cdf.dtype).to(cdf.device)
    return torch.searchsorted(cdf, u * cdf[..., -1:]).squeeze(-1).clamp(max=cdf.shape[-1] - 1)
