"""Is radsight's pipeline as fast as the hardware allows? Loading, and training steps vs bare PyTorch.

Three numbers, in one run on one machine:
- data loading: phantoms (or real NIH images with --data) read, transformed and collated, images/s,
  with 0 and with --workers DataLoader workers;
- training steps of the supervised baseline through radsight (its LightningModule in Lightning's
  Trainer, with radsight's checkpoint IO and epoch log), images/s;
- a bare PyTorch loop (forward, masked BCE, backward, AdamW step) on the same model and batch.
The ratio radsight / bare should be at least 0.9, and loading with workers faster than training.

Then the training levers, on the same model and batch through radsight: step throughput with
``trainer.precision: bf16-mixed``, with ``trainer.channels_last`` and with both, each as a ratio to fp32;
and the demo (recipes/baseline_cpu.yaml) trained and evaluated fp32 and bf16-mixed, with its test
AUROC both ways (claim: bf16 costs at most 0.01; --no-demo skips the two trainings).

    python bench/pipeline.py --out bench/results
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from outputs import write_results
from torch.utils.data import DataLoader

from radsight.config import SourceSpec, StageConfig
from radsight.data.assemble import LabelledUnion, build_source
from radsight.data.sample import Batch, collate, make_loader
from radsight.data.transforms import build_transforms
from radsight.methods.supervised import SupervisedClassifier
from radsight.nn.losses import masked_bce


def loading_rate(dataset: Any, batch_size: int, workers: int, batches: int) -> float:
    loader = make_loader(dataset, batch_size, shuffle=False, num_workers=workers)
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        seen += len(next(iterator))
    return seen / (time.perf_counter() - start)


class StepTimer(L.Callback):
    """Time training steps after ``warmup`` steps, excluding set-up and the end-of-epoch checkpoint."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.images = warmup, 0.0, 0.0, 0

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: Batch, index: int
    ) -> None:
        if index == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, out: Any, batch: Batch, index: int
    ) -> None:
        if index >= self.warmup:
            self.images += len(batch)
            self.end = time.perf_counter()


def new_model(labels: list[str], backbone: str) -> SupervisedClassifier:
    torch.manual_seed(0)
    return SupervisedClassifier(labels, "multilabel", {"backbone": backbone}, [StageConfig(name="classify")])


LEVERS = {
    "fp32": ("32-true", False),
    "bf16-mixed": ("bf16-mixed", False),
    "channels_last": ("32-true", True),
    "bf16-mixed + channels_last": ("bf16-mixed", True),
}
"""Name -> (trainer.precision, trainer.channels_last)."""
BF16_AUROC_COST = 0.01


def radsight_rate(
    batch: Batch,
    labels: list[str],
    backbone: str,
    steps: int,
    warmup: int,
    out: Path,
    precision: str = "32-true",
    channels_last: bool = False,
) -> float:
    from radsight.channels_last import ChannelsLast
    from radsight.checkpoints import AtomicCheckpointIO
    from radsight.train import EpochLog

    method = new_model(labels, backbone)
    method.set_stage("classify")
    timer = StepTimer(warmup)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        precision=precision,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            timer,
            EpochLog(out / "bench_log.jsonl", "classify"),
            *([ChannelsLast()] if channels_last else []),
        ],
        plugins=[AtomicCheckpointIO()],
        default_root_dir=out,
        enable_checkpointing=False,
    )
    loader = DataLoader([batch] * (steps + warmup), batch_size=None)
    trainer.fit(method, loader)
    return timer.images / (timer.end - timer.start)


def bare_rate(batch: Batch, labels: list[str], backbone: str, steps: int, warmup: int) -> float:
    model = new_model(labels, backbone)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    for step in range(steps + warmup):
        if step == warmup:
            start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = masked_bce(model(batch.images), batch.labels)
        loss.backward()
        optimizer.step()
    return steps * len(batch) / (time.perf_counter() - start)


