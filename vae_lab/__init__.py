"""vae_lab: config-driven variational autoencoder experiments on handwritten digits.

From Python: ``vae_lab.train_run("model=conv", epochs=5)`` and ``vae_lab.load_run(folder)``
(vae_lab/api.py), imported on first use so that the command line's checks stay fast.
"""
API = ("train_run", "load_run", "Run")


def __getattr__(name: str):
    if name in API:
        from vae_lab import api

        return getattr(api, name)
    raise AttributeError(f"module 'vae_lab' has no attribute {name!r}")
