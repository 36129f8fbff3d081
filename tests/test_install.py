"""vae_lab as an installed package: the wheel carries the configs, and a run trains from an empty
folder with nothing of the checkout on the path."""
import os
import shutil
import subprocess
import sys
import zipfile

from conftest import DATA_ROOT, REPO



def test_the_wheel_ships_the_configs_and_trains_in_an_empty_folder(tmp_path):
    source = tmp_path / "source"  # a copy of the tracked files: building writes build/ and egg-info
    for name in subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split():
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "wheel"), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").glob("vae_lab-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert {"vae_lab/conf/config.yaml", "vae_lab/conf/model/conv.yaml", "vae_lab/conf/prior/standard.yaml",
                "vae_lab/conf/hydra/job_logging/quiet.yaml", "vae_lab/conf/experiment/binarized_baseline.yaml"} <= names
        assert any(name.endswith("entry_points.txt") for name in names)  # the vae-lab console command
        archive.extractall(tmp_path / "site")

    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "VAE_LAB_DATA": str(DATA_ROOT)}
    where = subprocess.run([sys.executable, "-c", "import vae_lab; print(vae_lab.__file__)"], cwd=empty, env=env,
                           capture_output=True, text=True)
    assert where.stdout.startswith(str(tmp_path / "site")), where.stdout  # the wheel's copy, not the checkout's
    trained = subprocess.run([sys.executable, "-m", "vae_lab.train", "model=conv", "epochs=1", "trainer.limit_train_batches=3",
                              "trainer.limit_val_batches=1", "callbacks.figures.every_n_epochs=0"],
                             cwd=empty, env=env, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    (checkpoint,) = empty.glob("outputs/mnist-conv-bce-beta1.0-z20/*/checkpoints/last.ckpt")
    assert (checkpoint.parent.parent / "config.yaml").is_file()
