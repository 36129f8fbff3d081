"""See and compare runs in the browser: what a run's page needs, exported from its checkpoint.

    python -m vae_lab.explore outputs/sweeps/<date_time>                 # serve it on 127.0.0.1:8000
    python -m vae_lab.explore <run> <another run> --static explorer/     # a folder; open explorer/index.html

(``vae_lab/explore/__main__.py`` is the command line; ``page/`` the page.) For each run the page
shows, in a column: the 2-d map of its test codes, where hovering decodes the point; one slider per
latent dimension, most informative first; a CVAE's label; samples of a learned prior; its settings
and headline numbers. Runs move together: a map point or slider position decodes in every column.

Why the page decodes, not Python: every built-in decoder is a stack of Linear and ReLU layers whose
image mean is a sigmoid (``bce`` and ``mse``), so its forward pass is a few lines of JavaScript over
the weights. Exported once, as base64 float32 in a ``.js`` file (a ``<script>`` loads from file://,
where fetch() may not), the same folder works opened from disk and served, decoding takes about a
millisecond per image on one core with no round trip (docs/explore.md has the numbers), a sweep's
columns decode in step, and the server is the standard library's static http.server. What it cannot
draw: a decoder of other layers (convolutions, say) or another likelihood; those runs are refused
with one line, and the export checks its weights against torch's own decode before writing them.
"""
import base64
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np

from vae_lab.errors import VaeLabError
from vae_lab.runs import job_order

PAGE = Path(__file__).with_name("page")  # index.html, explorer.js, style.css: copied as they are
RUN_DATA = "<!-- vae_lab: run data -->"  # where index.html gets one <script> per run
# likelihood (loss.likelihood) -> the function of the decoder's outputs that gives the image mean
IMAGE_MEANS = {"bce": "sigmoid", "mse": "sigmoid"}
N_CODES = 2000  # test images on the map
N_PICKS = 10  # test images to start the sliders from: one of each class where there are classes
N_SAMPLES = 16  # samples of a learned prior
TOLERANCE = 1e-4  # the exported decoder against torch's, per pixel in [0, 1]


def is_run(path: Path) -> bool:
    return (path / "summary.json").is_file() or (path / "checkpoints").is_dir()


def status_of(run: Path) -> str:
    """What the run's summary.json says of it: running, failed, finished, or ? without one."""
    try:
        return str(json.loads((run / "summary.json").read_text()).get("status", "?"))
    except (OSError, ValueError, AttributeError):
        return "?"


def find_runs(paths) -> tuple[list[Path], list[str]]:
    """Run folders (or .ckpt files) given, and the runs of sweep folders given (the subfolders that
    are runs, in job order), each once; and a note for each sweep run skipped for having no
    checkpoint yet (running, or failed before its first epoch). VaeLabError for anything else."""
    runs, skipped = [], []
    for path in map(Path, paths):
        path = path.expanduser()
        if not path.exists():
            raise VaeLabError(f"{path}: no such run folder, sweep folder or checkpoint file")
        if path.is_file() and path.suffix == ".ckpt" or path.is_dir() and is_run(path):
            found = [path]
        else:
            found = sorted((p for p in path.iterdir() if p.is_dir() and is_run(p)), key=job_order) if path.is_dir() else []
            if not found:
                raise VaeLabError(f"{path}: not a run folder (no summary.json, no checkpoints/), nor a sweep "
                                  "folder of runs, nor a .ckpt file")
            for run in list(found):
                if not (run / "checkpoints" / "last.ckpt").is_file():
                    skipped.append(f"{run}: no checkpoint (status {status_of(run)})")
                    found.remove(run)
        runs += [run for run in found if run.resolve() not in {r.resolve() for r in runs}]
    if not runs:
        raise VaeLabError("no run with a checkpoint to show: " + "; ".join(skipped))
    return runs, skipped


def test_set(run) -> tuple:
    """The test set the run was trained with: images (N, C, H, W) in [0, 1] and labels (N,)."""
    from vae_lab.data.splits import test_images

    return test_images(run.config)[0].tensors


def likelihood_name(config: dict) -> str:
    likelihood = (config.get("loss") or {}).get("likelihood", "bce")
    return likelihood.get("name", "?") if isinstance(likelihood, dict) else str(likelihood)


