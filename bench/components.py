"""How long the pieces with a speed claim take on this machine, against the claim:

- a gaze map at 512 x 512 from 500 fixations (claim: 0.5 s);
- 100 phantom chest films at 224 x 224 rendered (claim: about 6 ms a film, 0.6 s);
- the classification section with 1000 patient-bootstrap resamples of 500 images x 14 labels
  (claim: about 1 s on one core).

Each is run --repeats times after one warm-up run; the table gives the best and the median time and the
best over the claim (above 1: slower than claimed). Run it on an idle machine: a loaded one measures
the load.

    python bench/components.py --out bench/results
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from outputs import write_results

from radsight.data.gaze import fixations_to_map
from radsight.data.sources.phantoms import PhantomChestXray
from radsight.metrics.classification import classification_section


def gaze_map_512() -> None:
    fixations = torch.rand(500, 3, generator=torch.Generator().manual_seed(0))
    fixations_to_map(fixations * torch.tensor([512.0, 512.0, 1.0]), (512, 512), sigma_px=15.0)


def phantom_films_224() -> None:
    dataset = PhantomChestXray(100, size=(224, 224), seed=0)
    for index in range(len(dataset)):
        dataset[index]


def bootstrap_500_by_14() -> None:
    """Scores correlated with the labels, 10% of labels not annotated, about 3 images per patient."""
    rng = np.random.default_rng(0)
    labels = (rng.random((500, 14)) < 0.3).astype(float)
    probs = np.clip(0.35 * labels + 0.65 * rng.random(labels.shape), 0, 1)
    labels[rng.random(labels.shape) < 0.1] = np.nan
    patients = rng.integers(0, 500 // 3, 500)
    classification_section(probs, labels, [str(k) for k in range(14)], patients, n_boot=1000)


CASES: dict[str, tuple[Callable[[], None], float]] = {
    "gaze map, 512 x 512, 500 fixations": (gaze_map_512, 0.5),
    "100 phantom films, 224 x 224": (phantom_films_224, 0.6),
    "bootstrap, 1000 resamples, 500 images x 14 labels": (bootstrap_500_by_14, 1.0),
}
"""Name -> (the work, the claimed seconds)."""


def timed(work: Callable[[], None], repeats: int) -> list[float]:
    work()  # warm-up: imports, allocator, caches
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = {}
    for name, (work, claim) in CASES.items():
        seconds = timed(work, args.repeats)
        best = min(seconds)
        results[name] = {
            "claim_s": claim,
            "best_s": round(best, 4),
            "median_s": round(statistics.median(seconds), 4),
            "best_over_claim": round(best / claim, 2),
        }
    result = {
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "repeats": args.repeats,
        "timings": results,
    }
    table = [
        f"# Component timings ({args.repeats} runs each, {torch.get_num_threads()} threads)",
        "",
        "| work | claim (s) | best (s) | median (s) | best / claim |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {r['claim_s']:.2f} | {r['best_s']:.3f} | {r['median_s']:.3f} "
            f"| {r['best_over_claim']:.2f} |"
            for name, r in results.items()
        ),
    ]
    write_results(args.out, "components", result, "\n".join(table))


if __name__ == "__main__":
    main()
