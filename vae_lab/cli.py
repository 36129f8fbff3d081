"""The key=value command lines of vae_lab's tools (generate, evaluate, classifier)."""
import sys

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vae_lab.errors import VaeLabError


def parse_options(argv: list[str] | None, defaults: dict, usage: str, at_least: dict[str, int] | None = None) -> DictConfig:
    """key=value arguments (sys.argv[1:] when argv is None) over ``defaults``.

    Unknown keys, a missing ``run`` (when ``defaults`` has one) and integers below ``at_least[key]``
    raise VaeLabError; ``usage`` is the command line shown when the run is missing.
    """
    options = OmegaConf.create(defaults)
    OmegaConf.set_struct(options, True)  # an unknown key is an error, not ignored
    try:
        options = OmegaConf.merge(options, OmegaConf.from_dotlist(sys.argv[1:] if argv is None else argv))
    except OmegaConfBaseException as error:
        raise VaeLabError(f"{str(error).splitlines()[0]}; options are {', '.join(defaults)}") from None
    if "run" in defaults and options.run is None:
        raise VaeLabError(f"give the run: {usage}")
    for key, least in (at_least or {}).items():
        value = options[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise VaeLabError(f"{key}={value} must be an integer >= {least}")
    return options


def exit_on_error(command) -> None:
    """Run ``command()``; a VaeLabError ends the process with one line and exit status 1."""
    try:
        command()
    except VaeLabError as error:
        sys.exit(f"error: {error}")
