"""Do repeated explanations leak? 500 Grad-CAM calls on a 1-channel resnet18, RSS and hooks sampled.

A CLI or report that explains thousands of images must not grow: hooks left registered would
accumulate (and keep activations alive), as would graphs held by stored tensors. This script records
the process's resident memory and the model's hook count every ``--every`` calls, and fails (exit 1)
when any call leaves a hook behind or memory grows by more than ``--max-growth-mb`` between the first
sample and the last.

    python bench/explain.py --n 500 --out bench/results
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch
from memory import rss_mb
from outputs import write_results
from torch import nn
from torchvision.models import resnet18

from radsight.explain.cam import explain, registered_hooks


def one_channel_resnet18(num_classes: int = 2) -> nn.Module:
    """torchvision's resnet18 with random weights (no download) and a 1-channel stem."""
    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model.eval()


def run(n: int, every: int, size: int, method: str) -> dict:
    """Explain one image per call, ``n`` times, sampling memory and hooks every ``every`` calls."""
    torch.manual_seed(0)
    model = one_channel_resnet18()
    images = torch.rand(1, 1, size, size)
    samples, most_hooks = [], 0
    start = time.perf_counter()
    for call in range(1, n + 1):
        explain(model, images, method=method)  # default target layer: found by a probe every call
        most_hooks = max(most_hooks, registered_hooks(model))
        if call % every == 0:
            samples.append({"call": call, "rss_mb": round(rss_mb(), 2), "hooks": registered_hooks(model)})
    seconds = time.perf_counter() - start
    return {
        "method": method,
        "model": "resnet18, 1 channel, random weights",
        "image_size": size,
        "calls": n,
        "seconds": round(seconds, 2),
        "ms_per_call": round(1000 * seconds / n, 2),
        "max_hooks_after_a_call": most_hooks,
        "growth_mb": round(samples[-1]["rss_mb"] - samples[0]["rss_mb"], 2),
        "growth_between_calls": [samples[0]["call"], samples[-1]["call"]],
        "samples": samples,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def markdown(result: dict) -> str:
    lines = [
        f"# {result['method']} memory over {result['calls']} calls",
        "",
        f"{result['model']}, {result['image_size']}x{result['image_size']}, torch {result['torch']}, "
        f"{result['threads']} threads: {result['ms_per_call']} ms per call.",
        "",
        "| call | RSS (MB) | hooks |",
        "|---:|---:|---:|",
        *(f"| {s['call']} | {s['rss_mb']:.1f} | {s['hooks']} |" for s in result["samples"]),
        "",
        f"Growth from call {result['growth_between_calls'][0]} to {result['growth_between_calls'][1]}: "
        f"{result['growth_mb']:.1f} MB; most hooks left after any call: {result['max_hooks_after_a_call']}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="number of explain calls")
    parser.add_argument("--every", type=int, default=50, help="sample memory and hooks every this many calls")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++", "hirescam"])
    parser.add_argument("--max-growth-mb", type=float, default=20.0, help="fail above this growth")
    parser.add_argument("--out", type=Path, required=True, help="folder for explain.json and explain.md")
    args = parser.parse_args(argv)
    if args.n < 2 * args.every:
        parser.error("--n must cover at least two samples (2 x --every)")
    result = run(args.n, args.every, args.size, args.method)
    write_results(args.out, "explain", result, markdown(result))
    leaked = result["max_hooks_after_a_call"] > 0 or result["growth_mb"] > args.max_growth_mb
    return 1 if leaked else 0


if __name__ == "__main__":
    sys.exit(main())
