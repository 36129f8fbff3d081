"""Training speed of vae_lab next to a tight PyTorch loop and the classic DataLoader loop.

    VAE_LAB_DATA=../shared/data python benchmarks/throughput.py                # all parts, ~15 min
    VAE_LAB_DATA=../shared/data python benchmarks/throughput.py ratios epoch   # some parts

Parts (docs/performance.md has the figures and what they mean):
  ratios   images/s at batch 128 (or --batch-size 1024), dense and conv, three ways in this process:
             vae_lab  train(cfg) exactly as train.py calls it (LightningModule, data module,
                      logging, progress bar and pictures as configured by default);
             tight    the same model, optimizer and loss on the in-memory tensor, nothing else;
             classic  pytorch/examples' VAE loop: torchvision MNIST + ToTensor through a
                      DataLoader, the same batch size, shuffled (num_workers=0, as on a CPU).
           They take turns inside one vae_lab run (see Interleaved), --repeats runs per model:
           on a shared machine the same loop drifts by up to a third from minute to minute, and
           turns keep the ways under the same load. vae_lab is timed by a callback (~1% of a step).
  profile  Python calls per optimizer step (cProfile) by package, vae_lab at each K and the tight
           loop; then by the part of the step that made them (the training step's callees).
  lightning  the same turns with a bare LightningModule in place of vae_lab (no logger, checkpoints,
             callbacks or bar): what Lightning's own loop costs; and with 20 empty callbacks added.
  nvml     the tight loop with and without the NVML ask at every Adam step that importing Lightning
           turns on (vae_lab turns it off for its fits on the CPU), taking turns.
  epoch    seconds per epoch (training, then validation with its pictures), wall time and peak
           resident memory of whole `python train.py epochs=1` runs, also with trainer=ddp.
  scaling  vae_lab's training seconds per epoch for batch 64..512 and for z_dim 2..64.
  sweep    wall time of a 4-run sweep through hydra/launcher=joblib with 1 and with 2 jobs.
  compile  20 epochs of the tight loop, eager and through torch.compile (its compilation included).
  knobs    vae_lab's seconds per epoch with each knob of the binarized baseline added in turn
           (width, KL warm-up, cosine lr, IWAE k=5) and the other KL schedules and free bits.
Run it on a quiet machine: anything else on the cores shows up in every figure.
"""
import argparse
import collections
import cProfile
import logging
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader
from torchvision.datasets import MNIST
from torchvision.transforms import ToTensor

from vae_lab.cli import exit_on_error
from vae_lab.data import ImageDataModule, data_root
from vae_lab.training.losses import VAELoss
from vae_lab.training.module import MultiStepVAE
from vae_lab.training.schedules import Constant
from vae_lab.models import build_model
from vae_lab.training import train
from vae_lab.config import CONF
from vae_lab.registry import OPTIMIZERS

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = data_root()
MODELS = ("dense", "conv")  # the models measured
ELBO = Constant(1.0)  # the default KL schedule: β = 1
WARMUP = 16  # batches before any timing
# ratios: (batches per turn, turns) per batch size and model, a few tenths of a second per way and
# turn on the CPU; WARMUP and the turns are multiples of every trainer.steps_per_execution measured
# (1, 2, 4, 8, 16), and at batch 1024 they fit in the 58 full batches of one epoch
WINDOWS = {128: {"dense": (48, 8), "conv": (16, 8)}, 1024: {"dense": (8, 5), "conv": (8, 5)}}
TRAIN_IMAGES = 60_000
# vae_lab's default trainer takes a GPU when there is one; the plain loops then run there too
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
REPORT = []  # the lines of the summary
COMPILE_MODELS = list(MODELS)  # --compile-models
STEPS_PER_EXECUTION = [1, 8]  # --steps-per-execution: the Ks of ratios and profile
BATCH_SIZE = [128]  # --batch-size: the batch size of ratios


