"""The configs of vae_lab, read by Hydra as files of this package: conf/<group>/<option>.yaml."""
