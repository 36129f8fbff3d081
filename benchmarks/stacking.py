"""A β sweep trained as one stacked model (hydra/launcher=stacked) next to the same runs one after
another, in one process, taking turns.

    VAE_LAB_DATA=../shared/data python benchmarks/stacking.py                    # dense and conv, M = 2, 4, 8, 16
    VAE_LAB_DATA=../shared/data python benchmarks/stacking.py --models dense --members 4 --steps 200

For each model and M, the M runs of the reference β sweep (conv_mse_z20_beta: loss=mse, z_dim=20,
β = 1, 3, 8, 16, repeated with seeds 1, 2, 3 beyond 4 members), shortened to ``--steps`` training
batches of one epoch and ``--val-batches`` validation batches, are trained ``--turns`` times each
way, the ways taking turns (each turn in the other order than the last): sequential, ``train(cfg)``
M times; and stacked, ``train_stacked(cfgs)``: side by side (the CPU default: each member's own
step, a member per core in threads), one by one (``workers=1``: one member's step after another,
bit-exact) and vmap (``vectorized=True``, the GPU default). Printed: the wall time of each way
(everything each call does: building, validation at step 0 and after the epoch, checkpoints,
summary; no pictures), its ratio to sequential (each turn's in brackets), the same ratio for the
training steps alone (timed by a callback) and for this process's CPU seconds (user + system, all
threads), and the training images per second of all members together and per member. Then the
peak resident memory (VmHWM) of one run and of the stacked M = 4 sweep, each in a fresh process;
and the floor: how fast one member's step goes at one and at two threads, and two members side by
side at one thread each (``floor``), which bounds what stacking can save of training on this machine.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf

from vae_lab.cli import start_process

start_process()  # before any tensor work, as the command lines
from vae_lab.config import CONF  # noqa: E402
from vae_lab.training import train  # noqa: E402
from vae_lab.training.stacked import train_stacked  # noqa: E402

BETAS = (1, 3, 8, 16)  # vae_lab/conf/experiment/conv_mse_z20_beta.yaml
QUIET = ["callbacks.figures=null", "callbacks.progress_bar=null", "callbacks.summary.console=false", "epochs=1"]


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


def stacked(cfgs, **how) -> tuple[float, float, float]:
    started, cpu, clock = time.perf_counter(), time.process_time(), EpochClock()
    train_stacked(cfgs, callbacks=[clock], **how)
    return time.perf_counter() - started, sum(clock.seconds), time.process_time() - cpu


WAYS = {"sequential": sequential,
        "side by side": lambda cfgs: stacked(cfgs, vectorized=False),  # the CPU default: a member per core
        "one by one": lambda cfgs: stacked(cfgs, vectorized=False, workers=1),
        "vmap": lambda cfgs: stacked(cfgs, vectorized=True)}


def compare(model: str, members: int, args) -> dict:
    """The M runs each way, the ways taking turns (each turn in the other order than the last)."""
    times = {way: [] for way in args.ways}
    for turn in range(args.turns):
        for way in (args.ways if turn % 2 == 0 else args.ways[::-1]):
            with tempfile.TemporaryDirectory() as folder:
                cfgs = configs(Path(folder), model, members, args.steps, args.val_batches, args.override)
                times[way].append(WAYS[way](cfgs))
    images = args.steps * 128 * members  # all members together
    median = {way: [statistics.median(t[j] for t in runs) for j in range(3)] for way, runs in times.items()}
    (wall, training, cpu) = median["sequential"]
    for way, (w, t, c) in median.items():
        ratios = ", ".join(f"{s[0] / q[0]:.2f}" for s, q in zip(times[way], times["sequential"]))
        print(f"| {model} | {members} | {way} | {w:.1f} | **{w / wall:.2f}** ({ratios}) | {t / training:.2f} | "
              f"{c / cpu:.2f} | {images / t:,.0f} | {images / t / members:,.0f} |", flush=True)
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


FLOOR_WAYS = {"one member at 1 thread": (1, 1), "one member at 2 threads": (2, 1),
              "2 members side by side, 1 thread each": (1, 2)}


def floor(args) -> None:
    """How fast a member's training step can go on this machine, each way in a fresh process (each
    thread reads torch's thread count once): its forward, backward and Adam step on a fixed batch,
    as ``StackedVAE`` makes it (``MemberLoss``), one model at one and at two of torch's threads, and
    two models side by side in two threads at one thread each. The sequential sweep trains at the
    two-thread rate, a stacked one at most at the side-by-side rate: their ratio is the least a
    stacked sweep's training can take of a sequential one's."""
    print("\n| model | way | ms per member step | / one member at 2 threads (turns) |\n| --- | --- | --- | --- |")
    for model in args.models:
        times = {way: [] for way in FLOOR_WAYS}
        for turn in range(args.turns):  # taking turns, as the sweeps above; medians
            for way in (list(FLOOR_WAYS) if turn % 2 == 0 else list(FLOOR_WAYS)[::-1]):
                threads, side_by_side = FLOOR_WAYS[way]
                command = [sys.executable, __file__, "--floor-child", f"{threads},{side_by_side}", "--models", model]
                out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                times[way].append(float(out.split("ms=")[1].split()[0]))
        median = {way: statistics.median(ms) for way, ms in times.items()}
        for way, ms in median.items():
            turns = ", ".join(f"{t / b:.2f}" for t, b in zip(times[way], times["one member at 2 threads"]))
            print(f"| {model} | {way} | {ms:.2f} | **{ms / median['one member at 2 threads']:.2f}** ({turns}) |", flush=True)


def floor_child(threads: int, side_by_side: int, model: str, steps: int = 60) -> None:
    from vae_lab.models import build_model
    from vae_lab.registry import KL_SCHEDULES
    from vae_lab.training.losses import build_loss
    from vae_lab.training.stacked import MemberLoss

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as folder:
        config = OmegaConf.to_container(configs(Path(folder), model, 1, 1, 1)[0], resolve=True)
    members = []
    for seed in range(side_by_side):
        torch.manual_seed(seed)
        net = build_model(config)
        terms = MemberLoss(net, build_loss(config["loss"], net, KL_SCHEDULES.build(config["kl_schedule"]), 60_000))
        members.append((terms, torch.optim.Adam(net.parameters(), lr=1e-3, fused=True)))
    x, eps = torch.rand(128, 1, 28, 28), torch.randn(1, 128, config["z_dim"])

    def train(member, n):
        terms, optimizer = member
        for _ in range(n):
            values, _ = terms(x, None, eps, torch.tensor(1.0))
            optimizer.zero_grad()
            (values["fit"] + values["penalised"]).backward()
            optimizer.step()

    for member in members:
        train(member, 5)  # warm-up
    # one member in this (the main) thread, as a run trains; several each in a thread of its own
    workers = [threading.Thread(target=train, args=(member, steps)) for member in members[1:]]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    train(members[0], steps)
    for worker in workers:
        worker.join()
    print(f"ms={(time.perf_counter() - started) / (steps * side_by_side) * 1e3:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["dense", "conv"])
    parser.add_argument("--members", nargs="*", type=int, default=[2, 4, 8, 16], help="none: the memory and the floor only")
    parser.add_argument("--steps", type=int, default=96, help="training batches per run (one epoch)")
    parser.add_argument("--val-batches", type=int, default=4)
    parser.add_argument("--turns", type=int, default=2, help="runs of each way, each turn in the other order")
    parser.add_argument("--override", action="append", default=[], help="another key=value for every run")
    parser.add_argument("--threads", type=int, default=0, help="torch's CPU threads (default: torch's own, one per core)")
    parser.add_argument("--ways", nargs="+", choices=list(WAYS), default=list(WAYS),
                        help="sequential and the stacked ways to compare with it (sequential is always run)")
    parser.add_argument("--no-rss", action="store_true")
    parser.add_argument("--vectorized", action="store_true", help="the peak memory of the vmap way")
    parser.add_argument("--accelerator", default="cpu", help="trainer.accelerator of every run (gpu on a GPU machine)")
    parser.add_argument("--no-floor", action="store_true")
    parser.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--floor-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.ways = ["sequential", *(way for way in args.ways if way != "sequential")]
    if args.rss_child:
        return rss_child(args.rss_child, args)
    if args.floor_child:
        return floor_child(*map(int, args.floor_child.split(",")), args.models[0])
    args.override = [f"trainer.accelerator={args.accelerator}", *args.override]
    print(f"{args.steps} training batches of 128 per run, {args.val_batches} validation batches; load average "
          f"{os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, torch uses {torch.get_num_threads()} threads\n")
    print("| model | M | way | wall, s | / sequential (turns) | training | CPU | training images/s | per member |")
    print("|" + " --- |" * 9)
    for model in args.models:
        for members in args.members:
            compare(model, members, args)
    if not args.no_rss:
        peak_rss(args)
    if not args.no_floor:
        floor(args)


if __name__ == "__main__":
    main()
