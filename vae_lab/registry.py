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
import inspect
import os
import sys
import typing
from collections.abc import Iterable, Mapping

from vae_lab.arguments import describe, fits
from vae_lab.errors import VaeLabError

ENTRY_POINTS = "vae_lab.plugins"  # the entry-point group of installed plugin packages


class Registry:
    """Names -> component classes of one kind (``kind`` is the config key that chooses one).
    vae_lab's own components are registered when ``builtins`` (a module) is first imported."""

    def __init__(self, kind: str, builtins: str):
        self.kind, self.builtins = kind, builtins
        self.entries: dict[str, type] = {}

    def register(self, name: str):
        """Class decorator: the class becomes ``<kind>=<name>``. A name is registered once."""
        def add(cls: type) -> type:
            if name in self.entries and self.entries[name] is not cls:
                raise ValueError(f"{self.kind} {name} is registered already (by {self.entries[name].__module__})")
            self.entries[name] = cls
            return cls
        return add

    def names(self) -> list[str]:
        importlib.import_module(self.builtins)
        return list(self.entries)

    def get(self, name, plugins: Iterable[str] = ()) -> type:
        """The class registered as ``name``; VaeLabError naming what is registered otherwise
        (and, for a name read from a run, the ``plugins`` that run was trained with)."""
        names = self.names()
        if isinstance(name, str) and name in self.entries:
            return self.entries[name]
        hint = (f"; it was trained with plugins=[{','.join(plugins)}]: give the same plugins=[...] to read it"
                if plugins else "; a component of your own is loaded with plugins=[your.module]")
        raise VaeLabError(f"{self.kind}.name={name} is not a registered {self.kind} (registered: {', '.join(names)}){hint}")

    def settings(self, name: str, context: Iterable[str] = ()) -> dict[str, inspect.Parameter]:
        """The settings of ``name`` (its keyword arguments less the context ones)."""
        return {key: p for key, p in signature(self.get(name)).items() if key not in context}

    def build(self, config: Mapping | str, plugins: Iterable[str] = (), **context):
        """``{"name": registered name, setting: value, ...}`` (or just the name) -> the component,
        each setting checked against its annotation; ``context`` values go to the arguments of that
        name. VaeLabError naming the first bad key as ``<kind>.<key>``."""
        arguments = {"name": config} if isinstance(config, str) else dict(config)
        name = arguments.pop("name", None)
        for key, value in arguments.items():
            if str(key).startswith("_"):  # _target_, _args_, _partial_: how Hydra would name code
                raise VaeLabError(f"{self.kind}.{key}={value} names code; a {self.kind} is chosen by "
                                  f"{self.kind}.name, one of {', '.join(self.names())}")
        cls = self.get(name, plugins)
        parameters = signature(cls)
        for key, value in arguments.items():
            if key in context:
                raise VaeLabError(f"{self.kind}.{key}={value}: {key} comes from the run (the data, the model), "
                                  "it is not a setting")
            if key not in parameters:
                known = ", ".join(k for k in parameters if k not in context)
                raise VaeLabError(f"{self.kind}.{key}: {self.kind} {name} has no such setting (its settings: {known})")
            if fits(value, parameters[key]) is False:
                raise VaeLabError(f"{self.kind}.{key}={value} must be {describe(parameters[key])}")
        given = {key: value for key, value in context.items() if key in parameters}
        try:
            return cls(**{key: tuple(v) if isinstance(v, list) else v for key, v in arguments.items()}, **given)
        except ValueError as error:  # a component's own check of its settings together, or against the data
            raise VaeLabError(f"{self.kind} {name}: {' '.join(str(error).split())}") from None


def signature(cls: type) -> dict:
    """Keyword argument -> annotation (``inspect.Parameter.empty`` when there is none) of a class."""
    parameters = inspect.signature(cls).parameters
    try:
        hints = typing.get_type_hints(cls.__init__, include_extras=True)
    except (NameError, TypeError):  # annotations that cannot be resolved: nothing to judge
        hints = {}
    return {key: hints.get(key, p.annotation) for key, p in parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


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


MODELS = Registry("model", "vae_lab.models")
PRIORS = Registry("prior", "vae_lab.priors")
LIKELIHOODS = Registry("likelihood", "vae_lab.likelihoods")
SAMPLERS = Registry("sampler", "vae_lab.samplers")
DATASETS = Registry("data", "vae_lab.data")
