"""Compare runs: one table and a few pictures from any run folders and sweep folders.

    python -m vae_lab.report outputs/sweeps/<date_time>                    # a sweep's runs
    python -m vae_lab.report outputs/dense-bce-* outputs/sweeps/<date_time> --out outputs/reports/mine

Each path is a run folder (it holds summary.json or .hydra/) or a folder of runs (a sweep's), or a
quoted glob of them. Writes into ``--out`` (default: the folder given, when it is one sweep folder;
else ``outputs/reports/<date_time>``):
  report.md             one row per run: the settings that differ between runs, its status and final
                        losses per sample (train loss, val loss, reconstruction, KL; nats for bce; and
                        val_bits_per_dim for a likelihood of 8-bit pixels) and the numbers of its
                        evaluation (summary.json, metrics.json: test_bits_per_dim, ...); then, for runs that
                        differ only in their seed, one row per group with the mean ± standard deviation
  rate_distortion.png   final val KL (rate) against val reconstruction (distortion), a point per
                        run labelled with β, a line per z_dim
  disentanglement.png   when evaluated runs differ in β: MIG, DCI disentanglement and completeness
                        and SAP (metrics.json, vae_lab.evaluation.disentanglement) against β, a line per
                        setting that differs besides β and the seed, mean ± std over seeds
  samples_by_run.png    each run's samples.png (cvae: digits.png) side by side
  manifolds_by_run.png  each z_dim = 2 run's manifold.png side by side
The pictures only show finished runs; a picture no finished run has is not written. Everything is
read from the runs' summary.json (vae_lab.training.callbacks.summary), never from their TensorBoard events.
"""
import datetime
import glob
import json
import math
import os
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
from PIL import Image

from vae_lab.errors import VaeLabError
from vae_lab.runs import SUMMARY_FILE, job_order, numbers

# column -> key of the summary's final losses
LOSSES = {"train loss": "train_loss", "val loss": "val_loss", "val recon": "val_recon", "val KL": "val_kl"}
# the disentanglement metrics plotted against β (vae_lab.evaluation.disentanglement)
DISENTANGLEMENT = ("mig", "dci_disentanglement", "dci_completeness", "sap")
USAGE = "python -m vae_lab.report <run or sweep folder> [more folders or globs] [--out DIR]"


def is_run(path: Path) -> bool:
    return (path / SUMMARY_FILE).is_file() or (path / ".hydra").is_dir()


def find_runs(paths: list[Path]) -> list[Path]:
    """The run folders among ``paths`` and directly under those that are not runs themselves (a
    sweep's, in job order), each once."""
    runs = []
    for path in paths:
        if not path.is_dir():
            raise VaeLabError(f"{path}: no such folder")
        found = [path] if is_run(path) else sorted((p for p in path.iterdir() if is_run(p)), key=job_order)
        if not found:
            raise VaeLabError(f"{path}: no runs in it (a run folder holds summary.json or .hydra/, a sweep "
                              "folder one such folder per run, as python train.py -m writes)")
        runs += [run for run in found if run not in runs]
    return runs


