"""``python -m vae_lab.classifier``: the command of vae_lab/evaluation/classifier.py, under the name the README gives."""
from vae_lab.evaluation.classifier import main

if __name__ == "__main__":
    main()
