"""captioning: one report-captioning training step through radsight against a bare PyTorch loop of the
same model and batch, and the time to write one report, greedy and beam, with and without the decoder's
key-value cache.

radsight's step is the ``caption`` stage of :class:`radsight.methods.captioning.Captioning`
(``compute_loss`` from the batch's report text: cleaning, tokenising, teacher-forced loss; backward;
AdamW step). The bare loop builds timm's model and the same decoder from the same seed, takes the same
reports already tokenised, and writes the loss inline. Rounds alternate so a busy machine slows both
alike; ``ratio_vs_bare`` is radsight's target tokens/s over the bare loop's (median over rounds; 1 = no
overhead). Latency is per report (one image at a time), the decoder writing ``max_tokens`` tokens (an
untrained decoder rarely ends early, so every strategy writes the same length).

    python bench/captioning.py --out bench/results [--size 224 --batch-size 32 --rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from outputs import write_results
from pretext import synthetic_batch

from radsight.config import StageConfig
from radsight.data.sample import Batch
from radsight.data.sources.phantoms import PhantomChestXray
from radsight.methods.captioning import Captioning
from radsight.nn.caption_decoder import CaptionDecoder
from radsight.text.decoding import beam_search, greedy
from radsight.text.tokenizer import ReportTokenizer

Step = Callable[[], None]


def report_batch(n: int, size: int, device: torch.device) -> Batch:
    """Random images with the reports of ``n`` chest phantoms (varied lengths and findings)."""
    reports = [sample.report for sample in (PhantomChestXray(n, size=(64, 64), seed=2)[i] for i in range(n))]
    return replace(synthetic_batch(n, size, device), reports=reports)


def model_options(backbone: str, width: int, heads: int, layers: int, max_tokens: int) -> dict:
    return {
        "backbone": backbone,
        "report": {"vocab_size": 1000, "max_tokens": max_tokens},
        "decoder": {"width": width, "heads": heads, "layers": layers},
    }


def radsight_step(options: dict, tokenizer: ReportTokenizer, batch: Batch, device: torch.device) -> Step:
    torch.manual_seed(0)
    method = Captioning(["x"], "multilabel", options, [StageConfig(name="caption")])
    method.set_tokenizer(tokenizer)
    method.to(device).set_stage("caption")
    method.train()
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-3)

    def step() -> None:
        loss, _ = method.compute_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def bare_step(options: dict, tokens: torch.Tensor, images: torch.Tensor, device: torch.device) -> Step:
    torch.manual_seed(0)
    model = timm.create_model(options["backbone"], pretrained=False, in_chans=1, num_classes=0)
    decoder = CaptionDecoder(
        model.num_features,
        options["report"]["vocab_size"],
        **{k: options["decoder"][k] for k in ("width", "heads", "layers")},
        max_tokens=options["report"]["max_tokens"],
    )
    model, decoder = model.to(device).train(), decoder.to(device).train()
    optimizer = torch.optim.AdamW([*model.parameters(), *decoder.parameters()], lr=1e-3)

    def step() -> None:
        memory = decoder.memory(model.forward_features(images))
        logits = decoder(memory, tokens[:, :-1])
        loss = F.cross_entropy(
            logits.flatten(0, 1), tokens[:, 1:].flatten(), ignore_index=0, label_smoothing=0.1
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def seconds(work: Callable[[], object], repeats: int, device: torch.device) -> float:
    synchronise(device)
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    synchronise(device)
    return (time.perf_counter() - start) / repeats


@torch.no_grad()
def latencies(method: Captioning, size: int, repeats: int, device: torch.device) -> dict[str, float]:
    """Milliseconds to write one report, per strategy, cached and not."""
    method.eval()
    image = torch.rand(1, 1, size, size, device=device)
    ids = (ReportTokenizer.bos_id, ReportTokenizer.eos_id, ReportTokenizer.pad_id)
    decoder = method.decoder

    def run(strategy: str, cached: bool) -> Callable[[], object]:
        def write() -> object:
            memory = decoder.memory(method.backbone.forward_features(image))
            if strategy == "greedy":
                return greedy(decoder, memory, *ids, cached=cached)
            return beam_search(decoder, memory, *ids, width=3, cached=cached)

        return write

    out = {}
    for strategy in ("greedy", "beam3"):
        for cached in (True, False):
            work = run(strategy, cached)
            work()  # warm-up
            out[f"{strategy}_{'cached' if cached else 'uncached'}"] = round(
                1000 * seconds(work, repeats, device), 2
            )
    return out


def measure(args: argparse.Namespace, device: torch.device) -> dict:
    options = model_options(args.backbone, args.width, args.heads, args.layers, args.max_tokens)
    batch = report_batch(args.batch_size, args.size, device)
    tokenizer = ReportTokenizer.train([r for r in batch.reports if r], 1000)
    probe = Captioning(["x"], "multilabel", options, [StageConfig(name="caption")])
    probe.set_tokenizer(tokenizer)
    tokens = probe.token_batch([probe.clean(r) for r in batch.reports]).to(device)
    target_tokens = int((tokens[:, 1:] != 0).sum())
    runners = {
        "radsight": radsight_step(options, tokenizer, batch, device),
        "bare": bare_step(options, tokens, batch.images, device),
    }
    for step in runners.values():
        step()  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, step in runners.items():
            rates[name].append(target_tokens / seconds(step, args.steps, device))
    probe.to(device)
    return {
        "backbone": args.backbone,
        "input": f"{args.size}x{args.size}",
        "batch_size": args.batch_size,
        "decoder": options["decoder"],
        "target_tokens_per_batch": target_tokens,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "tokens_per_s": {name: round(statistics.median(v), 1) for name, v in rates.items()},
        "ratio_vs_bare": round(
            statistics.median(r / b for r, b in zip(rates["radsight"], rates["bare"], strict=True)), 3
        ),
        "tokens_written_per_report": args.max_tokens - 1,
        "ms_per_report": latencies(probe, args.size, args.latency_repeats, device),
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def markdown(result: dict) -> str:
    rates, latency = result["tokens_per_s"], result["ms_per_report"]
    d = result["decoder"]
    lines = [
        f"# Captioning training step: {result['backbone']}, {result['input']}, batch {result['batch_size']}, "
        f"decoder {d['layers']} x {d['width']} ({d['heads']} heads)",
        "",
        f"Device: {result['device']}, {result['threads']} threads; median of {result['rounds']} alternating "
        f"rounds of {result['steps_per_round']} steps; {result['target_tokens_per_batch']} target tokens "
        "per batch.",
        "",
        "| loop | tokens/s |",
        "|---|---:|",
        *(f"| {name} | {value:.1f} |" for name, value in rates.items()),
        "",
        f"ratio_vs_bare: {result['ratio_vs_bare']:.3f}",
        "",
        f"Writing one report of {result['tokens_written_per_report']} tokens (ms):",
        "",
        "| strategy | key-value cache | no cache |",
        "|---|---:|---:|",
        *(
            f"| {name} | {latency[f'{name}_cached']:.1f} | {latency[f'{name}_uncached']:.1f} |"
            for name in ("greedy", "beam3")
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for captioning.json and .md")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, help="default: 64 on CUDA, 8 on CPU")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency-repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    args.batch_size = args.batch_size or (64 if device.type == "cuda" else 8)
    result = measure(args, device)
    write_results(args.out, "captioning", result, markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
