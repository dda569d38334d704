"""Inference speed: radsight predict end to end against bare loops, on the same model, batch and images.

All in one run, on --images phantom films written as 8-bit PNG files (--file-size px) and the
supervised baseline (--backbone at --size px, untrained: speed does not depend on the weights):

- radsight end to end: ``LoadedModel.prepare`` (read, render, letterbox) and ``infer_batch`` (model,
  probabilities per label) per batch of files, with each runtime (PyTorch, ONNX Runtime on the
  folder's ``model.onnx``);
- bare loops doing the same job the plain way (PIL read, scale to [0, 1], resize and pad, stack, model,
  sigmoid), with the model run eagerly, in channels_last, through torch.compile, under bf16 autocast,
  and in ONNX Runtime;
- the same model steps alone on tensors already prepared (what each option costs without the files).

Each option processes every image --repeats times after one warm-up pass; the table gives the best
pass in images/s. The ratio of radsight's best end-to-end runtime to the fastest bare option should be
at least 0.8. It also times ``radsight --help`` in a fresh process (claim: under 2 s, by
bench/cli_startup.py's measure).

    python bench/inference.py --out bench/results
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
import torch
import torch.nn.functional as F
from cli_startup import timed
from outputs import write_results
from PIL import Image

from radsight.checkpoints import export_model
from radsight.config import parse_recipe
from radsight.data.sources.phantoms import PhantomChestXray
from radsight.infer import LoadedModel, infer_batch
from radsight.methods.registry import build_method, export_config
from radsight.onnx_export import export_onnx
from radsight.run_folder import ONNX_FILE

LABELS = ["nodule", "opacity"]
TARGET_RATIO = 0.8
HELP_CLAIM_S = 2.0


def write_films(folder: Path, n: int, size: int) -> list[Path]:
    dataset = PhantomChestXray(n, size=(size, size), seed=0)
    paths = []
    for index in range(n):
        path = folder / f"film{index:03d}.png"
        pixels = (dataset[index].image[0].numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def bare_prepare(paths: list[Path], size: int) -> torch.Tensor:
    """The plain way: read, scale to [0, 1], resize keeping the aspect ratio, pad, stack."""
    images = []
    for path in paths:
        pixels = torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255.0)[None, None]
        scale = size / max(pixels.shape[-2:])
        inner = [max(1, round(s * scale)) for s in pixels.shape[-2:]]
        resized = F.interpolate(pixels, size=inner, mode="bilinear", antialias=True, align_corners=False)
        top, left = (size - inner[0]) // 2, (size - inner[1]) // 2
        images.append(F.pad(resized, [left, size - inner[1] - left, top, size - inner[0] - top])[0])
    return torch.stack(images)


def best_rate(work: Callable[[], int], repeats: int) -> float:
    """Images per second of the fastest of ``repeats`` passes, after one warm-up pass."""
    work()
    seconds, images = [], 0
    for _ in range(repeats):
        start = time.perf_counter()
        images = work()
        seconds.append(time.perf_counter() - start)
    return images / min(seconds)


def _cell(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--file-size", type=int, default=512)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="radsight-bench-"))
    paths = write_films(scratch, args.images, args.file_size)
    chunks = [paths[i : i + args.batch_size] for i in range(0, len(paths), args.batch_size)]
    recipe = parse_recipe(
        {
            "name": "bench-inference",
            "data": {
                "sources": [{"name": "phantom"}],
                "labels": LABELS,
                "image_size": [args.size, args.size],
                "batch_size": args.batch_size,
            },
            "model": {"backbone": args.backbone},
        }
    )
    torch.manual_seed(0)
    model_dir = scratch / "model"
    export_model(build_method(recipe, LABELS, pretrained=False), export_config(recipe, LABELS), model_dir)
    _, difference = export_onnx(model_dir, model_dir)

    loaded = {runtime: LoadedModel.load(model_dir, runtime=runtime) for runtime in ("torch", "onnxruntime")}
    net = loaded["torch"].method.eval()
    channels_last = build_method(recipe, LABELS, pretrained=False).eval()
    channels_last.load_state_dict(net.state_dict())
    channels_last = channels_last.to(memory_format=torch.channels_last)
    compiled = torch.compile(net)
    session = onnxruntime.InferenceSession(str(model_dir / ONNX_FILE), providers=["CPUExecutionProvider"])

    def eager(x: torch.Tensor) -> np.ndarray:
        return torch.sigmoid(net(x)).numpy()

    def in_channels_last(x: torch.Tensor) -> np.ndarray:
        return torch.sigmoid(channels_last(x.contiguous(memory_format=torch.channels_last))).numpy()

    def through_compile(x: torch.Tensor) -> np.ndarray:
        return torch.sigmoid(compiled(x)).numpy()

    def under_bf16(x: torch.Tensor) -> np.ndarray:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return torch.sigmoid(net(x)).float().numpy()

    def in_onnxruntime(x: torch.Tensor) -> np.ndarray:
        return session.run(None, {"images": x.numpy()})[0]

    bare: dict[str, Callable[[torch.Tensor], np.ndarray]] = {
        "eager": eager,
        "channels_last": in_channels_last,
        "torch.compile": through_compile,
        "bf16 autocast": under_bf16,
        "ONNX Runtime": in_onnxruntime,
    }
    prepared = [bare_prepare(chunk, args.size) for chunk in chunks]
    end_to_end, model_only, failed = {}, {}, {}
    with torch.inference_mode():
        for name, step in bare.items():

            def files_loop(step: Callable = step) -> int:
                return sum(len(step(bare_prepare(chunk, args.size))) for chunk in chunks)

            def tensors_loop(step: Callable = step) -> int:
                return sum(len(step(x)) for x in prepared)

            try:
                end_to_end[f"bare {name}"] = best_rate(files_loop, args.repeats)
                model_only[f"bare {name}"] = best_rate(tensors_loop, args.repeats)
            except Exception as error:  # e.g. torch.compile without a working compiler: say so, go on
                failed[name] = str(error).splitlines()[0][:200]

    for runtime, model in loaded.items():

        def radsight_loop(model: LoadedModel = model) -> int:
            count = 0
            for chunk in chunks:
                predictions = infer_batch(model, [model.prepare(p) for p in chunk], with_map=False)
                count += len([p.probabilities for p in predictions])
            return count

        end_to_end[f"radsight predict ({runtime})"] = best_rate(radsight_loop, args.repeats)

    with tempfile.TemporaryDirectory() as cwd:
        tree = Path(__file__).resolve().parents[1]
        runs = [timed(["-m", "radsight.cli", "--help"], tree, Path(cwd)) for _ in range(3)]
    help_cpu = statistics.median(r[0] for r in runs)
    help_wall = statistics.median(r[1] for r in runs)

    radsight_best = max((v, k) for k, v in end_to_end.items() if k.startswith("radsight"))
    bare_best = max((v, k) for k, v in end_to_end.items() if k.startswith("bare"))
    ratio = radsight_best[0] / bare_best[0]
    result = {
        "machine": {
            "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "onnx_vs_torch_largest_difference": difference,
        "end_to_end_images_per_s": {k: round(v, 2) for k, v in end_to_end.items()},
        "model_only_images_per_s": {k: round(v, 2) for k, v in model_only.items()},
        "failed": failed,
        "radsight_best": radsight_best[1],
        "bare_best": bare_best[1],
        "ratio_radsight_best_over_bare_best": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "ratio_met": ratio >= TARGET_RATIO,
        "radsight_help_cpu_s": round(help_cpu, 3),
        "radsight_help_wall_s": round(help_wall, 3),
        "help_claim_s": HELP_CLAIM_S,
        "help_claim_met": help_wall < HELP_CLAIM_S,
    }
    table = [
        f"# Inference ({args.backbone} at {args.size} px, batch {args.batch_size}, {args.images} PNG films "
        f"of {args.file_size} px, best of {args.repeats}, {torch.get_num_threads()} torch threads)",
        "",
        "| option | end to end (images/s) | model alone (images/s) | end to end / fastest bare |",
        "|---|---|---|---|",
        *(
            f"| {name} | {rate:.2f} | {_cell(model_only.get(name))} | {rate / bare_best[0]:.2f} |"
            for name, rate in end_to_end.items()
        ),
        *(f"| bare {name} | failed: {reason} | | |" for name, reason in failed.items()),
        "",
        f"radsight's best ({radsight_best[1]}) / fastest bare ({bare_best[1]}): **{ratio:.2f}** "
        f"(target >= {TARGET_RATIO}); ONNX Runtime vs PyTorch largest difference {difference:.1e}; "
        f"`radsight --help`: {help_wall:.2f} s wall, {help_cpu:.2f} s CPU (claim < {HELP_CLAIM_S:.0f} s).",
    ]
    write_results(args.out, "inference", result, "\n".join(table))


if __name__ == "__main__":
    main()
