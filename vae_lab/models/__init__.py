"""One model per file, all behind the interface of ``vae_lab.models.base.VAE``."""
from vae_lab.models.base import VAE
from vae_lab.models.conv import ConvVAE
from vae_lab.models.cvae import CVAE
from vae_lab.models.dense import DenseVAE

__all__ = ["VAE", "DenseVAE", "ConvVAE", "CVAE"]
