"""The shape of each digit, measured: stroke thickness and length, slant, width, height and area,
following Morpho-MNIST (Castro, Tan, Kainz, Konukoglu & Glocker 2019, JMLR 20(178), section 2).

    python -m vae_lab.morphometrics [data=mnist|fashion_mnist|images] [path=FILE] [out=FILE] [data_root=DIR]

measures the data set's test images and caches the measurements in ``out`` (default
``$VAE_LAB_CACHE/<data set>_morphometrics.npz``, beside the classifier: vae_lab.classifier); the
evaluation builds the cache itself on first use. The measurements are the factors that the
disentanglement metrics (vae_lab.evaluation.disentanglement) compare a model's codes with.

Each grey image (bright strokes on a dark ground, any size) is upsampled ×4 (bicubic), binarized at
half-way between its darkest and brightest pixel, and measured, in pixels of the original image:

  area       pixels of the binarized stroke
  length     length of its medial axis (scikit-image), 1 per straight and √2 per diagonal step
  thickness  mean over the medial axis of twice the distance to the ground (the stroke's local width)
  slant      the shear of the upsampled grey image's second moments, arctan(−μ11/μ02), in degrees;
             positive leans right (the top to the right of the bottom)
  width      extent across the slant: of the bounding parallelogram, whose sides follow the slant,
             between the 1% and 99% quantiles of the grey mass
  height     the same, vertically

An image without a stroke (all one grey) measures NaN.
"""
import math
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vae_lab.evaluation.classifier import data_key, source_of
from vae_lab.cli import exit_on_error, parse_options
from vae_lab.data.datasets import dataset
from vae_lab.errors import VaeLabError
from vae_lab.io import cache_folder, write_atomically

MORPHOMETRICS = ("area", "length", "thickness", "slant", "width", "height")
UNITS = {"area": "px²", "length": "px", "thickness": "px", "slant": "°", "width": "px", "height": "px"}
SCALE = 4  # upsampling factor: the medial axis of a 28x28 digit needs sub-pixel resolution
THRESHOLD = 0.5  # binarize at this fraction of the way from the darkest to the brightest pixel
BOUND_FRACTION = 0.02  # the grey mass left outside the bounding parallelogram, half on each side
MOSAIC_PIXELS = 4_000_000  # upsampled pixels per medial-axis call (memory: about 100 bytes each)
DEFAULTS = {"data": "mnist", "path": None, "out": None, "data_root": None}


def check_grey(images: torch.Tensor) -> None:
    """VaeLabError unless images are (N, 1, H, W) grey, N >= 1."""
    if images.dim() != 4 or images.shape[1] != 1 or len(images) == 0:
        raise VaeLabError(f"morphometrics measure grey images (N, 1, H, W); these are {tuple(images.shape)}"
                          + (" (colour)" if images.dim() == 4 and images.shape[1] == 3 else ""))


def upsampled(images: torch.Tensor, scale: int = SCALE) -> np.ndarray:
    """(N, 1, H, W) in [0, 1] -> (N, scale·H, scale·W) float32, bicubic, clipped to [0, 1]."""
    return F.interpolate(images.float(), scale_factor=scale, mode="bicubic", align_corners=False).clamp_(0, 1)[:, 0].numpy()


