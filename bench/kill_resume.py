"""Kill a training at random points and resume it until it finishes; the result must equal a run that
was never interrupted, bit for bit.

Each cycle starts ``radsight train`` (``--resume`` after the first), then SIGKILLs it at one of four
kinds of moment, drawn at random: a random delay after the start (often before training, while data
and model are built); a random delay after its first finished epoch (mid-epoch); the instant a
checkpoint's temporary file appears (a kill during the checkpoint write); the instant an epoch's log
line appears (between the log line and the checkpoint). After every kill it checks that no finished
epoch was lost (the readable checkpoint's epoch never goes back) and counts the temporary files the kill
left; when the run finishes, none may be left, the log must list every epoch once, and the weights
and losses must equal the uninterrupted run's, bit for bit.

    python bench/kill_resume.py --kills 12 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "baseline_cpu.yaml"
OVERRIDES = [
    "model.backbone=tiny_cnn",
    "data.sources.0.options={n: 160, size: [64, 64], seed: 1, lesion_scale: 1.5}",
    "data.image_size=[64, 64]",
    "data.batch_size=16",
    "stages=[{name: linear, epochs: 3, lr: 0.003}, {name: classify, epochs: 15, lr: 0.003}]",
    "trainer.progress_bar=false",
    "trainer.threads=1",
]
STAGES = {"linear": 3, "classify": 15}


def command(out: Path, resume: bool) -> list[str]:
    args = [sys.executable, "-m", "radsight.cli", "train", str(RECIPE), "--out", str(out), "--no-evaluate"]
    args += [item for override in OVERRIDES for item in ("--set", override)]
    return [*args, "--resume"] if resume else args


def environment() -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": f"{root}:{path}" if path else root}


def checkpoint_epochs(out: Path) -> dict[str, int]:
    """The epoch of each stage's readable ``last.ckpt`` (a finished stage counts all its epochs)."""
    found = {}
    for stage, epochs in STAGES.items():
        folder = out / "stages" / stage
        if (folder / "done.json").is_file():
            found[stage] = epochs - 1
        elif (folder / "last.ckpt").is_file():
            try:
                found[stage] = int(torch.load(folder / "last.ckpt", weights_only=True)["epoch"])
            except Exception:  # replaced while read; the kill check reads it again after the kill
                continue
    return found


def temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob(".*.tmp")] if out.is_dir() else []


def logged(out: Path) -> list[tuple[str, int]]:
    path = out / "train_log.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [(entry["stage"], entry["epoch"]) for entry in map(json.loads, lines)]


@dataclass
class Cycles:
    kills: dict[str, int] = field(
        default_factory=lambda: {"startup": 0, "mid-epoch": 0, "checkpoint write": 0, "log line": 0}
    )
    temporaries_left_at_kill: int = 0
    starts: int = 0


def wait_and_kill(process: subprocess.Popen, out: Path, how: str, rng: random.Random) -> bool:
    """Kill ``process`` at the chosen kind of moment; False when it finished first."""
    deadline = time.time() + (rng.uniform(0.5, 6.0) if how == "startup" else 300.0)
    lines = len(logged(out))
    while process.poll() is None and time.time() < deadline:
        if how == "checkpoint write" and any(p.name.startswith(".last.ckpt.") for p in temporaries(out)):
            break
        if how == "log line" and len(logged(out)) > lines:
            break
        if how == "mid-epoch" and len(logged(out)) > lines:
            deadline = min(deadline, time.time() + rng.uniform(0.0, 1.5))
        time.sleep(0.002)
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    process.wait()
    return True


def interrupted_run(out: Path, kills: int, rng: random.Random, cycles: Cycles) -> None:
    env = environment()
    saved: dict[str, int] = {}
    while True:
        resume = (out / "recipe.yaml").is_file()
        process = subprocess.Popen(
            command(out, resume), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        cycles.starts += 1
        total = sum(cycles.kills.values())
        if total >= kills:
            _, error = process.communicate()
            if process.returncode != 0:
                raise SystemExit(f"the last resume failed:\n{error.decode()[-3000:]}")
            return
        how = rng.choice(list(cycles.kills))
        if not wait_and_kill(process, out, how, rng):
            if process.returncode != 0:
                raise SystemExit(f"a start failed:\n{process.stderr.read().decode()[-3000:]}")
            raise SystemExit(f"the run finished after {total} kills; give it more epochs for {kills}")
        cycles.kills[how] += 1
        cycles.temporaries_left_at_kill += len(temporaries(out))
        now = checkpoint_epochs(out)
        for stage, epoch in saved.items():
            assert now.get(stage, -1) >= epoch, f"{stage}: checkpoint went back from epoch {epoch} to {now}"
        saved = now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="kill-resume-"))
    reference, interrupted = folder / "uninterrupted", folder / "interrupted"
    started = time.perf_counter()
    subprocess.run(command(reference, False), env=environment(), check=True, capture_output=True)
    seconds = time.perf_counter() - started
    cycles = Cycles()
    interrupted_run(interrupted, args.kills, random.Random(args.seed), cycles)
    assert not temporaries(interrupted), temporaries(interrupted)
    expected = [(stage, epoch) for stage, epochs in STAGES.items() for epoch in range(epochs)]
    assert logged(reference) == expected and logged(interrupted) == expected, logged(interrupted)
    first, second = load_file(reference / "model.safetensors"), load_file(interrupted / "model.safetensors")
    differing = [name for name in first if not torch.equal(first[name], second[name])]
    losses = [
        [json.loads(line)["train/loss"] for line in (run / "train_log.jsonl").read_text().splitlines()]
        for run in (reference, interrupted)
    ]
    report = {
        "kills": cycles.kills,
        "kills_total": sum(cycles.kills.values()),
        "starts": cycles.starts,
        "temporary_files_left_by_kills": cycles.temporaries_left_at_kill,
        "temporary_files_after_finishing": 0,
        "epochs_logged_once_each": True,
        "weights_bit_equal": not differing,
        "tensors_differing": differing,
        "train_losses_equal": losses[0] == losses[1],
        "uninterrupted_run_s": round(seconds, 1),
    }
    print(json.dumps(report, indent=2))
    if differing or losses[0] != losses[1]:
        raise SystemExit("the interrupted run differs from the uninterrupted one")


if __name__ == "__main__":
    main()
