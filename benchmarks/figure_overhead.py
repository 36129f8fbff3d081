"""How much the per-epoch pictures add to an epoch: the same run with and without them.

    VAE_LAB_DATA=../shared/data python benchmarks/figure_overhead.py [model=conv z_dim=2 ...]

Trains 2 epochs twice in this process, with figures.every_n_epochs=1 and =0, and compares the
wall time of the second epoch (training + validation + pictures), read from the TensorBoard events.
"""
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vae_lab.train import train

CONF = Path(__file__).resolve().parents[1] / "conf"


def second_epoch_seconds(output_dir: Path, overrides: list[str]) -> float:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"output_dir={output_dir}", "epochs=2",
                                           "trainer.enable_progress_bar=false", *overrides])
    train(cfg)
    events = EventAccumulator(str(output_dir))
    events.Reload()
    wall = [e.wall_time for e in events.Scalars("val/loss")]  # at init, after epoch 1, after epoch 2
    return wall[2] - wall[1]


if __name__ == "__main__":
    overrides = sys.argv[1:]
    with tempfile.TemporaryDirectory() as tmp:
        with_figures = second_epoch_seconds(Path(tmp) / "with", [*overrides, "figures.every_n_epochs=1"])
        without = second_epoch_seconds(Path(tmp) / "without", [*overrides, "figures.every_n_epochs=0"])
    print(f"{' '.join(overrides) or 'defaults'}: epoch {without:.1f} s without pictures, "
          f"{with_figures:.1f} s with; pictures add {with_figures - without:.1f} s "
          f"({(with_figures / without - 1) * 100:.0f}%)")
