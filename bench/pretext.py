"""pretext: one SimCLR pre-training step through radsight against a bare PyTorch loop of the same model,
views and batch, and the same step in the ``lightly`` library where it is installed.

radsight's step is the ``contrastive`` stage of :class:`radsight.methods.pretext_curriculum.
PretextCurriculum` (``compute_loss``, backward, AdamW step). The bare loop builds timm's model and the
same projection head from the same seed, draws views with the same :class:`radsight.nn.pretext.
XrayViews`, and writes NT-Xent inline. The lightly step uses lightly's ``SimCLRProjectionHead`` and
``NTXentLoss`` on the same backbone and views (install it beside radsight with ``pip install
".[bench-lightly]"``). Rounds of each alternate so a busy machine slows all alike; ``ratio_vs_bare`` is
radsight's images/s over the bare loop's (median over rounds; 1 = no overhead), ``ratio_vs_lightly``
the same against lightly.

    python bench/pretext.py --out bench/results [--size 224 --batch-size 64 --rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from outputs import write_results
from torch import nn

from radsight.config import StageConfig
from radsight.data.sample import Batch, SampleMeta
from radsight.methods.pretext_curriculum import PretextCurriculum
from radsight.nn.pretext import XrayViews, mlp

Step = Callable[[torch.Tensor], None]


def synthetic_batch(n: int, size: int, device: torch.device) -> Batch:
    return Batch(
        images=torch.rand(n, 1, size, size, device=device),
        labels=None,
        boxes=[None] * n,
        box_labels=[None] * n,
        masks={},
        mask_valid={},
        gaze_maps=None,
        gaze_valid=None,
        fixations=[None] * n,
        reports=[None] * n,
        meta=[SampleMeta(source="bench", path="", patient_id=str(i)) for i in range(n)],
    )


def radsight_step(backbone: str, device: torch.device) -> Callable[[Batch], None]:
    torch.manual_seed(0)
    method = PretextCurriculum(["x"], "multilabel", {"backbone": backbone}, [StageConfig(name="contrastive")])
    method.to(device).set_stage("contrastive")
    method.train()
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-3)

    def step(batch: Batch) -> None:
        loss, _ = method.compute_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def bare_step(backbone: str, device: torch.device, temperature: float = 0.2) -> Callable[[Batch], None]:
    torch.manual_seed(0)
    model = timm.create_model(backbone, pretrained=False, in_chans=1, num_classes=0).to(device).train()
    head = mlp(model.num_features, 512, 128).to(device).train()
    views = XrayViews()
    optimizer = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=1e-3)

    def step(batch: Batch) -> None:
        x = batch.images
        z = F.normalize(head(model(torch.cat([views(x), views(x)]))), dim=1)
        n = len(x)
        logits = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
        target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(device)
        loss = F.cross_entropy(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def lightly_step(backbone: str, device: torch.device) -> Callable[[Batch], None] | None:
    try:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead
    except ImportError:
        return None
    torch.manual_seed(0)
    model = timm.create_model(backbone, pretrained=False, in_chans=1, num_classes=0).to(device).train()
    head: nn.Module = SimCLRProjectionHead(model.num_features, 512, 128).to(device).train()
    criterion, views = NTXentLoss(temperature=0.2), XrayViews()
    optimizer = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=1e-3)

    def step(batch: Batch) -> None:
        x = batch.images
        loss = criterion(head(model(views(x))), head(model(views(x))))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def rate(step: Callable[[Batch], None], batch: Batch, steps: int, device: torch.device) -> float:
    """Images per second over ``steps`` steps."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(batch) * steps / (time.perf_counter() - start)


def measure(backbone: str, size: int, batch_size: int, steps: int, rounds: int, device: torch.device) -> dict:
    batch = synthetic_batch(batch_size, size, device)
    runners = {"radsight": radsight_step(backbone, device), "bare": bare_step(backbone, device)}
    lightly = lightly_step(backbone, device)
    if lightly is not None:
        runners["lightly"] = lightly
    for step in runners.values():
        step(batch)  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, step in runners.items():
            rates[name].append(rate(step, batch, steps, device))
    median = {name: statistics.median(values) for name, values in rates.items()}
    result = {
        "backbone": backbone,
        "input": f"{size}x{size}",
        "batch_size": batch_size,
        "steps_per_round": steps,
        "rounds": rounds,
        "images_per_s": {name: round(value, 2) for name, value in median.items()},
        "ratio_vs_bare": round(
            statistics.median(r / b for r, b in zip(rates["radsight"], rates["bare"], strict=True)), 3
        ),
        "lightly": "installed" if lightly is not None else "not installed (pip install '.[bench-lightly]')",
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if lightly is not None:
        pairs = zip(rates["radsight"], rates["lightly"], strict=True)
        result["ratio_vs_lightly"] = round(statistics.median(r / b for r, b in pairs), 3)
    return result


def markdown(result: dict) -> str:
    rates = result["images_per_s"]
    lines = [
        f"# SimCLR pre-training step: {result['backbone']}, {result['input']}, batch {result['batch_size']}",
        "",
        f"Device: {result['device']}, {result['threads']} threads; median of {result['rounds']} alternating "
        f"rounds of {result['steps_per_round']} steps. lightly: {result['lightly']}.",
        "",
        "| loop | images/s |",
        "|---|---:|",
        *(f"| {name} | {value:.1f} |" for name, value in rates.items()),
        "",
        f"ratio_vs_bare: {result['ratio_vs_bare']:.3f}"
        + (f"; ratio_vs_lightly: {result['ratio_vs_lightly']:.3f}" if "ratio_vs_lightly" in result else ""),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for pretext.json and pretext.md")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, help="default: 64 on CUDA, 8 on CPU")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    batch_size = args.batch_size or (64 if device.type == "cuda" else 8)
    result = measure(args.backbone, args.size, batch_size, args.steps, args.rounds, device)
    write_results(args.out, "pretext", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
