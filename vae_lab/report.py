"""Gather the runs of a sweep into one table and a few pictures.

    python -m vae_lab.report outputs/sweeps/<date_time>

Writes into the sweep folder:
  report.md             one row per run: the overrides that differ between runs, the final losses per
                        sample (train loss, val loss, reconstruction, KL; nats for bce) and the numeric
                        keys of the run's metrics.json when it has one; a run without final metrics is
                        marked failed
  rate_distortion.png   final val KL (rate) against val reconstruction (distortion), a point per
                        run labelled with β, a line per z_dim
  samples_by_run.png    each run's samples.png (cvae: digits.png) side by side
  manifolds_by_run.png  each z_dim = 2 run's manifold.png side by side
The pictures only show finished runs; a picture no finished run has is not written.
"""
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
from PIL import Image

from vae_lab.errors import VaeLabError
from vae_lab.summary import SUMMARY_FILE, numbers

# column -> key of the summary's final losses
LOSSES = {"train loss": "train_loss", "val loss": "val_loss", "val recon": "val_recon", "val KL": "val_kl"}


def find_runs(sweep_dir: Path) -> list[Path]:
    """The run folders (those with .hydra/ or a summary.json) directly under sweep_dir, in job order."""
    if not sweep_dir.is_dir():
        raise VaeLabError(f"{sweep_dir}: no such folder")
    runs = [path for path in sweep_dir.iterdir() if (path / ".hydra").is_dir() or (path / SUMMARY_FILE).is_file()]
    if not runs:
        raise VaeLabError(f"{sweep_dir}: no runs in it (a sweep folder holds one folder with .hydra/ per run, "
                          "as python train.py -m writes)")

    def job_order(path):
        number = path.name.split("-")[0]
        return (int(number), path.name) if number.isdigit() else (math.inf, path.name)

    return sorted(runs, key=job_order)


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
    return {"dir": run_dir, "settings": settings, "status": status,
            "losses": {column: final[key] for column, key in LOSSES.items() if key in final},
            "metrics": metrics}


def shown(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def differing(runs: list[dict]) -> list[str]:
    """Settings whose value is not the same in every run, in first-seen order."""
    keys = list(dict.fromkeys(key for run in runs for key in run["settings"]))
    return [key for key in keys if len({shown(run["settings"].get(key)) for run in runs}) > 1]


def label(run: dict, keys: list[str]) -> str:
    return " ".join(f"{key}={shown(run['settings'].get(key, '-'))}" for key in keys) or run["dir"].name


def table(runs: list[dict]) -> str:
    keys = differing(runs)
    metric_keys = list(dict.fromkeys(key for run in runs for key in run["metrics"]))
    header = ["run", *keys, "status", *LOSSES, *metric_keys]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for run in runs:
        cells = [run["dir"].name, *(shown(run["settings"].get(key, "")) for key in keys),
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


def report(sweep_dir: Path) -> list[Path]:
    """Write the files described in the module docstring; return their paths."""
    runs = [read_run(run_dir) for run_dir in find_runs(sweep_dir)]
    keys = differing(runs)
    written = [sweep_dir / "report.md"]
    written[0].write_text(f"# Sweep {sweep_dir.name}\n\nLosses per sample, last epoch; "
                          f"{sum(not run['status'].startswith('finished') for run in runs)} of {len(runs)} "
                          "runs did not finish.\n\n" + table(runs))
    finished = [run for run in runs if run["status"].startswith("finished") and len(run["losses"]) == len(LOSSES)]
    if finished:
        rate_distortion(finished, sweep_dir / "rate_distortion.png")
        written.append(sweep_dir / "rate_distortion.png")
    for name, pngs in (("samples_by_run", ("samples.png", "digits.png")), ("manifolds_by_run", ("manifold.png",))):
        images = [(label(run, keys), run["dir"] / png) for run in finished for png in pngs if (run["dir"] / png).is_file()]
        if images:
            side_by_side(images, sweep_dir / f"{name}.png")
            written.append(sweep_dir / f"{name}.png")
    return written


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if len(argv) != 1:
            raise VaeLabError("give one sweep folder: python -m vae_lab.report outputs/sweeps/<date_time>")
        written = report(Path(argv[0]))
    except VaeLabError as error:
        sys.exit(f"error: {error}")
    print(f"wrote {', '.join(path.name for path in written)} to {written[0].parent}")


if __name__ == "__main__":
    main()
