"""The key=value command lines of vae_lab's tools (generate, evaluate, classifier)."""
import sys

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vae_lab.errors import VaeLabError


def parse_options(argv: list[str] | None, defaults: dict, usage: str, at_least: dict[str, int] | None = None) -> DictConfig:
    """key=value arguments (sys.argv[1:] when argv is None) over ``defaults``.

    Unknown keys, a missing ``run`` (when ``defaults`` has one), integers below ``at_least[key]`` and
    anything but true or false for a key whose default is either raise VaeLabError; ``usage`` is the
    command line shown when the run is missing. A key whose default is a dict with a ``name``
    (``sampler``) takes ``key=NAME`` for ``key.name=NAME`` and any ``key.setting=value``, which the
    code it configures checks.
    """
    options = OmegaConf.create(defaults)
    OmegaConf.set_struct(options, True)  # an unknown key is an error, not ignored
    named = [key for key, value in defaults.items() if isinstance(value, dict) and "name" in value]
    for key in named:
        OmegaConf.set_struct(options[key], False)
    arguments = sys.argv[1:] if argv is None else argv
    arguments = [f"{arg.partition('=')[0]}.name={arg.partition('=')[2]}" if arg.partition("=")[0] in named else arg
                 for arg in arguments]
    try:
        options = OmegaConf.merge(options, OmegaConf.from_dotlist(arguments))
    except OmegaConfBaseException as error:
        raise VaeLabError(f"{str(error).splitlines()[0]}; options are {', '.join(defaults)}") from None
    if "run" in defaults and options.run is None:
        raise VaeLabError(f"give the run: {usage}")
    for key, least in (at_least or {}).items():
        value = options[key]
        if value is None and defaults[key] is None:  # left to the command to choose
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise VaeLabError(f"{key}={value} must be an integer >= {least}")
    for key, default in defaults.items():  # a switch is a switch: "maybe" would read as on
        if isinstance(default, bool) and not isinstance(options[key], bool):
            raise VaeLabError(f"{key}={options[key]} must be true or false")
    return options


def exit_on_error(command) -> None:
    """Run ``command()``; a VaeLabError ends the process with one line and exit status 1."""
    try:
        command()
    except VaeLabError as error:
        sys.exit(f"error: {error}")