def binarized(hires: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """(N, H, W) grey -> bool, each image at ``threshold`` of the way from its darkest to its brightest
    pixel (an image of one grey has no stroke)."""
    low, high = hires.min((1, 2), keepdims=True), hires.max((1, 2), keepdims=True)
    return hires > low + threshold * (high - low)


def cropped(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N, H, W) images -> (N, h, w): each image's window of the same size h x w, the smallest that
    holds every image's ``mask`` (N, H, W) bool, placed at that image's mask (what lies outside
    every window is cut, zeros are added past the edge). Measures that move with the image are the
    same on the windows, which cost a half or less of the time."""
    rows, columns = mask.any(2), mask.any(1)
    top, left = rows.argmax(1), columns.argmax(1)  # 0 for an image with an empty mask
    h = int((mask.shape[1] - rows[:, ::-1].argmax(1) - top).max())
    w = int((mask.shape[2] - columns[:, ::-1].argmax(1) - left).max())
    padded = np.pad(images, ((0, 0), (0, h), (0, w)))
    index = np.arange(len(images))[:, None, None]
    return padded[index, top[:, None, None] + np.arange(h)[:, None], left[:, None, None] + np.arange(w)]


def skeletons(binary: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The skeleton (bool) and every pixel's distance to the nearest ground pixel (float), both
    (N, H, W), of binary images (N, H, W).

    scikit-image's thinning (``skeletonize``, Zhang & Suen 1984) and scipy's Euclidean distance
    transform, each called once on a mosaic of the images framed by ground, so each image's result
    is what it would be alone. Morpho-MNIST uses ``medial_axis``, which breaks ties at random over
    all the pixels it is given: measured in a batch, a digit's length then depends on the other
    digits (up to 10% on MNIST). Thinning is deterministic and 2.5 times as fast; on 1,000 test
    digits it gives the same thickness (correlation 0.996, means 2.45 and 2.46 px) and a 6% shorter
    length (the medial axis grows spurs into corners)."""
    from scipy.ndimage import distance_transform_edt
    from skimage.morphology import skeletonize

    n, height, width = binary.shape
    tile_h, tile_w = height + 2, width + 2
    columns = max(1, math.isqrt(n))
    rows = -(-n // columns)
    tiles = np.zeros((rows * columns, tile_h, tile_w), bool)
    tiles[:n, 1:-1, 1:-1] = binary
    mosaic = tiles.reshape(rows, columns, tile_h, tile_w).transpose(0, 2, 1, 3).reshape(rows * tile_h, columns * tile_w)

    def untiled(mosaic_array):
        tiled = mosaic_array.reshape(rows, tile_h, columns, tile_w).transpose(0, 2, 1, 3)
        return tiled.reshape(-1, tile_h, tile_w)[:n, 1:-1, 1:-1]

    return untiled(skeletonize(mosaic)), untiled(distance_transform_edt(mosaic))


def skeleton_length(skeleton: np.ndarray) -> np.ndarray:
    """(N, H, W) bool -> (N,): the length of each skeleton, every pair of neighbouring pixels joined
    by a step of 1 (side by side) or √2 (diagonal)."""
    s = skeleton
    straight = (s[:, :, 1:] & s[:, :, :-1]).sum((1, 2)) + (s[:, 1:] & s[:, :-1]).sum((1, 2))
    diagonal = (s[:, 1:, 1:] & s[:, :-1, :-1]).sum((1, 2)) + (s[:, 1:, :-1] & s[:, :-1, 1:]).sum((1, 2))
    return straight + math.sqrt(2) * diagonal


def weighted_quantiles(values: torch.Tensor, weights: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """(N, P) values with (N, P) weights >= 0 -> (N, F): per row, where the weighted cumulative
    share (each point's weight counted half below it, half above) crosses each fraction."""
    values, order = values.sort(1)
    weights = weights.gather(1, order)
    total = weights.sum(1, keepdim=True)
    cumulative = ((weights.cumsum(1) - weights / 2) / total).contiguous()
    targets = fractions.expand(len(values), -1).contiguous()
    upper = torch.searchsorted(cumulative, targets).clamp(1, values.shape[1] - 1)
    c0, c1 = cumulative.gather(1, upper - 1), cumulative.gather(1, upper)
    v0, v1 = values.gather(1, upper - 1), values.gather(1, upper)
    step = ((targets - c0) / (c1 - c0).clamp_min(1e-12)).clamp(0, 1)
    return v0 + step * (v1 - v0)


def moments_and_bounds(hires: np.ndarray, fraction: float = BOUND_FRACTION) -> dict[str, np.ndarray]:
    """Slant (degrees), width and height (upsampled pixels) of grey images (N, H, W), from their
    grey-level moments (the image as a mass: its centroid, its covariance μ20, μ11, μ02) and the
    parallelogram sheared by the slant that holds all but ``fraction`` of the mass."""
    mass = torch.from_numpy(hires)  # (N, H, W)
    n, height, width = mass.shape
    y, x = torch.arange(height, dtype=mass.dtype)[:, None], torch.arange(width, dtype=mass.dtype)
    total = mass.sum((1, 2))
    y_mean = (mass.sum(2) * y[:, 0]).sum(1) / total
    x_mean = (mass.sum(1) * x).sum(1) / total
    dy, dx = y - y_mean[:, None, None], x - x_mean[:, None, None]  # (N, H, 1), (N, 1, W)
    mu11 = (mass * dx * dy).sum((1, 2)) / total
    mu02 = (mass * dy ** 2).sum((1, 2)) / total
    shear = mu11 / mu02  # x moves by `shear` per row downwards
    across = (dx - shear[:, None, None] * dy).flatten(1)  # horizontal position with the slant taken out
    fractions = torch.tensor([fraction / 2, 1 - fraction / 2])
    left, right = weighted_quantiles(across, mass.flatten(1), fractions).unbind(1)
    top, bottom = weighted_quantiles(y[:, 0].expand(n, -1), mass.sum(2), fractions).unbind(1)
    return {"slant": torch.rad2deg(torch.atan(-shear)).double().numpy(), "width": (right - left).double().numpy(),
            "height": (bottom - top).double().numpy()}


def measure_digits(images: torch.Tensor, scale: int = SCALE) -> dict[str, np.ndarray]:
    """The morphometrics of the module docstring of grey images (N, 1, H, W) in [0, 1]: name -> (N,)
    float64 in the original image's pixels (slant in degrees)."""
    check_grey(images)
    per_call = max(1, MOSAIC_PIXELS // (images.shape[2] * images.shape[3] * scale * scale))
    parts = []
    for chunk in images.split(per_call):
        hires = upsampled(chunk, scale)
        binary = binarized(hires)
        skeleton, distance = skeletons(cropped(binary, binary))
        with np.errstate(invalid="ignore", divide="ignore"):  # no stroke: NaN
            part = {"area": binary.sum((1, 2)) / scale ** 2,
                    "length": skeleton_length(skeleton) / scale,
                    "thickness": 2 * (distance * skeleton).sum((1, 2)) / skeleton.sum((1, 2)) / scale}
        bounds = moments_and_bounds(cropped(hires, hires > 0))
        part.update(slant=bounds["slant"], width=bounds["width"] / scale, height=bounds["height"] / scale)
        stroke = binary.any((1, 2))
        parts.append({name: np.where(stroke, part[name], np.nan).astype(np.float64) for name in MORPHOMETRICS})
    return {name: np.concatenate([part[name] for part in parts]) for name in MORPHOMETRICS}


def default_path(source: dict | None = None) -> Path:
    """Where the morphometrics of a data set's test images (a run's data config; MNIST when None) are cached."""
    return cache_folder() / f"{data_key(source or {'name': 'mnist'})}_morphometrics.npz"


def save_morphometrics(measured: dict[str, np.ndarray], path: str | Path) -> None:
    write_atomically(Path(path).expanduser(), lambda f: np.savez(f, **measured))


def load_morphometrics(path: str | Path, n_images: int | None = None) -> dict[str, np.ndarray]:
    """The measurements cached in ``path`` (read without pickles), or VaeLabError; ``n_images``: the
    number of images they must describe."""
    path = Path(path).expanduser()
    rebuild = f"delete it, or build it again with python -m vae_lab.morphometrics out={path}"
    try:
        with np.load(path, allow_pickle=False) as saved:
            measured = {name: saved[name] for name in saved.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise VaeLabError(f"{path}: not a readable morphometrics file ({' '.join(str(error).split())}); {rebuild}") from None
    lengths = {len(values) for values in measured.values() if values.ndim == 1 and values.dtype.kind == "f"}
    if set(measured) != set(MORPHOMETRICS) or len(lengths) != 1:
        raise VaeLabError(f"{path}: not a vae_lab morphometrics file (it holds {', '.join(sorted(measured))}); {rebuild}")
    if n_images is not None and lengths != {n_images}:
        raise VaeLabError(f"{path}: measures {lengths.pop()} images, the test split has {n_images}; {rebuild}")
    return measured


def morphometrics_for(source: dict, images: torch.Tensor) -> dict[str, np.ndarray]:
    """The morphometrics of a data set's test ``images`` (N, 1, H, W) (``source``: the run's data
    config), from the cache, which is written on first use (``measure_digits`` of all test images)."""
    check_grey(images)
    path = default_path(source)
    if path.is_file():
        return load_morphometrics(path, len(images))
    measured = measure_digits(images)
    save_morphometrics(measured, path)
    return measured


def describe(measured: dict[str, np.ndarray]) -> str:
    """One line per morphometric: its 1st, 50th and 99th percentile, and its mean, ignoring NaNs."""
    lines = []
    for name in MORPHOMETRICS:
        values = measured[name]
        p1, p50, p99 = np.nanpercentile(values, [1, 50, 99])
        lines.append(f"{name:>9} ({UNITS[name]}): 1% {p1:7.2f}  median {p50:7.2f}  99% {p99:7.2f}  "
                     f"mean {np.nanmean(values):7.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    def command():
        options = parse_options(argv, DEFAULTS, "python -m vae_lab.morphometrics")
        source = source_of(options)
        images = dataset(source).load(train=False).tensors[0]
        started = time.perf_counter()
        measured = measure_digits(images)
        seconds = time.perf_counter() - started
        out = Path(options.out).expanduser() if options.out else default_path(source)
        save_morphometrics(measured, out)
        print(f"measured {len(images)} test images in {seconds:.1f} s\n{describe(measured)}\nwrote {out}")

    exit_on_error(command)


if __name__ == "__main__":
    main()