def synchronized_clock() -> float:
    """perf_counter() once the GPU, if any, has finished what it was given."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter()


class Clock(Callback):
    """perf_counter() at the end of every Lightning training step, by the batches the epoch has
    done (a step takes trainer.steps_per_execution of them), and around validation during fit.

    Timing from the end of one step to the end of a later one counts everything a step costs:
    loading the batches, the optimizer steps, logging, the progress bar and every callback.
    """

    def __init__(self):
        self.at, self.validation = {}, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.at[batch_idx + 1] = synchronized_clock()  # batch_idx: the last batch the step took

    def on_validation_start(self, trainer, pl_module):
        if trainer.state.fn == "fit":
            self.validation.append(time.perf_counter())

    def on_validation_end(self, trainer, pl_module):
        if trainer.state.fn == "fit":
            self.validation[-1] = time.perf_counter() - self.validation[-1]

    def images_per_second(self, first: int, batches: int, batch_size: int) -> float:
        """Over the steps that ended after batch ``first`` and by batch ``first + batches``."""
        start = min(n for n in self.at if n >= first)
        end = max(n for n in self.at if n <= first + batches)
        return (end - start) * batch_size / (self.at[end] - self.at[start])

    def seconds_per_epoch(self) -> float:
        """The training steps' seconds, from the first step's end to the last's, per batch, times
        the epoch's batches."""
        first, last = min(self.at), max(self.at)
        return (self.at[last] - self.at[first]) * last / (last - first)


class Interleaved(Callback):
    """Takes turns with the plain loops inside one Lightning run (``watched``): after WARMUP steps,
    ``window`` steps of the run, then ``window`` steps of each plain loop (run from this hook, timed apart), and so on
    for ``windows`` turns. The ways share every stretch of machine load, which on a shared machine
    drifts by up to a third from minute to minute; back-to-back runs would each get their own.
    """

    def __init__(self, plain_loops: dict[str, Callable[[], int]], window: int, windows: int, watched: str = "vae_lab"):
        self.plain_loops, self.window, self.windows, self.watched = plain_loops, window, windows, watched
        self.seconds = dict.fromkeys([watched, *plain_loops], 0.0)
        self.images = dict.fromkeys(self.seconds, 0)
        self.started = None  # when the running window of the watched run began

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        done = batch_idx + 1  # batches of the epoch done (a multiple of steps_per_execution)
        if done < WARMUP or (done - WARMUP) % self.window:
            return
        if self.started is None:  # the plain loops' warm-up
            for step in self.plain_loops.values():
                for _ in range(WARMUP):
                    step()
        else:
            self.seconds[self.watched] += synchronized_clock() - self.started
            self.images[self.watched] += self.window * batch[0].shape[0]
        if (done - WARMUP) // self.window == self.windows:
            return
        for name, step in self.plain_loops.items():
            start = synchronized_clock()
            for _ in range(self.window):
                self.images[name] += step()
            self.seconds[name] += synchronized_clock() - start
        self.started = synchronized_clock()

    def images_per_second(self) -> dict[str, float]:
        return {way: self.images[way] / self.seconds[way] for way in self.seconds}


def config(output_dir: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=[f"output_dir={output_dir}", f"data.root={DATA_ROOT}", *overrides])


def vae_lab_run(*overrides: str, watch: Callback | None = None) -> Callback:
    """One train(cfg) run in a fresh folder, watched by ``watch`` (a new Clock if None)."""
    watch = watch or Clock()
    with tempfile.TemporaryDirectory() as output_dir:
        train(config(output_dir, *overrides), callbacks=[watch])
    return watch


def vae_lab_throughput(name: str, steps: int, batch_size: int = 128, *overrides: str) -> float:
    clock = vae_lab_run(f"model={name}", f"batch_size={batch_size}", "epochs=1",
                        f"trainer.limit_train_batches={WARMUP + steps + 1}", *overrides)
    return clock.images_per_second(WARMUP, steps, batch_size)


def plain_loop(name: str, batches: Iterator, read_loss: bool = False) -> Callable[[], int]:
    """step(): one training step of a fresh ``name`` model on the next of ``batches``, with the
    optimizer vae_lab configures and the bce VAE loss; returns the batch size. ``read_loss`` reads
    loss.item() every step, as pytorch/examples does to add up its printed loss."""
    torch.manual_seed(0)
    model, loss_function = build_model({"model": {"name": name, "z_dim": 20}}).to(DEVICE), VAELoss()
    optimizer = configured_optimizer(model.parameters())

    def step() -> int:
        x, _ = next(batches)
        x = x.to(DEVICE)
        optimizer.zero_grad()
        mu, logvar = model.encode(x)
        loss = loss_function(model, x, None, mu, logvar, ELBO)["loss"]
        loss.backward()
        if read_loss:
            loss.item()
        optimizer.step()
        return x.shape[0]

    return step