def read_json(path: Path) -> dict:
    """A JSON object from path, or {} if there is none or it is damaged (a run killed mid-write)."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def read_run(run_dir: Path) -> dict:
    """What the report shows of one run, from its summary.json (and metrics.json, which
    python -m vae_lab.evaluate may have written since): settings, status, final losses, metrics."""
    summary = read_json(run_dir / SUMMARY_FILE)
    settings = summary.get("settings") if isinstance(summary.get("settings"), dict) else {}
    status = summary.get("status") if summary.get("status") in ("running", "failed", "finished") else "failed"
    figures = summary.get("figures") if isinstance(summary.get("figures"), dict) else {}
    if status == "finished" and figures.get("error"):
        status = "finished, pictures failed"
    final = numbers(summary.get("final") if isinstance(summary.get("final"), dict) else {})
    metrics = numbers(summary.get("metrics") if isinstance(summary.get("metrics"), dict) else {})
    metrics.update(numbers(read_json(run_dir / "metrics.json")))
    if "val_bits_per_dim" in final:  # likelihoods of 8-bit pixels: the final ELBO in bits per dimension too
        metrics = {"val_bits_per_dim": final["val_bits_per_dim"], **metrics}
    return {"dir": run_dir, "name": run_dir.name, "settings": settings, "status": status,
            "losses": {column: final[key] for column, key in LOSSES.items() if key in final},
            "metrics": metrics}


def shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def differing(runs: list[dict]) -> list[str]:
    """Settings whose value is not the same in every run, in first-seen order."""
    keys = list(dict.fromkeys(key for run in runs for key in run["settings"]))
    return [key for key in keys if len({shown(run["settings"].get(key)) for run in runs}) > 1]


def label(run: dict, keys: list[str]) -> str:
    return " ".join(f"{key}={shown(run['settings'].get(key, '-'))}" for key in keys) or run["name"]


def table(runs: list[dict]) -> str:
    keys = differing(runs)
    metric_keys = list(dict.fromkeys(key for run in runs for key in run["metrics"]))
    header = ["run", *keys, "status", *LOSSES, *metric_keys]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for run in runs:
        cells = [run["name"], *(shown(run["settings"].get(key, "")) for key in keys),
                 run["status"] if run["status"].startswith("finished") else f"**{run['status']}**",
                 *(f"{run['losses'][c]:.2f}" if c in run["losses"] else "—" for c in LOSSES),
                 *(f"{run['metrics'][k]:.4g}" if k in run["metrics"] else "—" for k in metric_keys)]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def rate_distortion(runs: list[dict], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(6, 4.5))
    for z_dim in sorted({run["settings"].get("z_dim") for run in runs}, key=str):
        line = sorted((run for run in runs if run["settings"].get("z_dim") == z_dim),
                      key=lambda run: run["settings"].get("beta", 0))
        kl = [run["losses"]["val KL"] for run in line]
        recon = [run["losses"]["val recon"] for run in line]
        axes.plot(kl, recon, "o-", label=f"z_dim={z_dim}")
        for run, x, y in zip(line, kl, recon):
            axes.annotate(f"β={shown(run['settings'].get('beta'))}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set(xlabel="rate: val KL per sample (nats)", ylabel="distortion: val reconstruction per sample",
             title="Rate–distortion, one point per run")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def disentanglement_by_beta(runs: list[dict], path: Path) -> None:
    """One panel per metric of ``DISENTANGLEMENT`` against β (log scale when every β > 0): a line per
    group of runs alike in all but β and the seed, each point the mean over its seeds, the bars
    their standard deviation."""
    keys = [key for key in differing(runs) if key not in ("beta", "seed")]
    betas = sorted({run["settings"]["beta"] for run in runs})
    lines = {}
    for run in runs:
        name = " ".join(f"{key}={shown(run['settings'].get(key, '-'))}" for key in keys) or "runs"
        lines.setdefault(name, {}).setdefault(run["settings"]["beta"], []).append(run["metrics"])
    figure, axes = plt.subplots(1, len(DISENTANGLEMENT), figsize=(3 * len(DISENTANGLEMENT), 3.2), sharey=True)
    for axis, metric in zip(axes, DISENTANGLEMENT):
        for name, by_beta in lines.items():
            line = sorted(by_beta)
            values = [[found[metric] for found in by_beta[beta]] for beta in line]
            axis.errorbar(line, [statistics.mean(v) for v in values],
                          yerr=[statistics.stdev(v) if len(v) > 1 else 0 for v in values], marker="o", capsize=3, label=name)
        axis.set(title=metric, xlabel="β", ylim=(0, 1))
        if min(betas) > 0:
            axis.set_xscale("log")
        axis.set_xticks(betas, [shown(beta) for beta in betas], minor=False)
        axis.minorticks_off()
    axes[0].set_ylabel("score (1: one dimension per factor)")
    if len(lines) > 1:
        axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def side_by_side(images: list[tuple[str, Path]], path: Path, columns: int = 4) -> None:
    """The PNGs in a grid of at most `columns` per row, each titled with its run's label."""
    rows = math.ceil(len(images) / columns)
    ncols = min(columns, len(images))
    figure, axes = plt.subplots(rows, ncols, figsize=(3 * ncols, 3.3 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for axis, (title, png) in zip(axes.flat, images):
        axis.imshow(Image.open(png), cmap="gray")
        axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def seed_groups(runs: list[dict]) -> list[list[dict]]:
    """Finished runs whose settings agree in everything but the seed, in groups of two or more."""
    groups = {}
    for run in runs:
        if run["status"].startswith("finished") and run["settings"]:
            key = tuple(sorted((k, shown(v)) for k, v in run["settings"].items() if k != "seed"))
            groups.setdefault(key, []).append(run)
    return [group for group in groups.values() if len(group) > 1]


def mean_and_spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else "—"


def seed_table(groups: list[list[dict]], keys: list[str]) -> str:
    """One row per group of ``seed_groups``: its ``keys`` settings (those that differ between the
    runs but the seed), its seeds, and the mean ± sample standard deviation of every loss and metric."""
    keys = [key for key in keys if key != "seed"]
    metric_keys = list(dict.fromkeys(key for group in groups for run in group for key in run["metrics"]))
    header = [*keys, "seeds", *LOSSES, *metric_keys]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for group in groups:
        seeds = ", ".join(shown(run["settings"].get("seed")) for run in group)
        cells = [*(shown(group[0]["settings"].get(key, "")) for key in keys), seeds,
                 *(mean_and_spread([run["losses"][c] for run in group if c in run["losses"]]) for c in LOSSES),
                 *(mean_and_spread([run["metrics"][k] for run in group if k in run["metrics"]]) for k in metric_keys)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(paths: list[Path], out: Path | None = None) -> list[Path]:
    """Write the files described in the module docstring into ``out``; return their paths."""
    run_dirs = find_runs(paths)
    if out is None:
        single_sweep = len(paths) == 1 and not is_run(paths[0])
        out = paths[0] if single_sweep else Path("outputs", "reports", f"{datetime.datetime.now():%Y-%m-%d_%H-%M-%S}")
    out.mkdir(parents=True, exist_ok=True)
    runs = [read_run(run_dir) for run_dir in run_dirs]
    parent = Path(os.path.commonpath([run["dir"].resolve() for run in runs]))
    for run in runs:  # names that stay apart when runs come from several folders
        run["name"] = str(run["dir"].resolve().relative_to(parent)) if len(runs) > 1 else run["dir"].name
    keys = differing(runs)
    title = paths[0].name if len(paths) == 1 else f"{len(runs)} runs"
    text = (f"# Report: {title}\n\nLosses per sample, last epoch; "
            f"{sum(not run['status'].startswith('finished') for run in runs)} of {len(runs)} runs did not finish.\n\n"
            + table(runs))
    if groups := seed_groups(runs):
        text += "\n## Over seeds\n\nRuns that differ only in their seed: mean ± standard deviation.\n\n" + seed_table(groups, keys)
    written = [out / "report.md"]
    written[0].write_text(text)
    finished = [run for run in runs if run["status"].startswith("finished") and len(run["losses"]) == len(LOSSES)]
    if finished:
        rate_distortion(finished, out / "rate_distortion.png")
        written.append(out / "rate_distortion.png")
    evaluated = [run for run in finished if all(key in run["metrics"] for key in DISENTANGLEMENT)
                 and isinstance(run["settings"].get("beta"), (int, float))]
    if len({run["settings"]["beta"] for run in evaluated}) > 1:
        disentanglement_by_beta(evaluated, out / "disentanglement.png")
        written.append(out / "disentanglement.png")
    for name, pngs in (("samples_by_run", ("samples.png", "digits.png")), ("manifolds_by_run", ("manifold.png",))):
        images = [(label(run, keys), run["dir"] / png) for run in finished for png in pngs if (run["dir"] / png).is_file()]
        if images:
            side_by_side(images, out / f"{name}.png")
            written.append(out / f"{name}.png")
    return written


def parse(argv: list[str]) -> tuple[list[Path], Path | None]:
    """(folders, --out) from the command line; quoted globs are expanded here."""
    paths, out = [], None
    arguments = iter(argv)
    for argument in arguments:
        if argument == "--out":
            out = next(arguments, None)
            if out is None:
                raise VaeLabError(f"--out needs a folder: {USAGE}")
            out = Path(out)
        elif argument.startswith("-"):
            raise VaeLabError(f"unknown option {argument}: {USAGE}")
        elif glob.has_magic(argument):
            matches = sorted(glob.glob(argument))
            if not matches:
                raise VaeLabError(f"{argument}: matches no folder")
            paths += map(Path, matches)
        else:
            paths.append(Path(argument))
    if not paths:
        raise VaeLabError(f"give run or sweep folders: {USAGE}")
    return paths, out


def main(argv: list[str] | None = None) -> None:
    try:
        written = report(*parse(sys.argv[1:] if argv is None else argv))
    except VaeLabError as error:
        sys.exit(f"error: {error}")
    print(f"wrote {', '.join(path.name for path in written)} to {written[0].parent}")


if __name__ == "__main__":
    main()
