"""``python -m vae_lab.morphometrics``: the command of vae_lab/evaluation/morphometrics.py, under the name the README gives."""
from vae_lab.evaluation.morphometrics import main

if __name__ == "__main__":
    main()
