"""GLAM's memory and speed at full mammogram resolution (2944 x 1920), against a plain ResNet-34 classifier.

GLAM's point is that a narrow global module plus a ResNet-34 on a few 512 x 512 patches needs a fraction of
the memory of a ResNet-34 over the whole image. Each case runs in a fresh process on this machine's CPU,
batch 1: inference (``predict``: probabilities, and for GLAM the fused map at full resolution) and one
training step (loss, backward, AdamW step; GLAM in its ``joint`` stage, where everything trains). Peak
memory is the process's peak resident set size; "step peak" subtracts the resident size just before the
step (model, optimizer and input already built), so it is the memory the step itself needs.

    python bench/glam.py --out bench/results
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
from memory import peak_rss_mb, rss_mb
from outputs import write_results

from radsight.config import StageConfig
from radsight.data.sample import Sample, SampleMeta, collate
from radsight.methods import method_class

SIZE = (2944, 1920)
LABELS = ["benign", "malignant"]
CASES = ("glam_inference", "glam_train_step", "resnet34_inference", "resnet34_train_step")


def build(case: str):
    """The method of a case with random weights: GLAM at its published setting, or ResNet-34 + linear."""
    torch.manual_seed(0)
    if case.startswith("glam"):
        return method_class("glam")(LABELS, "multilabel", {}, [StageConfig(name="joint")])
    return method_class("supervised")(
        LABELS, "multilabel", {"backbone": "resnet34"}, [StageConfig(name="classify")]
    )


def run_case(case: str, repeats: int) -> dict:
    """Time ``repeats`` runs of one case in this process and report its memory."""
    method = build(case)
    meta = SampleMeta(source="bench", path="-", patient_id="-")
    image = torch.rand(1, *SIZE)
    batch = collate([Sample(image=image, meta=meta, labels=torch.tensor([1.0, 0.0]))])
    training = case.endswith("train_step")
    if training:
        method.set_stage(next(iter(method.stages)))
        method.train()
        optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-4)
    else:
        method.eval()
    before = rss_mb()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        if training:
            loss, _ = method.compute_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        else:
            with torch.inference_mode():
                method.predict(batch)
        seconds.append(time.perf_counter() - start)
    return {
        "case": case,
        "parameters_m": round(sum(p.numel() for p in method.parameters()) / 1e6, 2),
        "seconds": [round(s, 2) for s in seconds],
        "seconds_best": round(min(seconds), 2),
        "rss_before_step_mb": round(before, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "step_peak_mb": round(peak_rss_mb() - before, 1),
    }


def run_all(repeats: int) -> dict:
    results = {}
    for case in CASES:
        command = [sys.executable, __file__, "--child", case, "--repeats", str(repeats)]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        results[case] = json.loads(done.stdout.strip().splitlines()[-1])
        print(json.dumps(results[case]), flush=True)
    ratio = {
        kind: round(results[f"glam_{kind}"]["step_peak_mb"] / results[f"resnet34_{kind}"]["step_peak_mb"], 3)
        for kind in ("inference", "train_step")
    }
    return {
        "image_size": list(SIZE),
        "batch_size": 1,
        "cases": results,
        "glam_over_resnet34_step_memory": ratio,
        "glam_over_resnet34_peak_memory": {
            kind: round(
                results[f"glam_{kind}"]["peak_rss_mb"] / results[f"resnet34_{kind}"]["peak_rss_mb"], 3
            )
            for kind in ("inference", "train_step")
        },
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }


def markdown(result: dict) -> str:
    lines = [
        f"# GLAM vs ResNet-34 at {result['image_size'][0]} x {result['image_size'][1]}, batch 1, CPU",
        "",
        f"torch {result['torch']}, {result['threads']} threads. Each case in a fresh process.",
        "",
        "| case | parameters (M) | time (s, best) | step peak (MB) | process peak (MB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for case in result["cases"].values():
        lines.append(
            f"| {case['case']} | {case['parameters_m']} | {case['seconds_best']} "
            f"| {case['step_peak_mb']:.0f} | {case['peak_rss_mb']:.0f} |"
        )
    step, peak = result["glam_over_resnet34_step_memory"], result["glam_over_resnet34_peak_memory"]
    lines += [
        "",
        f"GLAM needs {step['train_step']:.0%} of ResNet-34's step memory to train "
        f"({peak['train_step']:.0%} of its process peak) and {step['inference']:.0%} to infer "
        f"({peak['inference']:.0%}).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for glam.json and glam.md")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per case")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_case(args.child, args.repeats)))
        return 0
    if args.out is None:
        parser.error("--out is required")
    result = run_all(args.repeats)
    write_results(args.out, "glam", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
