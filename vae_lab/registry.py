"""The registries through which a config, and so a file, chooses a component: by a registered
name, never by naming code.

    from vae_lab.registry import MODELS

    @MODELS.register("resnet")
    class ResNetVAE(VAE):
        def __init__(self, z_dim: PositiveInt = 20, blocks: PositiveInt = 2, *, image_shape: tuple[int, int, int]): ...

A component declares its settings as typed keyword arguments (int, float, bool, str, lists of
them; bounds through ``vae_lab.arguments``), and each value a config gives is checked against
them before a run starts. Arguments that come from the run rather than from the user (a model's
``image_shape`` and ``num_classes``, a prior's ``z_dim`` and ``model``) are the registry's *context*: passed when
the component's signature asks for them, refused as settings.

A user's module registers its components when it is imported; it is named on the command line
(``plugins=[my_lab.models]``) or installed with an entry point in the group ``vae_lab.plugins``.
A config read from a file (a checkpoint's) only ever picks among what is registered: a plugin's
component read back without the plugin stops with one line saying which plugin to load.
"""
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Iterable, Mapping

from vae_lab.arguments import annotations, check_settings
from vae_lab.errors import VaeLabError

ENTRY_POINTS = "vae_lab.plugins"  # the entry-point group of installed plugin packages


class Registry:
    """Names -> components of one kind (classes, or for the optimizers torch's own classes);
    ``key`` is the config key that chooses one, ``kind`` the noun the messages use. vae_lab's own
    components are registered when ``builtins`` (a module) is first imported."""

    def __init__(self, key: str, builtins: str, kind: str | None = None):
        self.key, self.builtins, self.kind = key, builtins, kind or key
        self.entries: dict[str, type] = {}

    def register(self, name: str, component: type | None = None):
        """Class decorator: the class becomes ``<key>=<name>``; ``register(name, cls)`` registers a
        class defined elsewhere. A name is registered once."""
        def add(cls: type) -> type:
            if name in self.entries and self.entries[name] is not cls:
                raise ValueError(f"{self.kind} {name} is registered already (by {self.entries[name].__module__})")
            self.entries[name] = cls
            return cls
        return add if component is None else add(component)

    def names(self) -> list[str]:
        importlib.import_module(self.builtins)
        return list(self.entries)

    def get(self, name, plugins: Iterable[str] = (), chosen_by: str | None = None) -> type:
        """The class registered as ``name``; VaeLabError naming what is registered otherwise
        (and, for a name read from a run, the ``plugins`` that run was trained with).
        ``chosen_by``: what chose the name, for the message (default ``<key>.name=<name>``)."""
        names = self.names()
        if isinstance(name, str) and name in self.entries:
            return self.entries[name]
        hint = (f"; it was trained with plugins=[{','.join(plugins)}]: give the same plugins=[...] to read it"
                if plugins else "; a component of your own is loaded with plugins=[your.module]")
        chosen_by = chosen_by or f"{self.key}.name={name}"
        raise VaeLabError(f"{chosen_by} is not a registered {self.kind} (registered: {', '.join(names)}){hint}")

    def settings(self, name: str, context: Iterable[str] = ()) -> dict:
        """The settings of ``name``: its keyword arguments (-> annotation) less the context ones."""
        return {key: hint for key, hint in annotations(self.get(name))[0].items() if key not in context}

    def build(self, config: Mapping | str, plugins: Iterable[str] = (), key: str | None = None, **context):
        """``{"name": registered name, setting: value, ...}`` (or just the name) -> the component,
        each setting checked by ``vae_lab.arguments.check_settings``; ``context`` values go to the
        arguments of those names that the component takes. ``key``: where the config stands, for
        messages (default: the registry's key). VaeLabError naming the first bad key."""
        key = key or self.key
        arguments = {"name": config} if isinstance(config, str) else dict(config)
        name = arguments.pop("name", None)
        for setting, value in arguments.items():
            if str(setting).startswith("_"):  # _target_, _args_, _partial_: how Hydra would name code
                raise VaeLabError(f"{key}.{setting}={value} names code; a {self.kind} is chosen by "
                                  f"{key}.name, one of {', '.join(self.names())}")
        cls = self.get(name, plugins, f"{key}.name={name}")
        check_settings(cls, arguments, key, f"{self.kind} {name}", context)
        taken = annotations(cls)[0]
        given = {setting: value for setting, value in context.items() if setting in taken}
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in arguments.items()}, **given)
        except (ValueError, TypeError) as error:  # the component's own check of its settings together, or against the data
            raise VaeLabError(f"{self.kind} {name}: {' '.join(str(error).split())}") from None


def name_of(config: Mapping | str) -> str:
    """The registered name a component's config chooses (``"bce"`` or ``{"name": "bce", ...}``)."""
    return config if isinstance(config, str) else config["name"]


def load_plugins(modules: Iterable[str] = ()) -> list[str]:
    """Import the installed plugins (entry-point group ``vae_lab.plugins``) and ``modules`` (names
    importable from the current folder or PYTHONPATH, given by the user, never read from a file),
    so that what they register can be chosen; returns the modules' names."""
    modules = list(modules or ())
    for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
        try:
            entry.load()
        except Exception as error:
            raise VaeLabError(f"the installed plugin {entry.name} ({entry.value}) fails to import: "
                              f"{type(error).__name__}: {error}") from None
    if modules and os.getcwd() not in sys.path:  # as python -m does; python train.py adds only its own folder
        sys.path.append(os.getcwd())
    for module in modules:
        if not isinstance(module, str) or not all(part.isidentifier() for part in module.split(".")):
            raise VaeLabError(f"plugins=[{module}]: a plugin is a module name such as my_lab.models")
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise VaeLabError(f"plugins=[{module}]: cannot import it ({error}); run from the folder that holds "
                              "it or add that folder to PYTHONPATH") from None
        except Exception as error:  # the plugin's own code failed: say where, in one line
            raise VaeLabError(f"plugins=[{module}]: importing it failed: {type(error).__name__}: {error}") from None
    return modules


# the components of a model, and the data
MODELS = Registry("model", "vae_lab.models")
PRIORS = Registry("prior", "vae_lab.priors")
LIKELIHOODS = Registry("likelihood", "vae_lab.likelihoods")
DATASETS = Registry("data", "vae_lab.data")
# how it trains
LOSSES = Registry("loss", "vae_lab.training.losses")
KL_SCHEDULES = Registry("kl_schedule", "vae_lab.training.schedules", kind="KL schedule")
LR_SCHEDULES = Registry("lr_schedule", "vae_lab.training.schedules", kind="learning-rate schedule")
OPTIMIZERS = Registry("optimizer", "vae_lab.training.optimizers")
CALLBACKS = Registry("callbacks", "vae_lab.training.callbacks", kind="callback")
# how its samples' latents are drawn
SAMPLERS = Registry("sampler", "vae_lab.evaluation.samplers")
