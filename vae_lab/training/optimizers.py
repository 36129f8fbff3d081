"""The optimizers a run may choose (``optimizer=adam|adamw|sgd``, vae_lab/conf/optimizer/*.yaml):
PyTorch's own classes, registered by name in ``vae_lab.registry.OPTIMIZERS``. A config gives their
keyword arguments (``optimizer.weight_decay=0.01``), checked against each class's signature; the
parameters are the model's (the registry's context). A plugin registers another the same way:
``OPTIMIZERS.register("lion", Lion)``."""
import torch

from vae_lab.registry import OPTIMIZERS

OPTIMIZERS.register("adam", torch.optim.Adam)
OPTIMIZERS.register("adamw", torch.optim.AdamW)
OPTIMIZERS.register("sgd", torch.optim.SGD)