def configured_optimizer(parameters):
    """The optimizer vae_lab builds from vae_lab/conf/ (optimizer=adam)."""
    return OPTIMIZERS.build(OmegaConf.to_container(config("unused").optimizer, resolve=True), params=parameters)


def epochs_of(make_batches: Callable[[], Iterable]) -> Iterator:
    """The batches of one epoch after another, for ever."""
    while True:
        yield from make_batches()


def shuffled_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int = 128) -> Iterator:
    """The tight loop's data: batches gathered from the in-memory tensors, a new order each epoch."""
    return epochs_of(lambda: ((images[i], labels[i])
                              for i in torch.randperm(len(images), device=DEVICE).split(batch_size)))


class BareModule(L.LightningModule):
    """The least a LightningModule can be: the model's step and the configured optimizer."""

    def __init__(self, name: str):
        super().__init__()
        torch.manual_seed(0)
        self.model, self.loss = build_model({"model": {"name": name, "z_dim": 20}}), VAELoss()

    def training_step(self, batch, batch_idx):
        x, _ = batch
        mu, logvar = self.model.encode(x)
        return self.loss(self.model, x, None, mu, logvar, ELBO)["loss"]

    def configure_optimizers(self):
        return configured_optimizer(self.parameters())


def report(line: str = "") -> None:
    """Print a result now and again in the summary at the end (the progress bars scroll it away)."""
    print(line, flush=True)
    REPORT.append(line)


def part_ratios(repeats: int) -> None:
    batch_size = BATCH_SIZE[0]
    datamodule = ImageDataModule(root=DATA_ROOT)
    datamodule.setup()
    images, labels = (t.to(DEVICE) for t in datamodule.train_set.tensors)  # the tight loop's tensors
    classic_dataset = MNIST(DATA_ROOT, train=True, transform=ToTensor())
    report(f"\n## ratios: images/s at batch {batch_size}, the three ways taking turns in {repeats} runs "
           f"per trainer.steps_per_execution (K = {', '.join(map(str, STEPS_PER_EXECUTION))})")
    for name, (window, windows) in WINDOWS[batch_size].items():
        runs = {k: [] for k in STEPS_PER_EXECUTION}
        for _ in range(repeats):
            for k in STEPS_PER_EXECUTION:  # the Ks take turns too
                plain_loops = {
                    "tight": plain_loop(name, shuffled_batches(images, labels, batch_size)),
                    # pytorch/examples adds loader workers only for CUDA
                    "classic": plain_loop(name, epochs_of(lambda: DataLoader(classic_dataset, batch_size=batch_size,
                                                                             shuffle=True)),
                                          read_loss=True),
                }
                watch = Interleaved(plain_loops, window, windows)
                vae_lab_run(f"model={name}", f"batch_size={batch_size}", "epochs=1",
                            f"trainer.limit_train_batches={WARMUP + window * windows}",
                            f"trainer.steps_per_execution={k}", watch=watch)
                runs[k].append(watch.images_per_second())
        tight_target = {"dense": 0.95, "conv": 0.98}[name]  # the targets of docs/performance.md
        for k in STEPS_PER_EXECUTION:
            for way in runs[k][0]:
                rates = [run[way] for run in runs[k]]
                report(f"{name:5s} K={k:<2d} {way:8s} {statistics.median(rates):6.0f} images/s  "
                       f"(runs: {', '.join(f'{r:.0f}' for r in rates)})")
            for a, b, target in [("vae_lab", "tight", tight_target), ("vae_lab", "classic", None),
                                 ("tight", "classic", None)]:
                ratios = [run[a] / run[b] for run in runs[k]]
                goal = f"target >= {target}" if target else ""
                report(f"{name:5s} K={k:<2d} {a} / {b} = {statistics.median(ratios):.2f}  "
                       f"(runs: {', '.join(f'{r:.2f}' for r in ratios)})   {goal}")


