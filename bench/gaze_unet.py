"""Gaze UNet cost at 320x256: parameters, peak memory, training and inference images per second.

Two configurations: the paper's (DenseNet-201 encoder A, full-width encoder B) and the CPU recipe's
model options (recipes/gaze_unet_cpu.yaml). Training is the ``joint`` stage (every part trains, both
losses) with Adam; inference is ``predict`` (probabilities and the gaze map). Each configuration runs in
its own process, so its peak memory is its own: on CUDA ``max_memory_allocated``, on CPU the process's
peak resident set (which includes the interpreter and libraries, reported separately as the baseline).

    python bench/gaze_unet.py --out bench/results
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from memory import peak_rss_mb
from outputs import write_results

from radsight.config import StageConfig
from radsight.data.sample import Batch, SampleMeta
from radsight.methods.gaze_unet import GazeUNet

SIZE = (320, 256)  # height, width
RECIPES = Path(__file__).resolve().parents[1] / "recipes"
CONFIGS = {
    "densenet201": {"backbone": "densenet201", "unet_width": 1.0},
    "cpu": yaml.safe_load((RECIPES / "gaze_unet_cpu.yaml").read_text())["model"],
}


def synthetic_batch(n: int, device: torch.device) -> Batch:
    """Random images with one-hot labels and a uniform gaze map: the cost does not depend on content."""
    height, width = SIZE
    gaze = torch.full((n, height, width), 1.0 / (height * width), device=device)
    return Batch(
        images=torch.rand(n, 1, height, width, device=device),
        labels=torch.eye(3, device=device)[torch.arange(n) % 3],
        boxes=[None] * n,
        box_labels=[None] * n,
        masks={},
        mask_valid={},
        gaze_maps=gaze,
        gaze_valid=torch.ones(n, dtype=torch.bool, device=device),
        fixations=[None] * n,
        reports=[None] * n,
        meta=[SampleMeta(source="bench", path="", patient_id=str(i)) for i in range(n)],
    )


def images_per_second(step, n_images: int, steps: int, device: torch.device) -> float:
    step()  # warm-up: allocator, cuDNN/oneDNN algorithm choice
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n_images * steps / (time.perf_counter() - start)


def measure(name: str, batch_size: int, steps: int, device: torch.device) -> dict:
    """Build one configuration, train ``steps`` joint steps and predict ``steps`` batches."""
    baseline_mb = peak_rss_mb()
    torch.manual_seed(0)
    method = GazeUNet(
        ["Normal", "CHF", "pneumonia"],
        "multiclass",
        {**CONFIGS[name], "pretrained": None},
        [StageConfig(name="joint")],
    ).to(device)
    method.set_stage("joint")
    optimizer = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=1e-4)
    batch = synthetic_batch(batch_size, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def train_step() -> None:
        method.train()
        optimizer.zero_grad(set_to_none=True)
        loss, _ = method.compute_loss(batch)
        loss.backward()
        optimizer.step()

    def predict_step() -> None:
        method.eval()
        with torch.inference_mode():
            method.predict(batch)

    train_rate = images_per_second(train_step, batch_size, steps, device)
    infer_rate = images_per_second(predict_step, batch_size, steps, device)
    parts = {
        part: sum(p.numel() for p in getattr(method, part).parameters())
        for part in ("encoder_a", "encoder_b", "decoder", "fusion_classifier", "projection")
    }
    return {
        "config": name,
        "model": CONFIGS[name],
        "input": f"{SIZE[0]}x{SIZE[1]}",
        "batch_size": batch_size,
        "steps": steps,
        "parameters": sum(p.numel() for p in method.parameters()),
        "parameters_by_part": parts,
        "train_images_per_s": round(train_rate, 2),
        "inference_images_per_s": round(infer_rate, 2),
        "peak_memory_mb": round(
            torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else peak_rss_mb(), 1
        ),
        "memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS",
        "process_baseline_mb": round(baseline_mb, 1),
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def markdown(results: list[dict]) -> str:
    lines = [
        f"# Gaze UNet at {SIZE[0]}x{SIZE[1]} (joint stage, Adam)",
        "",
        "| config | parameters (M) | batch | train img/s | inference img/s | peak memory (MB) | device |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['config']} | {r['parameters'] / 1e6:.1f} | {r['batch_size']} "
            f"| {r['train_images_per_s']:.2f} | {r['inference_images_per_s']:.2f} "
            f"| {r['peak_memory_mb']:.0f} ({r['memory_kind']}) "
            f"| {r['device']}, {r['threads']} threads |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for gaze_unet.json and gaze_unet.md")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batch-size", type=int, help="default: 16 on CUDA, 2 on CPU")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--one", choices=list(CONFIGS), help=argparse.SUPPRESS)  # child process mode
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    batch_size = args.batch_size or (16 if device.type == "cuda" else 2)
    if args.one:
        print(json.dumps(measure(args.one, batch_size, args.steps, device)))
        return 0
    if args.out is None:
        parser.error("--out is required")
    results = []
    for name in args.configs:
        command = [sys.executable, __file__, "--one", name, "--batch-size", str(batch_size)]
        command += ["--steps", str(args.steps), "--device", args.device]
        child = subprocess.run(command, check=True, capture_output=True, text=True)
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    write_results(args.out, "gaze_unet", results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