def demo_auroc(precision: str, out: Path, overrides: list[str]) -> dict[str, float]:
    """Train and evaluate the demo recipe (with ``overrides``) at ``precision``: its test AUROC (macro,
    with CI) and minutes."""
    from importlib import resources

    from radsight.config import load_recipe
    from radsight.train import train_and_evaluate

    path = resources.files("radsight") / "recipes" / "baseline_cpu.yaml"
    recipe = load_recipe(
        str(path), [*overrides, f"trainer.precision={precision}", "trainer.progress_bar=false"]
    )
    start = time.perf_counter()
    _, metrics = train_and_evaluate(recipe, out / f"demo_{precision}")
    assert metrics is not None
    section = metrics["classification"]
    return {
        "auroc_macro": section["auroc_macro"],
        "ci_low": section["auroc_macro_ci_low"],
        "ci_high": section["auroc_macro_ci_high"],
        "minutes": round((time.perf_counter() - start) / 60, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--data", type=Path, default=None, help="NIH extract folder (default: phantoms)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-demo", action="store_true", help="skip training the demo fp32 and bf16")
    parser.add_argument(
        "--demo-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override of the demo recipe for both trainings, e.g. a smaller model where bf16 is emulated",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    if args.data is None:
        spec = SourceSpec(name="phantom", options={"n": 400, "size": [args.size, args.size]})
        labels = ["nodule", "opacity"]
    else:
        spec = SourceSpec(name="nih", root=str(args.data))
        labels = ["Pneumonia", "Infiltration"]
    transform = build_transforms((args.size, args.size), train=True, augment=True, gaze_sigma_fraction=None)
    dataset = LabelledUnion([build_source(spec)], [spec.name], labels, transform)
    batches = max(4, min(len(dataset) // args.batch_size - 1, 12))
    loading = {w: loading_rate(dataset, args.batch_size, w, batches) for w in (0, args.workers)}
    batch = collate([dataset[i] for i in range(args.batch_size)])
    bare = bare_rate(batch, labels, args.backbone, args.steps, args.warmup)
    ours = radsight_rate(batch, labels, args.backbone, args.steps, args.warmup, args.out)
    levers = {
        name: radsight_rate(batch, labels, args.backbone, args.steps, args.warmup, args.out, *setting)
        for name, setting in LEVERS.items()
    }
    demo = (
        {} if args.no_demo else {p: demo_auroc(p, args.out, args.demo_set) for p in ("32-true", "bf16-mixed")}
    )
    result = {
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "data": spec.name,
        "loading_images_per_s": {f"workers_{w}": round(r, 1) for w, r in loading.items()},
        "train_images_per_s": {"radsight": round(ours, 2), "bare_pytorch": round(bare, 2)},
        "ratio_radsight_over_bare": round(ours / bare, 3),
        "loading_over_training": round(loading[args.workers] / ours, 2),
        "levers_images_per_s": {name: round(rate, 2) for name, rate in levers.items()},
        "levers_over_fp32": {name: round(rate / levers["fp32"], 3) for name, rate in levers.items()},
        "demo_auroc": demo,
    }
    if demo:
        cost = demo["32-true"]["auroc_macro"] - demo["bf16-mixed"]["auroc_macro"]
        result["demo_bf16_auroc_cost"] = round(cost, 4)
        result["demo_bf16_claim_met"] = cost <= BF16_AUROC_COST
    rows = [
        ("loading, 0 workers (images/s)", result["loading_images_per_s"]["workers_0"]),
        (
            f"loading, {args.workers} workers (images/s)",
            result["loading_images_per_s"][f"workers_{args.workers}"],
        ),
        ("training through radsight (images/s)", ours),
        ("training, bare PyTorch loop (images/s)", bare),
        ("ratio radsight / bare", result["ratio_radsight_over_bare"]),
        ("loading / training", result["loading_over_training"]),
    ]
    table = [
        f"# Pipeline benchmark ({spec.name}, {args.backbone}, {args.size} px, batch {args.batch_size})",
        "",
        "| measure | value |",
        "|---|---|",
        *(f"| {name} | {value:.2f} |" for name, value in rows),
        "",
        "| training lever (radsight, same batch) | images/s | ratio to fp32 |",
        "|---|---|---|",
        *(f"| {name} | {rate:.2f} | {rate / levers['fp32']:.2f} |" for name, rate in levers.items()),
    ]
    if demo:
        table += [
            "",
            f"| demo (baseline_cpu.yaml{' with ' + ', '.join(args.demo_set) if args.demo_set else ''}) "
            "trained | test AUROC macro (95% CI) | minutes |",
            "|---|---|---|",
            *(
                f"| {p} | {d['auroc_macro']:.3f} ({d['ci_low']:.3f}-{d['ci_high']:.3f}) | {d['minutes']} |"
                for p, d in demo.items()
            ),
            f"| bf16 cost (fp32 - bf16; claim <= {BF16_AUROC_COST}) "
            f"| {result['demo_bf16_auroc_cost']:+.4f} | |",
        ]
    write_results(args.out, "pipeline", result, "\n".join(table))


if __name__ == "__main__":
    main()
