"""Files written whole or not at all: every file vae_lab writes for later (checkpoints, summaries,
metrics, fitted samplers, classifiers, morphometrics) goes through ``write_atomically``; what is
computed once per machine lives in ``cache_folder()``."""
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


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
