"""A β sweep trained as one stacked model (hydra/launcher=stacked) next to the same runs one after
another, in one process, taking turns.

    VAE_LAB_DATA=../shared/data python benchmarks/stacking.py                    # dense and conv, M = 2, 4, 8, 16
    VAE_LAB_DATA=../shared/data python benchmarks/stacking.py --models dense --members 4 --steps 200

For each model and M, the M runs of the reference β sweep (conv_mse_z20_beta: loss=mse, z_dim=20,
β = 1, 3, 8, 16, repeated with seeds 1, 2, 3 beyond 4 members), shortened to ``--steps`` training
batches of one epoch and ``--val-batches`` validation batches, are trained ``--turns`` times each of
three ways, taking turns (each turn in the other order than the last): sequential, ``train(cfg)`` M
times; one by one, ``train_stacked(cfgs)``, the members' steps one after another inside one stacked
step (the CPU default, bit-exact); vmap, ``train_stacked(cfgs, vectorized=True)``. Printed: the
wall time of each way (everything each call does: building, validation at step 0 and after the
epoch, checkpoints, summary; no pictures), the ratio to sequential, the same ratio for the training
steps alone (timed by a callback), and
the ratio of this process's CPU seconds (user + system: on a host shared with other jobs, the
work each way did, which the load cannot stretch as it stretches wall time; exact only at
``--threads 1``, where no thread spins waiting for another), the training images per second of all
members together each way, and of each member when stacked (sequential: each member trains at the
one-run rate, the same as all together). Then the peak resident memory (VmHWM) of one run and of the stacked
M = 4 sweep, each in a fresh process.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
import torch
from lightning.pytorch.callbacks import Callback

from vae_lab.cli import start_process

start_process()  # before any tensor work, as the command lines
from vae_lab.config import CONF  # noqa: E402
from vae_lab.training import train  # noqa: E402
from vae_lab.training.stacked import train_stacked  # noqa: E402

BETAS = (1, 3, 8, 16)  # vae_lab/conf/experiment/conv_mse_z20_beta.yaml
QUIET = ["callbacks.figures=null", "callbacks.progress_bar=null", "callbacks.summary.console=false",
         "trainer.accelerator=cpu", "epochs=1"]


class EpochClock(Callback):
    """Seconds of each training epoch's steps (validation excluded: it runs after the epoch's last step)."""

    def __init__(self):
        self.seconds = []

    def on_train_epoch_start(self, trainer, pl_module):
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.ended = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds.append(self.ended - self.started)


def configs(folder: Path, model: str, members: int, steps: int, val_batches: int, extra=()):
    grid = [(BETAS[i % len(BETAS)], i // len(BETAS)) for i in range(members)]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return [compose("config", overrides=[f"output_dir={folder / f'{i}-beta{beta}-seed{seed}'}", f"model={model}",
                                             "loss=mse", "z_dim=20", f"beta={beta}", f"seed={seed}", *QUIET,
                                             f"trainer.limit_train_batches={steps}",
                                             f"trainer.limit_val_batches={val_batches}", *extra])
                for i, (beta, seed) in enumerate(grid)]


def sequential(cfgs) -> tuple[float, float, float]:
    """(wall seconds, training seconds, CPU seconds of this process) of the runs one after another."""
    started, cpu, clock = time.perf_counter(), time.process_time(), EpochClock()
    for cfg in cfgs:
        train(cfg, callbacks=[clock])
    return time.perf_counter() - started, sum(clock.seconds), time.process_time() - cpu


def stacked(cfgs, vectorized: bool) -> tuple[float, float, float]:
    started, cpu, clock = time.perf_counter(), time.process_time(), EpochClock()
    train_stacked(cfgs, callbacks=[clock], vectorized=vectorized)
    return time.perf_counter() - started, sum(clock.seconds), time.process_time() - cpu


WAYS = {"sequential": sequential, "stacked": lambda cfgs: stacked(cfgs, False), "vmap": lambda cfgs: stacked(cfgs, True)}


def compare(model: str, members: int, args) -> dict:
    """The M runs each way, the ways taking turns (each turn in the other order than the last)."""
    times = {way: [] for way in WAYS}
    for turn in range(args.turns):
        for way in (list(WAYS) if turn % 2 == 0 else list(WAYS)[::-1]):
            with tempfile.TemporaryDirectory() as folder:
                cfgs = configs(Path(folder), model, members, args.steps, args.val_batches, args.override)
                times[way].append(WAYS[way](cfgs))
    images = args.steps * 128 * members  # all members together
    median = {way: [statistics.median(t[j] for t in runs) for j in range(3)] for way, runs in times.items()}
    (wall, training, cpu) = median["sequential"]
    cells = [model, str(members), f"{wall:.1f}"]
    for way in ("stacked", "vmap"):
        ratios = ", ".join(f"{s[0] / q[0]:.2f}" for s, q in zip(times[way], times["sequential"]))
        cells += [f"{median[way][0]:.1f}", f"**{median[way][0] / wall:.2f}** ({ratios})",
                  f"{median[way][1] / training:.2f}", f"{median[way][2] / cpu:.2f}"]
    cells += [f"{images / training:,.0f}", f"{images / median['stacked'][1]:,.0f}", f"{images / median['vmap'][1]:,.0f}",
              f"{images / median['stacked'][1] / members:,.0f}"]
    print(f"| {' | '.join(cells)} |", flush=True)
    return median


def peak_rss(args) -> None:
    """The peak resident memory of one run and of the stacked M = 4 sweep, each in a fresh process."""
    for model in args.models:
        rss = {}
        for members in (1, 4):
            command = [sys.executable, __file__, "--rss-child", str(members), "--models", model,
                       "--threads", str(args.threads), "--steps", str(args.steps), "--val-batches", str(args.val_batches),
                       *(["--vectorized"] if args.vectorized else []), *sum((["--override", o] for o in args.override), [])]
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            rss[members] = int(out.split("VmHWM_kB=")[1].split()[0]) / 1024
        print(f"peak RSS, {model}: one run {rss[1]:,.0f} MiB, stacked M=4 {rss[4]:,.0f} MiB "
              f"({rss[4] / rss[1]:.2f}x)", flush=True)


def rss_child(members: int, args) -> None:
    with tempfile.TemporaryDirectory() as folder:
        cfgs = configs(Path(folder), args.models[0], members, args.steps, args.val_batches, args.override)
        train(cfgs[0]) if members == 1 else train_stacked(cfgs, vectorized=args.vectorized)
    status = Path("/proc/self/status").read_text()
    print("VmHWM_kB=" + status.split("VmHWM:")[1].split()[0])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["dense", "conv"])
    parser.add_argument("--members", nargs="+", type=int, default=[2, 4, 8, 16])
    parser.add_argument("--steps", type=int, default=96, help="training batches per run (one epoch)")
    parser.add_argument("--val-batches", type=int, default=4)
    parser.add_argument("--turns", type=int, default=2, help="runs of each way, each turn in the other order")
    parser.add_argument("--override", action="append", default=[], help="another key=value for every run")
    parser.add_argument("--threads", type=int, default=0, help="torch's CPU threads (default: torch's own, one per core)")
    parser.add_argument("--no-rss", action="store_true")
    parser.add_argument("--vectorized", action="store_true", help="the peak memory of the vmap way")
    parser.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        return rss_child(args.rss_child, args)
    print(f"{args.steps} training batches of 128 per run, {args.val_batches} validation batches; load average "
          f"{os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, torch uses {torch.get_num_threads()} threads\n")
    print("| model | M | sequential, s | one by one, s | / sequential (turns) | training | CPU | vmap, s | "
          "/ sequential (turns) | training | CPU | training images/s, sequential | one by one | vmap | "
          "one by one, per member |")
    print("|" + " --- |" * 16)
    for model in args.models:
        for members in args.members:
            compare(model, members, args)
    if not args.no_rss:
        peak_rss(args)


if __name__ == "__main__":
    main()
