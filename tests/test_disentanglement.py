"""MIG, DCI and SAP give the known answers on synthetic codes: near 1 for codes that are the factors,
near 0 for noise, in between for codes that mix factors, and the exact share for a duplicated one."""
import json

import numpy as np
import pytest
from PIL import Image

from conftest import table_rows
from vae_lab import report
from vae_lab.evaluation.disentanglement import MIN_IMAGES, dci, disentanglement_scores as measure, mig, normalized_mutual_information, sap
from vae_lab.errors import VaeLabError
from vae_lab.evaluate import main as evaluate_main
from vae_lab.evaluation.morphometrics import MORPHOMETRICS

N = 2000
rng = np.random.default_rng(0)
FACTORS = np.column_stack([rng.uniform(size=(N, 3)), rng.integers(0, 10, N)])  # three continuous, a class
DISCRETE = [False, False, False, True]


def rotated(codes: np.ndarray, degrees: float) -> np.ndarray:
    """The first two columns turned by ``degrees`` in their plane: each then carries both factors."""
    c, s = np.cos(np.deg2rad(degrees)), np.sin(np.deg2rad(degrees))
    turned = codes.copy()
    turned[:, 0], turned[:, 1] = c * codes[:, 0] - s * codes[:, 1], s * codes[:, 0] + c * codes[:, 1]
    return turned


def scores(codes: np.ndarray) -> dict:
    found = dci(codes, FACTORS, DISCRETE)
    return {"mig": mig(codes, FACTORS, DISCRETE), "D": found["disentanglement"], "C": found["completeness"],
            "I": found["informativeness"], "sap": sap(codes, FACTORS, DISCRETE)}


@pytest.fixture(scope="module")
def cases():
    return {"factors": scores(FACTORS), "noise": scores(rng.normal(size=(N, 4))),
            "rotated 30": scores(rotated(FACTORS, 30)), "rotated 45": scores(rotated(FACTORS, 45))}


def test_codes_equal_to_the_factors_score_near_1(cases):
    found = cases["factors"]
    assert found["mig"] > 0.95 and found["D"] > 0.97 and found["C"] > 0.97 and found["sap"] > 0.95, found
    assert found["I"] > 0.99, found


def test_codes_of_noise_score_near_0(cases):
    found = cases["noise"]
    assert max(found["mig"], found["D"], found["C"], found["sap"]) < 0.03, found
    assert found["I"] < 0.05, found


def test_a_rotated_code_scores_in_between(cases):
    # two continuous factors mixed: the class and the third factor keep their own dimensions
    for metric in ("mig", "D", "C", "sap"):
        assert cases["factors"][metric] > cases["rotated 30"][metric] > cases["rotated 45"][metric] > cases["noise"][metric] + 0.2, metric
    assert cases["rotated 45"]["mig"] == pytest.approx(0.5, abs=0.05)  # two factors of four with no gap left
    assert cases["rotated 45"]["I"] > 0.99  # a rotation loses no information, only its separation


def test_a_factor_split_over_two_dimensions_loses_its_gap():
    codes = np.column_stack([FACTORS[:, 0], FACTORS])  # factor 0 twice
    assert mig(codes, FACTORS, DISCRETE) == pytest.approx(0.75, abs=0.03)  # gaps 0, 1, 1, 1
    assert sap(codes, FACTORS, DISCRETE) == pytest.approx(0.75, abs=0.03)
    found = dci(codes, FACTORS, DISCRETE)
    assert found["disentanglement"] > 0.97  # every dimension still follows one factor ...
    # ... but factor 0 is spread evenly over 2 of 5 dimensions: completeness 1 - log 2 / log 5
    assert found["completeness"] == pytest.approx((3 + 1 - np.log(2) / np.log(5)) / 4, abs=0.03)


def test_the_mutual_information_share_does_not_see_monotone_stretching():
    stretched = np.column_stack([np.exp(5 * FACTORS[:, 0]), FACTORS[:, 1] ** 3, -FACTORS[:, 2], FACTORS[:, 3]])
    assert np.allclose(normalized_mutual_information(stretched, FACTORS, DISCRETE),
                       normalized_mutual_information(FACTORS, FACTORS, DISCRETE))


