"""The morphometrics measure what they claim: a digit thickened by a known amount measures that much
thicker, one sheared by a known angle measures that slant, and MNIST's test digits fall where
Morpho-MNIST (Castro et al. 2019) draws their distributions."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from conftest import DATA_ROOT
from vae_lab.data import load_mnist
from vae_lab.errors import VaeLabError
from vae_lab.evaluation.morphometrics import (MORPHOMETRICS, binarized, load_morphometrics, main, measure_digits as measure, morphometrics_for,
                                   save_morphometrics, upsampled)


@pytest.fixture(scope="module")
def digits(data_root):
    """200 test digits, from all over the test set (its halves come from different writers)."""
    images = load_mnist(data_root, train=False, download=False).tensors[0]
    return images[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:200]]


def thickened(images: torch.Tensor, radius: int) -> torch.Tensor:
    """Each digit's upsampled (x4) stroke dilated by a disk of ``radius`` upsampled pixels, then
    averaged back to 28x28: every stroke wider by 2 * radius / 4 pixels."""
    disk = np.hypot(*np.mgrid[-radius:radius + 1, -radius:radius + 1]) <= radius
    strokes = np.stack([ndimage.binary_dilation(image, disk) for image in binarized(upsampled(images))])
    return F.avg_pool2d(torch.from_numpy(strokes).float()[:, None], 4)


def sheared(images: torch.Tensor, degrees: float) -> torch.Tensor:
    """Each image sheared about its middle row: row y moves right by tan(degrees) * (middle - y) pixels."""
    shear, middle = np.tan(np.deg2rad(degrees)), (images.shape[2] - 1) / 2
    return torch.from_numpy(np.stack([ndimage.affine_transform(image, [[1, 0], [shear, 1]], offset=[0, -shear * middle],
                                                               order=1) for image in images[:, 0].numpy()]))[:, None]


def test_a_thickened_digit_measures_thicker_by_the_amount_added(digits):
    redrawn = measure(thickened(digits, 0))  # binarized and averaged back, nothing added
    for radius in (2, 4):  # 1 and 2 pixels wider
        added = measure(thickened(digits, radius))["thickness"] - redrawn["thickness"]
        assert np.median(added) == pytest.approx(2 * radius / 4, abs=0.15), radius
        assert np.percentile(added, 10) > 0.8 * 2 * radius / 4
    # the redrawing alone changes little: the measure is of the stroke, not of its grey edge
    assert np.median(np.abs(redrawn["thickness"] - measure(digits)["thickness"])) < 0.1


@pytest.mark.parametrize("degrees", [-20, 10, 30])
def test_a_sheared_digit_measures_the_shear_as_its_slant(digits, degrees):
    before, after = measure(digits)["slant"], measure(sheared(digits, degrees))["slant"]
    # a shear adds tan(angle) to the tangent of the slant, whatever the digit's own slant
    added = np.rad2deg(np.arctan(np.tan(np.deg2rad(after)) - np.tan(np.deg2rad(before))))
    assert np.median(added) == pytest.approx(degrees, abs=0.5)
    assert np.percentile(np.abs(added - degrees), 90) < 1  # the rest: digits sheared past the image's edge
    upright = torch.zeros(1, 1, 28, 28)
    upright[0, 0, 4:24, 12:16] = 1  # a bar 20 pixels high and 4 wide; 98% of it is 19.6 high, 3.9 wide
    bar, leaning = measure(upright), measure(sheared(upright, degrees))
    assert bar["slant"][0] == pytest.approx(0, abs=1e-6)
    assert bar["width"][0] == pytest.approx(3.92, abs=0.4) and bar["height"][0] == pytest.approx(19.6, abs=0.3)
    assert bar["thickness"][0] == pytest.approx(4, abs=0.1) and bar["area"][0] == pytest.approx(80, rel=0.01)
    assert leaning["slant"][0] == pytest.approx(degrees, abs=0.1)
    assert leaning["width"][0] == pytest.approx(3.92, abs=1) and leaning["height"][0] == pytest.approx(19.6, abs=0.3)


def test_mnist_test_digits_fall_in_the_ranges_of_morpho_mnist(data_root):
    """Castro et al. (2019) plot the morphometrics of MNIST's test digits (their Figure of the plain
    test set's distributions) on axes of length 10-70 px, thickness 0-7 px, slant -45..45 degrees,
    width 0-22 px and height 8-22 px; 98% of 1,000 random test digits must fall inside, and the
    medians where MNIST's 20x20 box puts them."""
    images = load_mnist(data_root, train=False, download=False).tensors[0]
    sample = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(1))[:1000]]
    measured = measure(sample)
    ranges = {"length": (10, 70), "thickness": (0, 7), "slant": (-45, 45), "width": (0, 22), "height": (8, 22)}
    for name, (low, high) in ranges.items():
        p1, p99 = np.percentile(measured[name], [1, 99])
        assert low < p1 < p99 < high, (name, p1, p99)
    medians = {name: np.median(measured[name]) for name in MORPHOMETRICS}
    assert 18 < medians["height"] <= 20 and 1.5 < medians["thickness"] < 3.5 and 0 < medians["slant"] < 15, medians


