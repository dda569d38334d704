"""latent_kd: a ``distil`` training step against a full fine-tuning step of the same model.

Both models are built from the same seed with the same options; the distil one freezes the feature
stages below ``--cut`` (and keeps them in eval mode), the full one trains every layer (``cut: 0``), and
both take the distil loss with Adam on the same synthetic batch (boxes and gaze maps present, so the
posterior path runs). The frozen stages record no autograd graph (nothing in them requires a gradient),
so a distil step saves their backward pass and their saved activations; it still runs their forward
pass, which bounds ``speed_ratio`` by about (forward + backward of the whole network) / forward.
Several ``--cuts`` are measured against the same full model.

The timed steps of the two models alternate, and each model's rate is taken from its median step, so
a load that comes and goes on a shared machine slows both alike. ``speed_ratio`` is distil images/s
over full images/s (above 1: distil is faster); ``memory_ratio`` is distil training memory over full
(below 1: distil needs less). Training memory is, on CUDA, ``max_memory_allocated`` of the step above
the weights (reset before each model's steps); elsewhere the bytes a step keeps besides the weights:
activations saved for backward (counted by a saved-tensors hook), gradients and Adam's state. Both
counts are reported where they exist.

    python bench/latent_kd.py --out bench/results [--backbones resnet18 densenet121] [--cuts 3 4]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
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


class Trainer:
    """One model's training step (the distil loss, Adam) on a fixed batch, with its memory counts."""

    def __init__(self, method: LatentKD, batch: Batch, device: torch.device) -> None:
        self.method, self.batch, self.device = method, batch, device
        self.trained = [p for p in method.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.trained, lr=1e-4)
        self.seconds: list[float] = []

    def step(self, saved: list[int] | None = None) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if saved is None:
            loss, _ = self.method.compute_loss(self.batch)
        else:

            def pack(tensor: torch.Tensor) -> torch.Tensor:
                saved.append(tensor.numel() * tensor.element_size())
                return tensor

            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                loss, _ = self.method.compute_loss(self.batch)
        loss.backward()
        self.optimizer.step()

    def warm_up(self) -> dict:
        """One step that also counts what a step keeps: saved activations, gradients, Adam's state."""
        saved: list[int] = []
        self.step(saved)
        state = nbytes(v for s in self.optimizer.state.values() for v in s.values() if torch.is_tensor(v))
        grads = nbytes(p.grad for p in self.trained if p.grad is not None)
        memory = {
            "trained_parameters": sum(p.numel() for p in self.trained),
            "saved_activations_mb": round(sum(saved) / 2**20, 1),
            "step_memory_mb": round((sum(saved) + grads + state) / 2**20, 1),
        }
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            weights = torch.cuda.memory_allocated(self.device)
            self.timed_step()
            peak = torch.cuda.max_memory_allocated(self.device) - weights
            memory["cuda_peak_mb"] = round(peak / 2**20, 1)
            self.seconds.clear()
        return memory

    def timed_step(self) -> None:
        synchronize(self.device)
        start = time.perf_counter()
        self.step()
        synchronize(self.device)
        self.seconds.append(time.perf_counter() - start)

    def images_per_s(self) -> float:
        return len(self.batch) / statistics.median(self.seconds)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    backbone: str, cuts: list[int], size: int, batch_size: int, steps: int, device: torch.device
) -> list[dict]:
    """Each cut's distil model against the full model, their timed steps alternating."""
    batch = synthetic_batch(batch_size, size, device)
    full = Trainer(build(backbone, 0, device), batch, device)
    distils = [Trainer(build(backbone, cut, device), batch, device) for cut in cuts]
    memory = {id(t): t.warm_up() for t in (full, *distils)}
    for _ in range(steps):
        for trainer in (full, *distils):
            trainer.timed_step()
    key = "cuda_peak_mb" if device.type == "cuda" else "step_memory_mb"
    full_result = {**memory[id(full)], "images_per_s": round(full.images_per_s(), 2)}
    results = []
    for cut, distil in zip(cuts, distils, strict=True):
        distil_result = {**memory[id(distil)], "images_per_s": round(distil.images_per_s(), 2)}
        results.append(
            {
                "backbone": backbone,
                "cut": cut,
                "input": f"{size}x{size}",
                "batch_size": batch_size,
                "steps": steps,
                "distil": distil_result,
                "full": full_result,
                "speed_ratio": round(distil.images_per_s() / full.images_per_s(), 2),
                "memory_ratio": round(distil_result[key] / full_result[key], 3),
                "memory_kind": "cuda max_memory_allocated above the weights"
                if device.type == "cuda"
                else "saved activations + gradients + Adam state",
                "device": device_name(device),
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
            }
        )
    return results


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def markdown(results: list[dict]) -> str:
    first = results[0]
    lines = [
        f"# latent_kd: distil step vs full fine-tuning ({first['input']}, batch {first['batch_size']}, Adam)",
        "",
        f"Rates from the median of {first['steps']} alternating steps per model. Memory: "
        f"{first['memory_kind']}. Device: {first['device']}, {first['threads']} threads.",
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
    parser.add_argument(
        "--cuts", type=int, nargs="+", default=[3, 4], help="feature stages frozen in distil, one model each"
    )
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, help="default: 32 on CUDA, 4 on CPU")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per model after one warm-up step")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    batch_size = args.batch_size or (32 if device.type == "cuda" else 4)
    results = [
        result
        for backbone in args.backbones
        for result in measure(backbone, args.cuts, args.size, batch_size, args.steps, device)
    ]
    write_results(args.out, "latent_kd", results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
