"""Evaluation at MIMIC scale: the classification section (patient bootstrap) as the test set grows.

The section (AUROC, AUPRC, sensitivity / specificity / F1 at a threshold, calibration, macro and micro
averages, BCa intervals from --resamples patient resamples and the jackknife) of --labels labels, on
synthetic scores correlated with the labels, 10% of labels not annotated, about 3 images per patient,
at each --sizes number of images: one run each, timed by wall and CPU time. Claim: 10,000 images x
14 labels x 1,000 resamples in under 10 s.

    python bench/evaluate.py --out bench/results
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
from outputs import write_results

from radsight.metrics.classification import classification_section

CLAIM = (10_000, 10.0)
"""(images, seconds): the size the claim is about and the time it must take less than."""


def scored_set(n_images: int, n_labels: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities, labels (NaN: not annotated) and patient ids of a synthetic test set."""
    rng = np.random.default_rng(seed)
    labels = (rng.random((n_images, n_labels)) < 0.3).astype(float)
    probs = np.clip(0.35 * labels + 0.65 * rng.random(labels.shape), 0, 1)
    labels[rng.random(labels.shape) < 0.1] = np.nan
    return probs, labels, rng.integers(0, max(1, n_images // 3), n_images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--sizes", default="100,1000,10000,100000", help="numbers of images, comma-separated")
    parser.add_argument("--labels", type=int, default=14)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    names = [f"label{k}" for k in range(args.labels)]
    rows = []
    for n_images in (int(s) for s in args.sizes.split(",")):
        probs, labels, patients = scored_set(n_images, args.labels)
        wall, cpu = time.perf_counter(), time.process_time()
        section = classification_section(probs, labels, names, patients, n_boot=args.resamples, seed=0)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rows.append(
            {
                "images": n_images,
                "patients": section["n_patients"],
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "ms_per_image_per_1000_resamples": round(1000 * wall / n_images * 1000 / args.resamples, 3),
                "auroc_macro": section["auroc_macro"],
            }
        )
    claimed = next((r for r in rows if r["images"] == CLAIM[0]), None)
    result = {
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "labels": args.labels,
        "resamples": args.resamples,
        "claim": {"images": CLAIM[0], "seconds": CLAIM[1]},
        "claim_met": None if claimed is None else claimed["wall_s"] < CLAIM[1],
        "runs": rows,
    }
    table = [
        f"# Classification section: {args.labels} labels, {args.resamples} patient resamples + jackknife "
        f"(claim: {CLAIM[0]:,} images < {CLAIM[1]:.0f} s)",
        "",
        "| images | patients | wall (s) | CPU (s) | ms / image / 1000 resamples |",
        "|---|---|---|---|---|",
        *(
            f"| {r['images']:,} | {r['patients']:,} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} "
            f"| {r['ms_per_image_per_1000_resamples']:.3f} |"
            for r in rows
        ),
    ]
    write_results(args.out, "evaluate", result, "\n".join(table))


if __name__ == "__main__":
    main()
