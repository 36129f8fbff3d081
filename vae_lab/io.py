"""Files written whole or not at all, and read without running code: every file vae_lab writes for
later (checkpoints, summaries, metrics, fitted samplers, classifiers, morphometrics) goes through
``write_atomically``; every PyTorch file it reads through ``safe_load``; what is computed once per
machine lives in ``cache_folder()``."""
import json
import os
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from vae_lab.errors import VaeLabError


def cache_folder() -> Path:
    """Where what a machine computes once per data set is kept (the classifiers, the morphometrics):
    ``$VAE_LAB_CACHE``, else ``~/.cache/vae_lab``."""
    return Path(os.environ.get("VAE_LAB_CACHE", "~/.cache/vae_lab")).expanduser()


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """write(file) into ``<path>.tmp``, fsync, rename over ``path``: a reader, or a process killed
    while writing, never sees a half-written ``path`` (a rename within one folder is atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())  # the bytes reach the disk before the name points at them
    os.replace(tmp, path)


def write_json(record: dict, path: str | os.PathLike) -> None:
    """``record`` as indented JSON in ``path``, atomically."""
    write_atomically(path, lambda f: f.write((json.dumps(record, indent=2) + "\n").encode()))


def safe_load(path: str | os.PathLike, what: str = "checkpoint"):
    """``torch.load(path, weights_only=True)`` on the CPU, or VaeLabError with one line naming the file."""
    import torch  # here: the command lines' checks run before torch is imported

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as error:
        raise VaeLabError(f"{path}: cannot read it ({error.strerror})") from None
    except Exception as error:  # torch.load fails on damaged files with many exception types
        unsafe = isinstance(error, pickle.UnpicklingError) and re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if unsafe:
            name = unsafe[1] if "." in unsafe[1] else f"builtins.{unsafe[1]}"  # torch ≥ 2.5 drops "builtins."
            raise VaeLabError(f"{path}: refused, loading it would call {name}; a {what} "
                              "holds only tensors and plain values (loaded with weights_only=True)") from None
        raise VaeLabError(f"{path}: not a readable {what} (truncated or corrupt)") from None
