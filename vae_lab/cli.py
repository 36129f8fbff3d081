"""What every vae_lab command does first (``start_process``), and the key=value command lines of its
tools (generate, evaluate, classifier, morphometrics)."""
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


def start_process() -> None:
    """What a vae_lab process sets before its first tensor operation: training (``train``), the
    tools (``exit_on_error``) and ``vae_lab.load_run`` call it, and so do the tests, first.

    Training drives many numbers towards zero (the gradients of saturated pixels, Adam's moments of
    weights that barely move), and x86 processors compute on subnormal floats (below 1.2e-38) tens
    of times slower: a 400-epoch run slowed from 7 to 15 s an epoch (docs/performance.md). Flushing
    them to zero changes no number by more than 1.2e-38. The setting belongs to a thread: torch's
    intra-op threads inherit it only when they start after it (a thread pool started by an earlier
    large operation keeps computing with subnormals, and its share of a result then differs in the
    last bits from the main thread's), so it is set here, before any operation starts them
    (tests/test_reliability.py checks every thread).

    Lightning hangs console handlers of its own on its loggers when it is imported: its log lines
    ("GPU available", tips, "Trainer.fit stopped") go where the application's logging sends them
    (a run's train.log) instead. Two warnings a user cannot act on are dropped: a deprecation inside
    Lightning and torch, and the notice that an epoch is shorter than log_every_n_steps (vae_lab
    logs by global step, across epochs); and two about MultiStepVAE's ``dataloader_iter``, whose
    callbacks count batches by the index of the last one (docs/performance.md)."""
    import logging
    import warnings

    import torch

    torch.set_flush_denormal(True)
    for message in (r".*LeafSpec.* is deprecated", r"The number of training batches .* is smaller than the logging interval",
                    r"You are using the `dataloader_iter` step flavor", r"Found `dataloader_iter` argument in the `training_step`"):
        warnings.filterwarnings("ignore", message=message)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:
                logger.removeHandler(handler)
        logger.propagate = True


def exit_on_error(command) -> None:
    """Run ``command()`` in a started process (``start_process``); a VaeLabError ends the process
    with one line and exit status 1."""
    start_process()
    try:
        command()
    except VaeLabError as error:
        sys.exit(f"error: {error}")
