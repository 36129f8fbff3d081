"""How long the importance-weighted NLL takes: vae_lab.evaluation.metrics.iwae_bound next to the code path it
replaced (kept below as ``previous_iwae_bound``), taking turns on the same model and digits.

    VAE_LAB_DATA=../shared/data python benchmarks/evaluation.py run=outputs/<dense run> [k=5000]
        [n_images=1000] [repeats=2] [full=false]

Each way runs in a process of its own, as it would from the command line: the previous one as it
was, with subnormal floats computed (vae_lab now flushes them to zero, vae_lab/models/base.py),
vae_lab's as it is now. Prints seconds of each way (medians over ``repeats`` turns, loading the
model and digits not counted), their ratio, and the NLL each gives with a different seed (they
agree within the Monte Carlo noise, also printed). ``full=true`` then times both once on all
10,000 test digits.
"""
import json
import math
import statistics
import subprocess
import sys
import time

import torch

from vae_lab.runs import load_model
from vae_lab.cli import exit_on_error, parse_options
from vae_lab.data.splits import test_images as load_test_images
from vae_lab.evaluation.metrics import iwae_bound
from vae_lab.gaussian import log_q

DEFAULTS = {"run": None, "k": 5000, "n_images": 1000, "repeats": 2, "full": False}


@torch.no_grad()
def previous_iwae_bound(model, images, labels, k=1000, batch_size=100, seed=0):
    """The evaluation as it was before (commit 6c570f3): 10,000 latents decoded per chunk, the
    images copied once per latent, the likelihood's plain log_prob, no inference mode."""
    generator = torch.Generator().manual_seed(seed)
    bounds = []
    for x, y in zip(images.split(batch_size), labels.split(batch_size)):
        mu, logvar = model.encode(x, y)
        chunk, weights = max(1, 10_000 // len(x)), []
        for start in range(0, k, chunk):
            n = min(chunk, k - start)
            eps = torch.randn(n, *mu.shape, generator=generator, dtype=mu.dtype)
            z = model.reparameterize(mu, logvar, eps)
            log_px = model.likelihood.log_prob(model.decode(z.flatten(0, 1), y.repeat(n)), x.repeat(n, 1, 1, 1))
            weights.append(log_px.view(n, len(x)) + model.prior.log_prob(z) - log_q(eps, logvar))
        bounds.append(torch.logsumexp(torch.cat(weights), 0) - math.log(k))
    return torch.cat(bounds)


def one_way(way: str, run: str, k: int, n_images: int, seed: int) -> None:
    """The child process: times one way and prints {"seconds", "nll"} (per-image NLLs) as JSON."""
    if way == "previous":
        torch.set_flush_denormal(False)  # as the previous code ran: before any thread pool starts
    model, config, _ = load_model(run)
    images, labels = (t[:n_images] for t in load_test_images(config)[1].tensors)
    function = previous_iwae_bound if way == "previous" else iwae_bound
    start = time.perf_counter()
    bound = function(model, images, labels, k=k, seed=seed)
    print(json.dumps({"seconds": time.perf_counter() - start, "nll": (-bound).tolist()}))


def in_a_process(way: str, run: str, k: int, n_images: int, seed: int) -> dict:
    result = subprocess.run([sys.executable, __file__, "--way", way, run, str(k), str(n_images), str(seed)],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    options = parse_options(None, DEFAULTS, "python benchmarks/evaluation.py run=outputs/<run>",
                            at_least={"k": 1, "n_images": 1, "repeats": 1})
    model, config, _ = load_model(options.run)
    print(f"{options.run}: {config['model']['name']} z_dim={model.z_dim}, {config['loss']['likelihood']}, "
          f"k={options.k}, torch {torch.__version__} with {torch.get_num_threads()} threads")
    ways = ("previous", "vae_lab")
    for n_images in [options.n_images] + ([10_000] if options.full else []):
        seconds, nll = {way: [] for way in ways}, {}
        for _ in range(options.repeats if n_images == options.n_images else 1):
            for seed, way in enumerate(ways):
                found = in_a_process(way, options.run, options.k, n_images, seed)
                seconds[way].append(found["seconds"])
                nll[way] = torch.tensor(found["nll"])
        print(f"\n{len(nll['vae_lab'])} test digits:")
        for way in ways:
            print(f"  {way:8s} {statistics.median(seconds[way]):8.1f} s  NLL {nll[way].mean():.3f} nats "
                  f"(turns: {', '.join(f'{s:.1f}' for s in seconds[way])})")
        difference = nll["previous"] - nll["vae_lab"]  # two seeds: Monte Carlo noise only
        print(f"  previous / vae_lab = {statistics.median(seconds['previous']) / statistics.median(seconds['vae_lab']):.2f}x;"
              f" NLL difference {difference.mean():+.4f} nats, its standard error {difference.std() / len(difference) ** 0.5:.4f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--way"]:
        way, run, k, n_images, seed = sys.argv[2:7]
        one_way(way, run, int(k), int(n_images), int(seed))
    else:
        exit_on_error(main)
