"""Config values checked against the type annotations of what they are passed to, so that a
string where a number belongs stops with one line naming the key, not with a traceback from deep
inside the library that received it; and the registries through which a config (or a file)
chooses a class by name, never by naming code.

Only plain types are judged (bool, int, float, str, None, Literal, Union of them, tuples and lists
of them); an argument annotated with anything else is left to its receiver.
"""
import inspect
import types
import typing
from collections.abc import Callable, Mapping

from vae_lab.errors import VaeLabError

_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}


def fits(value, hint) -> bool | None:
    """Whether value can be an argument annotated ``hint``; None when the annotation is not plain."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        verdicts = [fits(value, arg) for arg in args]
        return True if True in verdicts else (None if None in verdicts else False)
    if origin is typing.Literal:
        return value in args
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False
        items = args[:1] * len(value) if origin is list or (args and args[-1] is Ellipsis) else args
        if origin is tuple and len(items) != len(value):
            return False
        verdicts = [fits(v, h) for v, h in zip(value, items)]
        return False if False in verdicts else (None if None in verdicts else True)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint in (str, type(None)):
        return isinstance(value, hint)
    return None


def describe(hint) -> str:
    """What ``fits`` accepts for hint, in words."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        plain = [arg for arg in args if fits(None, arg) is not None]  # what fits can judge
        return " or ".join(describe(arg) for arg in plain)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (tuple, list):
        count = "" if origin is list or args[-1] is Ellipsis else f"{len(args)} "
        return f"a list of {count}{describe(args[0]).removeprefix('an ').removeprefix('a ')}s"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def check_arguments(target: Callable, arguments: Mapping, where: str) -> str | None:
    """The first problem with arguments for target ("<where>.<key>=<value> must be ..."), or None."""
    function = target.__init__ if isinstance(target, type) else target
    try:
        hints = typing.get_type_hints(function)
        parameters = inspect.signature(function).parameters
    except (NameError, TypeError, ValueError):  # annotations that cannot be resolved: nothing to judge
        return None
    for key, value in arguments.items():
        if key in parameters and key in hints and fits(value, hints[key]) is False:
            return f"{where}.{key}={value} must be {describe(hints[key])}"
    return None


def build_registered(kind: str, registry: Mapping[str, type], config: Mapping | str, at_least: int | None = None):
    """``{"name": one of registry, setting: value, ...}`` (or just the name) -> that class built with
    those settings, each checked against its signature (and, with ``at_least``, every number in it
    against that floor); VaeLabError naming the first bad key as ``<kind>.<key>``. Keys such as
    ``_target_`` are refused outright: a config chooses among the registry, it never names code."""
    arguments = {"name": config} if isinstance(config, str) else dict(config)
    name, names = arguments.pop("name", None), ", ".join(registry)
    for key, value in arguments.items():
        if str(key).startswith("_"):  # _target_, _args_, _partial_: how Hydra would name code
            raise VaeLabError(f"{kind}.{key}={value} names code; a {kind} is chosen by {kind}.name, one of {names}")
    if not isinstance(name, str) or name not in registry:
        raise VaeLabError(f"{kind}.name={name} is not a vae_lab {kind}; use one of {names}")
    parameters = inspect.signature(registry[name]).parameters
    for key, value in arguments.items():
        if key not in parameters:
            raise VaeLabError(f"{kind}.{key}: {kind} {name} has no such setting (its settings: {', '.join(parameters)})")
        annotation, values = parameters[key].annotation, value if isinstance(value, (list, tuple)) else [value]
        if fits(value, annotation) is False or (at_least is not None and not (values and all(v >= at_least for v in values))):
            raise VaeLabError(f"{kind}.{key}={value} must be {describe(annotation)}"
                              + ("" if at_least is None else f" >= {at_least}"))
    return registry[name](**{key: tuple(v) if isinstance(v, list) else v for key, v in arguments.items()})
