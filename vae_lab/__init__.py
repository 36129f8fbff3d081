"""vae_lab: config-driven variational autoencoder experiments on handwritten digits."""
