"""Config values checked against the type annotations of what they are passed to (``check_settings``,
the one validator of every component, the Trainer and the logger), so that a
string where a number belongs stops with one line naming the key, not with a traceback from deep
inside the library that received it.

Only plain types are judged (bool, int, float, str, None, Literal, Union of them, tuples and lists
of them); an argument annotated with anything else is left to its receiver. A bound travels with
the type: ``Annotated[int, AtLeast(1)]`` (``PositiveInt``) is an integer >= 1,
``Annotated[float, Above(0)]`` a number > 0, so a component states its settings' ranges where it
states their types.
"""
import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping

from vae_lab.errors import VaeLabError


@dataclasses.dataclass(frozen=True)
class AtLeast:
    """``Annotated[int | float, AtLeast(low)]``: the value must be >= low."""
    low: float

    def admits(self, value) -> bool:
        return value >= self.low

    def __str__(self) -> str:
        return f">= {self.low:g}"


@dataclasses.dataclass(frozen=True)
class Above:
    """``Annotated[int | float, Above(low)]``: the value must be > low."""
    low: float

    def admits(self, value) -> bool:
        return value > self.low

    def __str__(self) -> str:
        return f"> {self.low:g}"


PositiveInt = typing.Annotated[int, AtLeast(1)]
NonNegativeInt = typing.Annotated[int, AtLeast(0)]
NonNegative = typing.Annotated[float, AtLeast(0)]
PositiveFloat = typing.Annotated[float, Above(0)]

_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}


def fits(value, hint) -> bool | None:
    """Whether value can be an argument annotated ``hint``; None when the annotation is not plain."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin is typing.Annotated:
        verdict = fits(value, args[0])
        bounds = [bound for bound in args[1:] if isinstance(bound, (AtLeast, Above))]
        return verdict and all(bound.admits(value) for bound in bounds) if verdict else verdict
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
    if origin is typing.Annotated:
        bounds = [str(bound) for bound in args[1:] if isinstance(bound, (AtLeast, Above))]
        return " ".join([describe(args[0]), *bounds])
    if origin in (typing.Union, types.UnionType):
        plain = [arg for arg in args if fits(None, arg) is not None]  # what fits can judge
        return " or ".join(describe(arg) for arg in plain)
    if origin is typing.Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (tuple, list):
        count = "" if origin is list or args[-1] is Ellipsis else f"{len(args)} "
        item = describe(args[0]).removeprefix("an ").removeprefix("a ")
        noun, _, bound = item.partition(" ")  # "integer >= 1" -> "integers >= 1"
        if bound and not bound.startswith(">"):
            noun, bound = item, ""
        return f"a list of {count}{noun}s{' ' + bound if bound else ''}"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def annotations(target: Callable) -> tuple[dict, bool]:
    """(keyword argument -> annotation, whether it also takes **kwargs) of a class's ``__init__``
    or of a function; an annotation that cannot be resolved is left as written (not judged)."""
    function = target.__init__ if isinstance(target, type) else target
    parameters = inspect.signature(target).parameters
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except (NameError, TypeError):  # annotations that cannot be resolved: nothing to judge
        hints = {}
    named = {key: hints.get(key, p.annotation) for key, p in parameters.items()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return named, any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def check_settings(target: Callable, settings: Mapping, key: str, owner: str, context: Iterable[str] = ()) -> None:
    """The one check of the settings a config gives to what vae_lab builds (a registered component,
    the Trainer, the logger): VaeLabError at the first setting ``target`` does not take, or whose
    value does not fit its annotation, in one style for all of them:

        <key>.<setting>: <owner> has no such setting (its settings: ...); ... drop it with ~<key>.<setting>
        <key>.<setting>=<value> must be <what the annotation admits>
        <key>.<setting>=<value>: <setting> comes from the run (the data, the model), it is not a setting

    ``context``: the arguments vae_lab passes itself, never taken from a config."""
    parameters, takes_any = annotations(target)
    context = set(context)
    for name, value in settings.items():
        if name in context:
            raise VaeLabError(f"{key}.{name}={value}: {name} comes from the run (the data, the model), it is not a setting")
        if name not in parameters and not takes_any:  # e.g. a preset's setting for another choice of the group
            known = [k for k in parameters if k not in context and k != "self"]
            listed = f" (its settings: {', '.join(known)})" if len(known) <= 8 else ""
            raise VaeLabError(f"{key}.{name}: {owner} has no such setting{listed}; if a preset set it for "
                              f"another choice of {key}, drop it with ~{key}.{name}")
        if name in parameters and fits(value, parameters[name]) is False:
            raise VaeLabError(f"{key}.{name}={value} must be {describe(parameters[name])}")