class CallsBelow:
    """A profiler (``enable``/``disable``) that counts every function call, Python or C, by the
    function ``root`` (a code object) called directly to make it: the calls an optimizer step
    spends in each of its parts. Calls made outside ``root`` count as ``outside``."""

    def __init__(self, root):
        self.root, self.calls = root, collections.Counter()

    def enable(self) -> None:
        sys.setprofile(self.count)

    def disable(self) -> None:
        sys.setprofile(None)

    def count(self, frame, event, arg) -> None:
        if event not in ("call", "c_call"):
            return
        below = arg.__qualname__ if event == "c_call" else None  # a C function has no frame of its own
        while frame is not None and frame.f_code is not self.root:
            below, frame = getattr(frame.f_code, "co_qualname", frame.f_code.co_name), frame.f_back
        self.calls["outside" if frame is None else below or self.root.co_name] += 1


class Profiled(Callback):
    """A profiler (cProfile's by default) over ``batches`` batches of a run after WARMUP (Lightning
    steps of whole K)."""

    def __init__(self, batches: int, profile=None):
        self.batches, self.profile = batches, profile or cProfile.Profile()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx + 1 == WARMUP:
            self.profile.enable()
        elif batch_idx + 1 == WARMUP + self.batches:
            self.profile.disable()


def calls_by_package(profile: cProfile.Profile) -> dict[str, int]:
    """Function calls (primitive and recursive) by where the function lives."""
    calls = dict.fromkeys(["lightning", "torch", "vae_lab", "other"], 0)
    for (filename, _, _), (_, total, *_) in pstats.Stats(profile).stats.items():
        package = next((p for p in ("lightning", "torch", "vae_lab") if f"/{p}/" in filename), "other")
        calls[package] += total
    return calls


def part_profile(repeats: int) -> None:
    """Python calls per optimizer step (cProfile), by package: vae_lab at each K and the tight loop;
    then where they go: by the part of the step that made them (CallsBelow)."""
    batches = 96
    report(f"\n## profile: Python function calls per optimizer step (cProfile over {batches} batches, dense)")
    for k in STEPS_PER_EXECUTION:
        watch = Profiled(batches)
        vae_lab_run("model=dense", "epochs=1", f"trainer.limit_train_batches={WARMUP + batches}",
                    f"trainer.steps_per_execution={k}", watch=watch)
        calls = calls_by_package(watch.profile)
        report(f"vae_lab K={k:<2d} {sum(calls.values()) / batches:6.0f} calls/step: "
               + ", ".join(f"{p} {n / batches:.0f}" for p, n in calls.items()))
    datamodule = ImageDataModule(root=DATA_ROOT)
    datamodule.setup()
    step = plain_loop("dense", shuffled_batches(*(t.to(DEVICE) for t in datamodule.train_set.tensors)))
    profile = cProfile.Profile()
    profile.runcall(lambda: [step() for _ in range(batches)])
    calls = calls_by_package(profile)
    report(f"tight loop {sum(calls.values()) / batches:6.0f} calls/step: "
           + ", ".join(f"{p} {n / batches:.0f}" for p, n in calls.items()))

    report("\nwhere they go: calls per optimizer step by the function the step called to make them")
    for k in [k for k in STEPS_PER_EXECUTION if k > 1]:  # K = 1 steps in Lightning's own loop
        counter = CallsBelow(MultiStepVAE.training_step.__code__)
        vae_lab_run("model=dense", "epochs=1", f"trainer.limit_train_batches={WARMUP + batches}",
                    f"trainer.steps_per_execution={k}", watch=Profiled(batches, counter))
        report_calls_below(f"vae_lab K={k}", counter, batches)
    counter = CallsBelow(step.__code__)
    counter.enable()
    for _ in range(batches):
        step()
    counter.disable()
    report_calls_below("tight loop", counter, batches)


def report_calls_below(name: str, counter: CallsBelow, steps: int) -> None:
    """One line of ``counter``'s parts with at least one call a step, the biggest first."""
    parts = [(part, n / steps) for part, n in counter.calls.most_common()]
    report(f"{name} {sum(n for _, n in parts):6.0f} calls/step: "
           + ", ".join(f"{part} {n:.0f}" for part, n in parts if n >= 1))


