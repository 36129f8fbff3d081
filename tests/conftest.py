import fcntl
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # before torch starts: the workers share the cores
    # one OpenMP pool per worker, each on its share: two 2-thread pools on 2 cores spin against each
    # other and run many times slower; the training processes the tests start inherit the setting
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, os.cpu_count() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

import pytest
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from vae_lab.cli import start_process

start_process()  # as every vae_lab command does first: before any operation starts torch's threads
from vae_lab.config import CONF

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("VAE_LAB_DATA", REPO.parent / "shared" / "data")).resolve()
os.environ["VAE_LAB_DATA"] = str(DATA_ROOT)  # the data root of every config the tests compose (vae_lab/conf/data/*.yaml)
# Tiny but real trainings: a few hundred steps on real MNIST, quiet, on the CPU.
SHORT_RUN = [
    "trainer.limit_train_batches=100", "trainer.limit_val_batches=20",
    "callbacks.progress_bar=null", "trainer.enable_model_summary=false",
    "trainer.accelerator=cpu", "trainer.log_every_n_steps=10",
]
# Tinier still: 5 training and 2 validation batches per epoch, for runs whose numbers do not matter.
TINY_RUN = [*SHORT_RUN, "trainer.limit_train_batches=5", "trainer.limit_val_batches=2"]


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (DATA_ROOT / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.fail(f"MNIST not found under {DATA_ROOT}; set VAE_LAB_DATA to a folder holding MNIST/raw/")
    return DATA_ROOT


# Short runs that several test modules inspect, each trained once per session (2 epochs of 100 steps).
SHORT_RUNS = {
    "dense-bce": ["model=dense", "loss=bce"],            # z_dim=20: traversal and embedding
    "conv-mse-z2": ["model=conv", "loss=mse", "z_dim=2"],  # manifold and latent scatter
    "cvae-bce": ["model=cvae", "loss=bce"],              # digit rows
}


def made_once(tmp_path_factory, name: str, make) -> Path:
    """The folder ``name``, filled by ``make(folder)`` once per test session: under pytest-xdist
    (pyproject.toml runs two workers) by whichever worker asks first, while the others wait."""
    root = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        root = root.parent  # the session's folder, above each worker's own
    folder, done = root / f"once-{name}", root / f"once-{name}.done"
    with open(root / f"once-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what an earlier caller's failed attempt left
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def short_runs(tmp_path_factory, data_root):
    """short_runs(name) -> run folder of the finished SHORT_RUNS[name] run."""

    def train_short_run(name, run_dir):
        result = run_train(*SHORT_RUNS[name], "epochs=2", *SHORT_RUN, run_dir=run_dir)
        assert result.returncode == 0, result.stderr[-3000:]

    return lambda name: made_once(tmp_path_factory, name, lambda run_dir: train_short_run(name, run_dir))


@pytest.fixture(scope="session")
def classifier_path(tmp_path_factory, data_root):
    """The cached MNIST classifier (python -m vae_lab.classifier), or one trained now for one epoch
    (about 98.5 % of the test digits; the command's three epochs reach 99 %, docs/metrics.md)."""
    from vae_lab.evaluation.classifier import default_path, save_classifier, train_classifier

    if default_path().is_file():
        return default_path()

    def train(folder):
        source = {"name": "mnist", "root": str(data_root), "download": False}
        save_classifier(*train_classifier(source, epochs=1), folder / "mnist_classifier.pt")

    return made_once(tmp_path_factory, "classifier", train) / "mnist_classifier.pt"


@pytest.fixture(scope="session")
def morphometrics_cache(tmp_path_factory, data_root) -> Path:
    """A cache folder (for VAE_LAB_CACHE) holding the morphometrics of MNIST's test digits, measured
    once per session (python -m vae_lab.morphometrics, about 20 s)."""
    from vae_lab.evaluation.morphometrics import main

    return made_once(tmp_path_factory, "cache",
                     lambda cache: main([f"out={cache / 'mnist_morphometrics.npz'}", f"data_root={data_root}"]))


@pytest.fixture(scope="session")
def classifier(classifier_path):
    from vae_lab.evaluation.classifier import load_classifier

    return load_classifier(classifier_path)[0]


def make_model(name: str = "dense", **settings):
    """A model with its prior and likelihood, as a run on MNIST builds it (``vae_lab.models.build_model``)."""
    from vae_lab.models import build_model

    likelihood = settings.pop("likelihood", "bce")
    return build_model({"model": {"name": name, **settings}, "loss": {"likelihood": likelihood}})


def make_config(output_dir: Path, *overrides: str):
    """The config `python train.py <overrides>` would get, writing into output_dir."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"output_dir={output_dir}", *overrides])


def run_train(*overrides: str, run_dir: Path | None = None) -> subprocess.CompletedProcess:
    """Run train.py as a user would, in a subprocess; run_dir becomes hydra.run.dir."""
    args = [sys.executable, "train.py", *overrides]
    if run_dir is not None:
        args.append(f"hydra.run.dir={run_dir}")
    env = {**os.environ, "VAE_LAB_DATA": str(DATA_ROOT)}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def run_sweep(*overrides: str, sweep_dir: Path, command: tuple[str, ...] = ("train.py", "-m"),
              env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a sweep as a user would (`python train.py -m`, or e.g. `./sweep.sh`) into sweep_dir,
    one run folder per job named by its number; env replaces os.environ."""
    args = [*command, *overrides, f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=${hydra.job.num}"]
    if command[0].endswith(".py"):
        args.insert(0, sys.executable)
    env = {**(os.environ if env is None else env), "VAE_LAB_DATA": str(DATA_ROOT), "PYTHON": sys.executable}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def scalars(run_dir) -> dict:
    """{tag: [(step, value), ...]} of every scalar in the run folder's TensorBoard events."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def table_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row, the separator rows excluded."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"[|\s:-]+", line):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


# The two tiers (README): `pytest -m "not slow"` leaves out every test that trains a real run, through
# a fixture that trains (the closure of a test's fixtures) or by starting a training itself.
TRAINING_FIXTURES = {"short_runs", "classifier_path", "dense_checkpoint", "fashion_classifier", "beta_sweep",
                     "parallel_sweep", "plugin_folder", "plugin_run"}
STARTS_A_RUN = re.compile(r"\b(logged_run|run_train|run_sweep|train|train_run|run_module|rising_run|train_classifier|subprocess\.run)\(")


def pytest_collection_modifyitems(items):
    for item in items:
        function = getattr(item, "function", None)
        source = inspect.getsource(function) if function is not None else ""
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())) or STARTS_A_RUN.search(source):
            item.add_marker(pytest.mark.slow)
