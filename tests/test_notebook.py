"""The tutorial notebook runs top to bottom (with tiny settings), and it is committed without outputs."""
import json

import nbformat
import pytest

from conftest import DATA_ROOT, REPO

NOTEBOOK = REPO / "notebooks" / "tutorial.ipynb"


def test_the_committed_notebook_has_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    assert [cell for cell in code if "parameters" in cell.metadata.get("tags", [])], "no parameters cell"


def test_the_tutorial_notebook_runs_top_to_bottom(tmp_path, data_root, monkeypatch):
    papermill = pytest.importorskip("papermill")
    monkeypatch.setenv("VAE_LAB_DATA", str(DATA_ROOT))
    runs = tmp_path / "runs"
    papermill.execute_notebook(
        str(NOTEBOOK), str(tmp_path / "ran.ipynb"), cwd=str(REPO), kernel_name="python3", progress_bar=False,
        parameters={"EPOCHS": 1, "BETA_EPOCHS": 1, "TRAIN_BATCHES": 5, "VAL_BATCHES": 2, "OUTPUTS": str(runs),
                    "TENSORBOARD": False},
    )
    ran = nbformat.read(tmp_path / "ran.ipynb", as_version=4)
    pictures = sum("image/png" in output.get("data", {}) for cell in ran.cells for output in cell.get("outputs", []))
    # two reconstructions, samples and traversal, two digits of the cvae, rate-distortion, manifold and scatter
    assert pictures == 9
    finished = {folder.name for folder in runs.iterdir()
                if (folder / "summary.json").is_file()
                and json.loads((folder / "summary.json").read_text())["status"] == "finished"}
    assert finished == {"dense-bce", "dense-mse", "conv-mse", "cvae-mse", "beta1", "beta3", "beta8", "beta16", "conv-mse-z2"}
    assert (runs / "beta-report" / "rate_distortion.png").is_file()
