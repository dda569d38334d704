"""latent_kd: a ``distil`` training step against a full fine-tuning step of the same model.

Both models are built from the same seed with the same options; the distil one freezes the feature
stages below ``--cut`` (and keeps them in eval mode), the full one trains every layer (``cut: 0``), and
both take the distil loss with Adam on the same synthetic batch (boxes and gaze maps present, so the
posterior path runs). ``speed_ratio`` is distil images/s over full images/s (above 1: distil is
faster); ``memory_ratio`` is distil training memory over full (below 1: distil needs less). Training
memory is, on CUDA, ``max_memory_allocated`` of the step (reset before each mode); elsewhere the bytes
a step keeps besides the weights: activations saved for backward (counted by a saved-tensors hook),
gradients and Adam's state. Both counts are reported where they exist.

    python bench/latent_kd.py --out bench/results [--backbones resnet18 resnet50 densenet121]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from outputs import write_results

from radsight.config import StageConfig
from radsight.data.sample import Batch, SampleMeta
from radsight.methods.latent_kd import LatentKD

BACKBONES = ("resnet18", "resnet50", "densenet121", "efficientnet_lite0")
LABELS = ["Atelectasis", "Effusion", "Infiltration", "Pneumonia"]


def synthetic_batch(n: int, size: int, device: torch.device) -> Batch:
    """Random images, labels, one box per image and a uniform gaze map: cost does not depend on content."""
    gaze = torch.full((n, size, size), 1.0 / size**2, device=device)
    box = torch.tensor([[size * 0.2, size * 0.3, size * 0.6, size * 0.7]])
    return Batch(
        images=torch.rand(n, 1, size, size, device=device),
        labels=(torch.rand(n, len(LABELS), device=device) < 0.5).float(),
        boxes=[box.clone() for _ in range(n)],
        box_labels=[["lesion"] for _ in range(n)],
        masks={},
        mask_valid={},
        gaze_maps=gaze,
        gaze_valid=torch.ones(n, dtype=torch.bool, device=device),
        fixations=[None] * n,
        reports=[None] * n,
        meta=[SampleMeta(source="bench", path="", patient_id=str(i)) for i in range(n)],
    )


def build(backbone: str, cut: int, device: torch.device) -> LatentKD:
    torch.manual_seed(0)
    method = LatentKD(
        LABELS, "multilabel", {"backbone": backbone, "cut": cut}, [StageConfig(name="distil")]
    ).to(device)
    method.set_stage("distil")
    method.train()
    return method


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def measure_mode(method: LatentKD, batch: Batch, steps: int, device: torch.device) -> dict:
    """Images per second of ``steps`` timed steps after one warm-up, and the memory one step keeps."""
    trained = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trained, lr=1e-4)
    saved: list[int] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor.numel() * tensor.element_size())
        return tensor

    def step(count_saved: bool = False) -> None:
        optimizer.zero_grad(set_to_none=True)
        if count_saved:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                loss, _ = method.compute_loss(batch)
        else:
            loss, _ = method.compute_loss(batch)
        loss.backward()
        optimizer.step()

    step(count_saved=True)  # warm-up, and the activations one step saves for backward
    state = nbytes(v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))
    grads = nbytes(p.grad for p in trained if p.grad is not None)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        weights = torch.cuda.memory_allocated(device)
    rate = images_per_second(step, len(batch), steps, device)
    result = {
        "trained_parameters": sum(p.numel() for p in trained),
        "images_per_s": round(rate, 2),
        "saved_activations_mb": round(sum(saved) / 2**20, 1),
        "step_memory_mb": round((sum(saved) + grads + state) / 2**20, 1),
    }
    if device.type == "cuda":
        result["cuda_peak_mb"] = round((torch.cuda.max_memory_allocated(device) - weights) / 2**20, 1)
    return result


def images_per_second(step: Callable[[], None], n_images: int, steps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n_images * steps / (time.perf_counter() - start)


def measure(backbone: str, cut: int, size: int, batch_size: int, steps: int, device: torch.device) -> dict:
    batch = synthetic_batch(batch_size, size, device)
    distil = measure_mode(build(backbone, cut, device), batch, steps, device)
    full = measure_mode(build(backbone, 0, device), batch, steps, device)
    memory = "cuda_peak_mb" if device.type == "cuda" else "step_memory_mb"
    return {
        "backbone": backbone,
        "cut": cut,
        "input": f"{size}x{size}",
        "batch_size": batch_size,
        "steps": steps,
        "distil": distil,
        "full": full,
        "speed_ratio": round(distil["images_per_s"] / full["images_per_s"], 2),
        "memory_ratio": round(distil[memory] / full[memory], 3),
        "memory_kind": "cuda max_memory_allocated above the weights"
        if device.type == "cuda"
        else "saved activations + gradients + Adam state",
        "device": device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def markdown(results: list[dict]) -> str:
    first = results[0]
    lines = [
        f"# latent_kd: distil step vs full fine-tuning ({first['input']}, batch {first['batch_size']}, Adam)",
        "",
        f"Memory: {first['memory_kind']}. Device: {first['device']}, {first['threads']} threads.",
        "",
        "| backbone | cut | trained params distil / full (M) | img/s distil | img/s full | speed_ratio "
        "| memory distil / full (MB) | memory_ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    key = "cuda_peak_mb" if "cuda_peak_mb" in first["distil"] else "step_memory_mb"
    for r in results:
        d, f = r["distil"], r["full"]
        lines.append(
            f"| {r['backbone']} | {r['cut']} | {d['trained_parameters'] / 1e6:.2f} / "
            f"{f['trained_parameters'] / 1e6:.2f} | {d['images_per_s']:.1f} | {f['images_per_s']:.1f} "
            f"| {r['speed_ratio']:.2f} | {d[key]:.0f} / {f[key]:.0f} | {r['memory_ratio']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for latent_kd.json and latent_kd.md")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    parser.add_argument("--cut", type=int, default=3, help="feature stages frozen in distil")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, help="default: 32 on CUDA, 4 on CPU")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    batch_size = args.batch_size or (32 if device.type == "cuda" else 4)
    results = [measure(b, args.cut, args.size, batch_size, args.steps, device) for b in args.backbones]
    write_results(args.out, "latent_kd", results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
