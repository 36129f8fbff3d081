"""Where the seconds before the first training step and after the last one go, for
`python train.py epochs=1` as a user runs it.

    VAE_LAB_DATA=../shared/data python benchmarks/startup.py [--repeats 3] [overrides ...]

Runs `python train.py epochs=1 <overrides>` through a probe (this file, with --probe) that is
train.py plus timers: the probe notes the clock when the process starts, around the steps of a
run (data decoding, the validation at initialisation, the first and last training step, the final
validation, checkpoints, end-of-run pictures and embedding, the summary) and just before exit; a
separate `python -c "import torch, torchvision, lightning"` times the imports alone (with the
second they take to tear down at exit). Prints the median of --repeats runs of each figure, in
seconds, and last what is neither those imports nor the training steps: the part a run can cut.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STARTED = time.perf_counter()  # before any import of the run: the probe's zero

REPO = Path(__file__).resolve().parents[1]


def timed(owner, name: str, spent: dict, key: str) -> None:
    """Wrap owner.name so that its calls add their seconds to spent[key]."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - start

    setattr(owner, name, wrapper)


def probe(out: Path, overrides: list[str]) -> None:
    """Runs train.py's main with timers; writes {figure: seconds since STARTED or spent} to out."""
    sys.argv = [str(REPO / "train.py"), *overrides]
    sys.path.insert(0, str(REPO))
    import runpy

    import lightning as L

    from vae_lab import data
    from vae_lab.training import callbacks
    try:
        from vae_lab.training.callbacks import summary
    except ImportError:  # an older checkout
        summary = None
    from vae_lab import train as training

    points, spent = {"imports done": time.perf_counter() - STARTED}, {}

    class Clock(L.Callback):
        def mark(self, name):
            points.setdefault(name, time.perf_counter() - STARTED)

        def on_validation_start(self, trainer, pl_module):
            if trainer.state.fn == "validate":
                self.mark("validation at initialisation starts")
            else:
                points["last validation starts"] = time.perf_counter() - STARTED

        def on_validation_end(self, trainer, pl_module):
            if trainer.state.fn == "validate":
                self.mark("validation at initialisation ends")
            else:
                points["last validation ends"] = time.perf_counter() - STARTED

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.mark("first training step starts")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            points["last training step ends"] = time.perf_counter() - STARTED

        def on_fit_end(self, trainer, pl_module):
            points["fit ends"] = time.perf_counter() - STARTED

    original_train = training.train
    training.train = lambda cfg: original_train(cfg, callbacks=[Clock()])  # what train.py's main calls
    # (module, class, method, figure); the older names let the same probe time an older checkout
    # (git worktree add /tmp/before <commit>; cp benchmarks/startup.py /tmp/before/benchmarks/),
    # whose data module was MNISTDataModule and whose pictures and HPARAMS came at on_fit_end
    hooks = [
        (data, "ImageDataModule", "setup", "decoding the data"),
        (data, "MNISTDataModule", "setup", "decoding the data"),
        (callbacks, "AtomicCheckpointIO", "save_checkpoint", "writing checkpoints"),
        (callbacks, "FigureLogger", "write_pictures", "end-of-run pictures and embedding"),
        (callbacks, "FigureLogger", "on_fit_end", "end-of-run pictures and embedding"),
        (callbacks, "FigureLogger", "on_validation_epoch_end", "pictures after validations"),
        (summary, "RunSummary", "on_fit_end", "summary, HPARAMS, hparams.yaml"),
    ]
    for module, owner, method, figure in hooks:
        if module is not None and hasattr(getattr(module, owner, None), method):
            timed(getattr(module, owner), method, spent, figure)
    try:  # train.py as __main__, as `python train.py` runs it (Hydra finds vae_lab/conf/ beside the file)
        runpy.run_path(str(REPO / "train.py"), run_name="__main__")
    except SystemExit as exit:
        if exit.code:
            raise
    points["train.py returns"] = time.perf_counter() - STARTED
    out.write_text(json.dumps({"points": points, "spent": spent}))


def measure(overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "times.json"
        start = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--probe", str(out), "epochs=1", *overrides,
                        f"hydra.run.dir={folder}/run"], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        found = json.loads(out.read_text())
    points, spent = found["points"], found["spent"]
    return {
        "command to exit": wall,
        "command to first training step": points["first training step starts"],
        "  of which importing torch, torchvision, lightning (alone)": None,
        "  imports done (train.py's own, Hydra, vae_lab)": points["imports done"],
        "  decoding the data": spent.get("decoding the data", 0.0),
        "  validation at initialisation (with its pictures)":
            points["validation at initialisation ends"] - points["validation at initialisation starts"],
        "the training steps": points["last training step ends"] - points["first training step starts"],
        "last training step to exit": wall - points["last training step ends"],
        "  last validation (with its pictures)": points["last validation ends"] - points["last validation starts"],
        "  writing checkpoints": spent.get("writing checkpoints", 0.0),
        "  end-of-run pictures and embedding": spent.get("end-of-run pictures and embedding", 0.0),
        "  summary, HPARAMS, hparams.yaml": spent.get("summary, HPARAMS, hparams.yaml", 0.0),
        "  after train.py returns (interpreter exit)": wall - points["train.py returns"],
    }


def import_seconds() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, torchvision, lightning"], check=True)
    return time.perf_counter() - start


def main() -> None:
    if sys.argv[1:2] == ["--probe"]:
        probe(Path(sys.argv[2]), sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="more train.py overrides, e.g. model=conv")
    args = parser.parse_args()
    if not (Path(os.environ.get("VAE_LAB_DATA", "data")) / "MNIST" / "raw").is_dir():
        sys.exit("error: no MNIST under VAE_LAB_DATA; set it to a folder holding MNIST/raw/")
    runs = [measure(args.overrides) for _ in range(args.repeats)]
    imports = statistics.median(import_seconds() for _ in range(args.repeats))
    print(f"python train.py epochs=1 {' '.join(args.overrides)}: medians of {args.repeats} runs, seconds")
    for run in runs:  # what the issue asks to cut: all but the imports (with their share of the exit) and the steps
        run["neither the imports alone nor the training steps"] = (
            run["command to exit"] - imports - run["the training steps"])
    for figure in runs[0]:
        values = [imports] if runs[0][figure] is None else [run[figure] for run in runs]
        print(f"{figure:58s} {statistics.median(values):6.2f}   (runs: {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