def test_a_digit_measures_the_same_alone_and_among_others(digits):
    together = measure(digits[:50])
    for i in (0, 17, 49):
        alone = measure(digits[i:i + 1])
        for name in MORPHOMETRICS:
            assert alone[name][0] == pytest.approx(together[name][i], rel=1e-6), name


def test_a_blank_image_measures_nan_and_colour_images_are_refused():
    measured = measure(torch.cat([torch.zeros(1, 1, 28, 28), torch.full((1, 1, 28, 28), 0.5)]))
    assert all(np.isnan(measured[name]).all() for name in MORPHOMETRICS)
    with pytest.raises(VaeLabError, match=r"morphometrics measure grey images \(N, 1, H, W\); these are \(2, 3, 28, 28\) \(colour\)"):
        measure(torch.zeros(2, 3, 28, 28))


def test_other_image_sizes_are_measured_in_their_own_pixels():
    bar = torch.zeros(1, 1, 40, 56)
    bar[0, 0, 5:35, 20:26] = 1  # 30 high, 6 wide; 98% of it 29.4 high, 5.9 wide
    measured = measure(bar)
    assert measured["height"][0] == pytest.approx(29.4, abs=0.3) and measured["width"][0] == pytest.approx(5.88, abs=0.4)
    assert measured["area"][0] == pytest.approx(180, rel=0.05) and measured["thickness"][0] == pytest.approx(6, abs=0.7)
    assert measured["length"][0] == pytest.approx(30 - 6, abs=2)  # the skeleton stops half a width from each end


def test_the_cache_is_written_once_and_checked_when_read(digits, tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_LAB_CACHE", str(tmp_path))
    source = {"name": "mnist", "root": str(DATA_ROOT), "download": False}
    first = morphometrics_for(source, digits)
    path = tmp_path / "mnist_morphometrics.npz"
    assert path.is_file()
    again = morphometrics_for(source, torch.zeros_like(digits))  # read from the cache, not measured
    assert all(np.array_equal(first[name], again[name], equal_nan=True) for name in MORPHOMETRICS)
    with pytest.raises(VaeLabError, match=r"measures 200 images, the test split has 10; delete it, or build"):
        morphometrics_for(source, digits[:10])
    save_morphometrics({"area": np.zeros(3)}, path)
    with pytest.raises(VaeLabError, match="not a vae_lab morphometrics file"):
        load_morphometrics(path)
    path.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(VaeLabError, match="not a readable morphometrics file"):
        load_morphometrics(path)


def test_the_command_builds_the_cache_and_says_what_is_wrong_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VAE_LAB_CACHE", str(tmp_path))
    np.savez(tmp_path / "colour.npz", images=np.zeros((20, 28, 28, 3), np.uint8))
    with pytest.raises(SystemExit) as exit:
        main(["data=images", f"path={tmp_path / 'colour.npz'}"])
    assert exit.value.code == "error: morphometrics measure grey images (N, 1, H, W); these are (2, 3, 28, 28) (colour)"
    grey = (np.random.default_rng(0).random((30, 28, 28)) > 0.7).astype(np.uint8) * 255
    np.savez(tmp_path / "grey.npz", images=grey)
    main(["data=images", f"path={tmp_path / 'grey.npz'}"])
    written = list(tmp_path.glob("images-*_morphometrics.npz"))
    assert len(written) == 1 and len(load_morphometrics(written[0])["slant"]) == 3  # the test split: 10% of 30
    assert "measured 3 test images in" in capsys.readouterr().out
