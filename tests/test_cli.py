"""Bad command lines end with one clear line and a non-zero exit, before any training."""
import pytest

from conftest import run_train

BAD_OVERRIDES = {
    "beta=-1": "error: beta=-1",
    "z_dim=0": "error: z_dim=0",
    "z_dim=2.5": "error: z_dim=2.5",
    "epochs=true": "error: epochs=True",
    "epochs=0": "error: epochs=0",
    "batch_size=0": "error: batch_size=0",
    "lr=-1": "error: lr=-1",
    "ckpt_path=/no/such.ckpt": "error: ckpt_path=/no/such.ckpt: no such checkpoint file",
    "data.root=/no/such/folder data.download=false": "error: MNIST not found in /no/such/folder/MNIST/raw",
}


@pytest.mark.parametrize("overrides", BAD_OVERRIDES)
def test_invalid_value_gives_one_line(overrides, tmp_path):
    result = run_train(*overrides.split(), run_dir=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(BAD_OVERRIDES[overrides]), result.stderr[-2000:]
    assert not (tmp_path / "checkpoints").exists()


def test_unknown_model_keeps_hydras_message_listing_the_choices(tmp_path):
    result = run_train("model=transformer", run_dir=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "Could not find 'model/transformer'" in result.stderr
    assert all(name in result.stderr for name in ("dense", "conv", "cvae"))


def test_unknown_key_is_refused(tmp_path):
    result = run_train("betta=8", run_dir=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "Could not override 'betta'" in result.stderr