def decoder_layers(model, likelihood: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """The decoder as [(weight (out, in), bias (out,)), ...] float32, a ReLU between layers and the
    sigmoid after the last; VaeLabError when the page cannot draw it so."""
    from torch import nn

    if likelihood not in IMAGE_MEANS:
        raise VaeLabError(f"its likelihood is {likelihood!r}; the explorer draws the image means of "
                          f"{' and '.join(IMAGE_MEANS)} only")
    modules = list(model.decoder) if isinstance(model.decoder, nn.Sequential) else [model.decoder]
    kinds = [type(m).__name__ for m in modules]
    pattern = "Linear(,ReLU,Linear)*"  # Linear, then ReLU and Linear in turn
    if not re.fullmatch(pattern, ",".join(kinds)) or not all(type(m) in (nn.Linear, nn.ReLU) for m in modules):
        raise VaeLabError(f"its decoder ({' '.join(kinds)}) is not a stack of Linear layers with a ReLU between "
                          "them, which is what the explorer decodes in the page")
    linear = modules[::2]
    sizes = [linear[0].in_features] + [m.out_features for m in linear]
    if sizes[0] != model.z_dim + model.num_classes or sizes[-1] != math.prod(model.image_shape):
        raise VaeLabError(f"its decoder maps {sizes[0]} inputs to {sizes[-1]} outputs; the explorer needs "
                          f"z_dim + classes = {model.z_dim + model.num_classes} to C·H·W = {math.prod(model.image_shape)}")
    return [(m.weight.detach().float().numpy(), (m.bias.detach().float().numpy() if m.bias is not None
                                                   else np.zeros(m.out_features, np.float32))) for m in linear]


def numpy_decode(layers, inputs: np.ndarray) -> np.ndarray:
    """What the page computes: (B, in) decoder inputs -> (B, C·H·W) image means, in float64."""
    x = inputs.astype(np.float64)
    for i, (weight, bias) in enumerate(layers):
        x = x @ weight.T.astype(np.float64) + bias
        x = np.maximum(x, 0) if i < len(layers) - 1 else 1 / (1 + np.exp(-x))
    return x


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    return np.eye(classes, dtype=np.float32)[labels] if classes else np.zeros((len(labels), 0), np.float32)


def check_decoder(model, layers) -> None:
    """The exported layers decode as torch does (``likelihood.mean(decode(z, y))``): decoder_input
    may be more than z and a one-hot label, and likelihood.mean more than a sigmoid."""
    import torch

    generator = torch.Generator().manual_seed(0)
    z = 2 * torch.randn(8, model.z_dim, generator=generator)
    y = torch.arange(8) % model.num_classes if model.num_classes else None
    with torch.no_grad():
        expected = model.likelihood.mean(model.decode(z, y)).flatten(1).double().numpy()
    labels = one_hot(y.numpy() if y is not None else np.zeros(8, int), model.num_classes)
    got = numpy_decode(layers, np.concatenate([z.numpy(), labels], 1))
    if not np.abs(got - expected).max() <= TOLERANCE:
        raise VaeLabError("its decode() is not its decoder's Linear/ReLU stack followed by a sigmoid, which "
                          "is what the explorer computes in the page")


def floats(array) -> str:
    """base64 of little-endian float32, as the page's Float32Array reads it."""
    return base64.b64encode(np.ascontiguousarray(array, dtype="<f4").tobytes()).decode("ascii")


def projection(mu: np.ndarray) -> dict:
    """The map's axes for codes mu (N, z_dim): the first two dimensions for z_dim <= 2, else the
    first two principal components. A point (a, b) of the map is the code center + a·axes[0] + b·axes[1]."""
    z_dim = mu.shape[1]
    if z_dim <= 2:
        axes = np.eye(2, z_dim)  # z_dim = 1: the second axis is 0, the map a line
        return {"kind": "z", "center": np.zeros(z_dim), "axes": axes, "explained": None}
    center = mu.mean(0)
    _, s, vt = np.linalg.svd(mu - center, full_matrices=False)
    axes = vt[:2]
    axes = axes * np.sign(axes[np.arange(2), np.abs(axes).argmax(1)])[:, None]  # its largest entry positive: stable signs
    return {"kind": "pca", "center": center, "axes": axes, "explained": (s[:2] ** 2 / (s ** 2).sum()).tolist()}


def rounded(values, digits: int = 4):
    return np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def plain(values: dict) -> dict:
    """The entries of a summary's or metrics file's dict the page shows: numbers (finite), strings,
    booleans; lists (kl_per_dim, factor_mi, ...) are left out."""
    keep = {}
    for key, value in (values or {}).items():
        if isinstance(value, float) and not math.isfinite(value):
            keep[key] = str(value)
        elif isinstance(value, (str, int, float, bool)) or value is None:
            keep[key] = value
    return keep


def run_title(folder: Path) -> str:
    # a single run's folder is <data-model-loss-beta-z>/<date_time>: the parent tells more
    return f"{folder.parent.name}/{folder.name}" if re.match(r"\d{4}-\d\d-\d\d", folder.name) else folder.name


def export_run(run, n_codes: int = N_CODES, n_picks: int = N_PICKS, n_samples: int = N_SAMPLES, seed: int = 0) -> dict:
    """What the page shows of a run (``vae_lab.load_run``): plain data for JSON, the decoder's
    weights as base64 float32. VaeLabError naming the run when its decoder cannot be drawn."""
    import torch

    from vae_lab.evaluation.inference import dimension_information

    model, config = run.model, run.config
    try:
        layers = decoder_layers(model, likelihood_name(config))
        check_decoder(model, layers)
    except VaeLabError as error:
        raise VaeLabError(f"{run.folder}: {error}") from None
    images, labels = test_set(run)
    images, labels = images[:n_codes], labels[:n_codes]
    with torch.no_grad():
        mu, logvar = model.encode(images, labels)
    information = dimension_information(model, mu, logvar)
    order = torch.argsort(information, descending=True, stable=True)

    classes = labels.unique().tolist()
    picks = [int((labels == c).nonzero()[0]) for c in classes[:n_picks]] if len(classes) > 1 else []
    picks = picks or list(range(min(n_picks, len(images))))
    mu = mu.double().numpy()
    axes = projection(mu)
    points = (mu - axes["center"]) @ axes["axes"].T  # (N, 2) map coordinates
    # half-width of the map and of the sliders: the prior's bulk (±3) or the codes' 99.5 % extent
    extent = float(max(3.0, np.quantile(np.abs(points), 0.995), np.quantile(np.abs(mu), 0.995)))

    prior = config.get("prior") or {}
    prior_name = prior.get("name", "standard") if isinstance(prior, dict) else str(prior)
    samples = None
    if prior_name != "standard" or any(True for _ in model.prior.parameters()):  # a learned p(z)
        with torch.no_grad():
            samples = rounded(model.prior.sample(n_samples, torch.Generator().manual_seed(seed)))

    pixels = (images[picks] * 255).round().to(torch.uint8)
    summary = run.summary
    return {
        "title": run_title(run.folder), "folder": str(run.folder), "checkpoint": run.checkpoint.name,
        "z_dim": model.z_dim, "num_classes": model.num_classes, "image_shape": list(model.image_shape),
        "decoder": {"layers": [{"in": w.shape[1], "out": w.shape[0], "weight": floats(w), "bias": floats(b)}
                               for w, b in layers], "mean": IMAGE_MEANS[likelihood_name(config)]},
        "order": order.tolist(),  # latent dimensions, most informative first
        # per dimension: its mean KL (nats) or the variance of its mean, 4 significant digits
        "information": [float(f"{v:.4g}") for v in information.tolist()],
        "information_kind": "KL" if getattr(model.prior, "closed_form_kl", False) else "var",
        "map": {"kind": axes["kind"], "center": rounded(axes["center"], 6), "axes": rounded(axes["axes"], 6),
                "explained": axes["explained"], "points": rounded(points, 3), "labels": labels.tolist()},
        "extent": math.ceil(extent * 2) / 2,
        "picks": {"index": picks, "labels": labels[picks].tolist(), "codes": rounded(mu[picks], 6),
                  "images": base64.b64encode(pixels.numpy().tobytes()).decode("ascii")},  # (K, C, H, W) 0-255
        "prior": prior_name, "samples": samples,
        "status": summary.get("status"), "settings": plain(summary.get("settings")),
        "final": plain(summary.get("final")), "metrics": plain(run.metrics),
    }


def check_out(out: Path) -> None:
    """The page may be written into ``out``: a new or empty folder, or an earlier explorer page."""
    if out.exists() and (not out.is_dir() or any(out.iterdir()) and not (out / "explorer.js").is_file()):
        raise VaeLabError(f"{out} exists and is not an explorer folder; give a new or empty folder")


def write_page(exported: list[dict], out: Path) -> Path:
    """The page's folder: index.html, explorer.js, style.css and data/run-N.js (one per run, the
    JSON of ``export_run`` as the argument of a push); returns index.html. An existing folder is
    replaced only when it is an earlier explorer page."""
    out = Path(out)
    check_out(out)
    shutil.rmtree(out / "data", ignore_errors=True)
    (out / "data").mkdir(parents=True)
    scripts = []
    for i, run in enumerate(exported):
        # JSON is a JavaScript literal: a <script> can load it from file://, where fetch() cannot.
        # ensure_ascii escapes U+2028/2029 too, which older engines reject inside string literals.
        text = json.dumps(run, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
        (out / "data" / f"run-{i}.js").write_text(f"(window.VAE_LAB_RUNS = window.VAE_LAB_RUNS || []).push({text});\n")
        scripts.append(f'<script src="data/run-{i}.js"></script>')
    for name in ("explorer.js", "style.css"):
        shutil.copyfile(PAGE / name, out / name)
    html = (PAGE / "index.html").read_text()
    (out / "index.html").write_text(html.replace(RUN_DATA, "\n".join(scripts)))
    return out / "index.html"


def build(paths, out: Path, checkpoint: str = "last", plugins=(), log=print) -> Path:
    """Export the runs of ``paths`` (run folders, sweep folders, .ckpt files) into the page folder
    ``out``; returns its index.html."""
    import vae_lab

    runs, skipped = find_runs(paths)
    check_out(Path(out))  # before the exports, not after
    for note in skipped:
        log(f"skipped {note}")
    exported = []
    for folder in runs:
        run = vae_lab.load_run(folder, checkpoint=checkpoint, plugins=plugins)
        exported.append(export_run(run))
        log(f"exported {exported[-1]['title']} (z_dim={exported[-1]['z_dim']}, {run.checkpoint.name})")
    return write_page(exported, out)