def part_nvml(repeats: int) -> None:
    """What Lightning's PYTORCH_NVML_BASED_CUDA_CHECK=1 costs a CPU step: the tight loop with Adam
    asking NVML whether CUDA is there at every step ("1", set by importing Lightning) and asking the
    CUDA runtime ("0": a script without Lightning, and vae_lab's fits on the CPU), taking turns."""
    datamodule = ImageDataModule(root=DATA_ROOT)
    datamodule.setup()
    images, labels = (t.to(DEVICE) for t in datamodule.train_set.tensors)
    report(f"\n## nvml: ms per tight-loop step with PYTORCH_NVML_BASED_CUDA_CHECK 1 and 0, "
           f"{2 * repeats} turns, medians")
    setting = os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"]  # "1": importing Lightning set it
    for name, (window, _) in WINDOWS[128].items():
        step = plain_loop(name, shuffled_batches(images, labels))
        for _ in range(WARMUP):
            step()
        milliseconds = {"1": [], "0": []}
        for _ in range(2 * repeats):
            for check in milliseconds:
                os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = check  # read by torch at every ask
                start = synchronized_clock()
                for _ in range(4 * window):
                    step()
                milliseconds[check].append((synchronized_clock() - start) / (4 * window) * 1e3)
        on, off = (statistics.median(milliseconds[check]) for check in ("1", "0"))
        report(f"{name:5s} {on:6.2f} ms/step asking NVML, {off:6.2f} without: {on / off:.3f} × the time")
    os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = setting


def part_lightning(repeats: int) -> None:
    """What Lightning's loop costs by itself: BareModule in a Trainer with no logger, checkpoints,
    progress bar or summary, taking turns with the tight loop as in ``ratios``; then with 20 empty
    callbacks, which Lightning calls at every hook of every step all the same."""
    datamodule = ImageDataModule(root=DATA_ROOT)
    datamodule.setup()
    images, labels = (t.to(DEVICE) for t in datamodule.train_set.tensors)
    report(f"\n## lightning: a bare LightningModule next to the tight loop, taking turns, {repeats} runs")
    for name, (window, windows) in WINDOWS[128].items():
        for empty_callbacks in (0, 20):
            ratios = []
            for _ in range(repeats):
                watch = Interleaved({"tight": plain_loop(name, shuffled_batches(images, labels))}, window, windows,
                                    watched="bare")
                trainer = L.Trainer(
                    max_epochs=1, limit_train_batches=WARMUP + window * windows + 1, limit_val_batches=0,
                    num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, callbacks=[watch, *(Callback() for _ in range(empty_callbacks))])
                trainer.fit(BareModule(name), train_dataloaders=datamodule.train_dataloader())
                rates = watch.images_per_second()
                ratios.append(rates["bare"] / rates["tight"])
            report(f"{name:5s} bare Lightning + {empty_callbacks:2d} empty callbacks / tight = "
                   f"{statistics.median(ratios):.2f}  (runs: {', '.join(f'{r:.2f}' for r in ratios)})")


