"""How long a refused command line takes, next to the imports it cannot avoid: the timing that
tests/test_cli.py::test_invalid_value_gives_one_line no longer asserts (on a shared machine a test's
clock measures the neighbours).

    VAE_LAB_DATA=../shared/data python benchmarks/refusals.py [--repeats 3]

Each command runs --repeats times, in turns; printed: the median seconds of each and its ratio to
``python -c "import vae_lab.train"`` (Hydra and vae_lab's config checks, no torch).
"""
import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "import vae_lab.train": [sys.executable, "-c", "import vae_lab.train"],
    "z_dim=0 (config)": [sys.executable, "train.py", "z_dim=0"],
    "ckpt_path=train.py (not a checkpoint)": [sys.executable, "train.py", "ckpt_path=train.py"],
    "model.hidden=[256,0] (a model setting)": [sys.executable, "train.py", "model.hidden=[256,0]"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    repeats = parser.parse_args().repeats
    seconds = {name: [] for name in COMMANDS}
    for _ in range(repeats):
        for name, command in COMMANDS.items():
            with tempfile.TemporaryDirectory() as folder:
                start = time.perf_counter()
                subprocess.run([*command, f"hydra.run.dir={folder}/run"] if "train.py" in command else command,
                               cwd=REPO, capture_output=True)
                seconds[name].append(time.perf_counter() - start)
    base = statistics.median(seconds["import vae_lab.train"])
    for name, times in seconds.items():
        print(f"{name:42s} {statistics.median(times):6.2f} s  {statistics.median(times) / base:5.2f}x")


if __name__ == "__main__":
    main()