def test_measure_names_the_factor_of_each_dimension_and_refuses_too_few_images():
    morphometrics = {name: rng.normal(size=N) for name in MORPHOMETRICS}
    labels = rng.integers(0, 10, N)
    codes = np.column_stack([rng.normal(size=N), morphometrics["slant"] ** 3, labels + 0.1 * rng.normal(size=N)])
    found = measure(codes, morphometrics, labels)
    assert found["factors"] == ["thickness", "length", "slant", "width", "height", "class"]
    assert found["factor_per_dim"][1:] == ["slant", "class"]
    assert np.array(found["factor_mi"]).shape == (3, 6) and found["factor_mi"][1][2] > 0.9
    assert 0 < found["mig"] < 1 and all(0 <= found[key] <= 1 for key in ("dci_disentanglement", "dci_completeness", "sap"))
    unlabelled = measure(codes, morphometrics, np.full(N, -1))
    assert unlabelled["factors"] == ["thickness", "length", "slant", "width", "height"]
    morphometrics["thickness"][: N - MIN_IMAGES + 1] = np.nan  # images without a stroke are left out
    with pytest.raises(VaeLabError, match=f"at least {MIN_IMAGES} images with a stroke are needed, {MIN_IMAGES - 1} given"):
        measure(codes, morphometrics, labels)


def test_evaluate_writes_the_metrics_and_the_labelled_traversal(short_runs, morphometrics_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_LAB_CACHE", str(morphometrics_cache))
    run = short_runs("dense-bce")  # z_dim = 20
    evaluate_main([f"run={run}", "k=1", "n_images=1000", "n_samples=0", f"out={tmp_path / 'metrics.json'}"])
    found = json.loads((tmp_path / "metrics.json").read_text())
    assert all(0 <= found[key] <= 1 for key in ("mig", "dci_disentanglement", "dci_completeness", "sap"))
    assert found["dci_informativeness"] > 0.2  # a trained code predicts the digits' shapes and classes
    assert found["factors"] == ["thickness", "length", "slant", "width", "height", "class"]
    assert np.array(found["factor_mi"]).shape == (20, 6) and len(found["factor_per_dim"]) == 20
    width, height = Image.open(tmp_path / "metrics-traversal_factors.png").size
    assert width >= 400 and height >= 10 * 28  # ten labelled rows of 16 digits
    evaluate_main([f"run={run}", "k=1", "n_images=1000", "n_samples=0", "disentanglement=false",
                   f"out={tmp_path / 'plain.json'}"])
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert not {"mig", "disentanglement", "factors"} & set(plain) and not (tmp_path / "plain-traversal_factors.png").exists()


def test_report_plots_disentanglement_against_beta(tmp_path, capsys):
    """Two finished runs of β 1 and 8 (summary.json as a run writes it) evaluated (metrics.json)."""
    for beta, mig_value in ((1.0, 0.05), (8.0, 0.2)):
        run = tmp_path / "sweep" / f"beta{beta:g}"
        run.mkdir(parents=True)
        settings = {"model": "conv", "beta": beta, "z_dim": 10, "seed": 0}
        final = {"val_loss": 30.0, "val_recon": 25.0 + beta, "val_kl": 5.0 / beta, "train_loss": 30.0}
        (run / "summary.json").write_text(json.dumps({"status": "finished", "settings": settings, "final": final}))
        (run / "metrics.json").write_text(json.dumps({"mig": mig_value, "dci_disentanglement": 0.3, "dci_completeness": 0.2,
                                                      "dci_informativeness": 0.6, "sap": 0.1, "factor_per_dim": ["slant"]}))
    report.main([str(tmp_path / "sweep")])
    assert capsys.readouterr().out.startswith("wrote report.md, rate_distortion.png, disentanglement.png to")
    width, height = Image.open(tmp_path / "sweep" / "disentanglement.png").size
    assert width >= 4 * 300 and height >= 300  # a panel per metric
    header, *rows = table_rows((tmp_path / "sweep" / "report.md").read_text())
    assert header[-5:] == ["mig", "dci_disentanglement", "dci_completeness", "dci_informativeness", "sap"]
    assert [row[header.index("mig")] for row in rows] == ["0.05", "0.2"]