def run_seconds_and_peak_memory(*overrides: str) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MiB) of `python train.py <overrides>` from start to exit.

    The peak is the child's VmHWM, read every 0.1 s (Linux). Not ru_maxrss: a forked child starts
    with this large process's pages counted, so ru_maxrss would report this process's size.
    """
    with tempfile.TemporaryDirectory() as run_dir:
        start, peak_kib = time.perf_counter(), 0
        process = subprocess.Popen([sys.executable, "train.py", *overrides, f"data.root={DATA_ROOT}",
                                    f"hydra.run.dir={run_dir}"],
                                   cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while process.poll() is None:
            try:
                status = Path(f"/proc/{process.pid}/status").read_text()
                peak_kib = max(peak_kib, int(status.split("VmHWM:")[1].split()[0]))
            except (OSError, IndexError):  # exiting, or not Linux
                pass
            time.sleep(0.1)
        seconds = time.perf_counter() - start
    if process.returncode:
        raise RuntimeError(f"python train.py {' '.join(overrides)} failed")
    return seconds, peak_kib / 1024


def part_epoch(repeats: int) -> None:
    report("\n## epoch: python train.py epochs=1 (batch 128, z_dim 20, full data)")
    for name in MODELS:
        clock = vae_lab_run(f"model={name}", "epochs=1")
        training = clock.seconds_per_epoch()
        report(f"{name:5s} training {training:5.1f} s/epoch ({TRAIN_IMAGES / training:.0f} images/s), "
               f"then validation with its pictures {clock.validation[0]:4.1f} s")
    for overrides in (["model=dense"], ["model=conv"], ["model=dense", "trainer=ddp"], ["model=conv", "trainer=ddp"]):
        seconds, peak = run_seconds_and_peak_memory(*overrides, "epochs=1")
        memory = f", peak RSS {peak:.0f} MiB" if "trainer=ddp" not in overrides else " (2 processes, 1 thread each)"
        report(f"`python train.py {' '.join(overrides)} epochs=1`: {seconds:5.1f} s from start to exit{memory}")


def part_scaling(repeats: int) -> None:
    report("\n## scaling: vae_lab training seconds per epoch of 60,000 digits, from a timed stretch")
    budget = {"dense": 25_600, "conv": 12_800}  # digits timed per setting
    for name in MODELS:
        for batch_size, z_dim in [(64, 20), (128, 20), (256, 20), (512, 20), (128, 2), (128, 64)]:
            rate = vae_lab_throughput(name, budget[name] // batch_size, batch_size, f"z_dim={z_dim}")
            report(f"{name:5s} batch {batch_size:3d} z_dim {z_dim:2d}: {TRAIN_IMAGES / rate:5.1f} s/epoch "
                   f"({rate:.0f} images/s)")


def part_sweep(repeats: int) -> None:
    report("\n## sweep: python train.py -m hydra/launcher=joblib hydra.launcher.n_jobs=J beta=1,3,8,16 epochs=1")
    seconds = {}
    for jobs in (1, 2):
        with tempfile.TemporaryDirectory() as sweep_dir:
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "train.py", "-m", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}",
                 "beta=1,3,8,16", "epochs=1", f"data.root={DATA_ROOT}", f"hydra.sweep.dir={sweep_dir}"],
                cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seconds[jobs] = time.perf_counter() - start
        report(f"J={jobs}: {seconds[jobs]:5.1f} s for the 4 dense runs "
               f"({4 * TRAIN_IMAGES / seconds[jobs]:.0f} training digits/s over the sweep)")
    report(f"2 jobs / 1 job throughput: {seconds[1] / seconds[2]:.2f}")


# The knobs of docs/metrics.md's baseline table, each added to the ones before it (the last row is the
# +experiment=binarized_baseline step), then the other KL schedules on the reference model.
WIDE = ["model.hidden=[512,256]", "z_dim=50"]
WARM = [*WIDE, "kl_schedule=linear_warmup"]
COSINE = [*WARM, "lr_schedule=cosine"]
HIERARCHICAL = ["model=hvae", "model.hidden=[512,256]", "z_dim=64", "model.top_dim=32", "model.top_hidden=[256,128]",
                "kl_schedule=linear_warmup", "lr_schedule=cosine", "loss.iwae_k=5"]
KNOBS = {
    "reference dense 784-256-128-20": [],
    "wider: 784-512-256-50": WIDE,
    "+ KL warm-up": WARM,
    "+ cosine learning rate": COSINE,
    "+ IWAE bound, k=5 (the preset)": [*COSINE, "loss.iwae_k=5"],
    "one layer + VampPrior, 500 pseudo-inputs": [*COSINE, "loss.iwae_k=5", "prior=vamp"],
    "two layers (+experiment=hierarchical_baseline)": HIERARCHICAL,
    "two layers + VampPrior on the top": [*HIERARCHICAL, "prior=vamp"],
    "reference + cyclical KL": ["kl_schedule=cyclical"],
    "reference + capacity KL": ["kl_schedule=capacity"],
    "reference + free bits 0.1": ["loss.free_bits=0.1"],
}


def part_knobs(repeats: int) -> None:
    """What each knob costs per epoch: vae_lab's training steps under each setting (dynamic
    binarization, batch 128), the settings taking turns, ``repeats`` rounds; medians."""
    steps = 100
    report(f"\n## knobs: vae_lab training seconds per epoch of 60,000 digits ({steps} timed steps, "
           f"medians of {repeats} rounds taking turns), data.binarize=dynamic")
    rates = {knob: [] for knob in KNOBS}
    for _ in range(repeats):
        for knob, overrides in KNOBS.items():
            model = overrides[0].removeprefix("model=") if overrides[:1] == ["model=hvae"] else "dense"
            rates[knob].append(vae_lab_throughput(model, steps, 128, "data.binarize=dynamic",
                                                  *overrides[model != "dense":]))
    reference = TRAIN_IMAGES / statistics.median(rates["reference dense 784-256-128-20"])
    for knob in KNOBS:
        seconds = TRAIN_IMAGES / statistics.median(rates[knob])
        report(f"{knob:34s} {seconds:5.1f} s/epoch  ({seconds / reference:.2f} × the reference)")


def part_compile(repeats: int) -> None:
    """Whether torch.compile of the model pays on a 20-epoch run: the tight loop for 20 epochs of
    the training digits, eager and compiled, the compilation included in the compiled time."""
    datamodule = ImageDataModule(root=DATA_ROOT)
    datamodule.setup()
    images, labels = (t.to(DEVICE) for t in datamodule.train_set.tensors)
    steps = 20 * TRAIN_IMAGES // 128
    report(f"\n## compile: 20 epochs ({steps} steps) of the tight loop, eager and torch.compile'd")
    for name in COMPILE_MODELS:
        seconds = {}
        for way in ("eager", "compiled"):
            torch.manual_seed(0)
            model, loss_function = build_model({"model": {"name": name, "z_dim": 20}}).to(DEVICE), VAELoss()

            def step_loss(x):
                mu, logvar = model.encode(x)
                return loss_function(model, x, None, mu, logvar, ELBO)["loss"]

            compute = torch.compile(step_loss) if way == "compiled" else step_loss
            optimizer = configured_optimizer(model.parameters())
            batches = shuffled_batches(images, labels)
            start = synchronized_clock()
            for _ in range(steps):
                x, _ = next(batches)
                optimizer.zero_grad()
                loss = compute(x)
                loss.backward()
                optimizer.step()
            seconds[way] = synchronized_clock() - start
        report(f"{name:5s} eager {seconds['eager']:6.1f} s, compiled {seconds['compiled']:6.1f} s "
               f"(compiled / eager = {seconds['compiled'] / seconds['eager']:.2f})")


def main():
    parts = {"ratios": part_ratios, "profile": part_profile, "lightning": part_lightning, "nvml": part_nvml,
             "epoch": part_epoch, "scaling": part_scaling,
             "sweep": part_sweep, "compile": part_compile, "knobs": part_knobs}
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", metavar="part", help=f"some of: {' '.join(parts)} (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="runs of each way in ratios and lightning")
    parser.add_argument("--compile-models", nargs="+", choices=list(MODELS), default=list(MODELS),
                        help="the models of the compile part (conv takes ~8 minutes on 2 cores)")
    parser.add_argument("--steps-per-execution", nargs="+", type=int, default=STEPS_PER_EXECUTION,
                        help="the values of trainer.steps_per_execution in ratios and profile (divisors of 16)")
    parser.add_argument("--batch-size", type=int, choices=list(WINDOWS), default=BATCH_SIZE[0],
                        help="the batch size of ratios (the targets are at 128; docs/performance.md also has 1024)")
    args = parser.parse_args()
    BATCH_SIZE[0] = args.batch_size
    COMPILE_MODELS[:] = args.compile_models
    STEPS_PER_EXECUTION[:] = args.steps_per_execution
    if unknown := set(args.parts) - set(parts):
        parser.error(f"unknown part {', '.join(sorted(unknown))}; use some of: {' '.join(parts)}")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banners between the figures
    device = torch.cuda.get_device_name() if DEVICE.type == "cuda" else "no GPU"
    report(f"{os.cpu_count()} CPUs, {device}, torch {torch.__version__} with {torch.get_num_threads()} threads, "
           f"data from {DATA_ROOT}")
    for part in args.parts or parts:
        parts[part](args.repeats)
    print("\n# summary\n" + "\n".join(REPORT))


if __name__ == "__main__":
    exit_on_error(main)  # e.g. no MNIST under VAE_LAB_DATA: one line, no traceback
