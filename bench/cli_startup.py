"""CPU time of the radsight command before it does any work: help, and the answer to a wrong path.

Each case runs ``python -m radsight.cli ...`` in a fresh process --repeats times; the CPU time is the
child's user + system time (``resource.getrusage(RUSAGE_CHILDREN)``), which a loaded machine inflates
far less than wall time. ``--before DIR`` measures another checkout the same way (e.g. the main branch),
for a before/after table. Claim: ``predict`` on a missing file answers in under 3 s of CPU.

    python bench/cli_startup.py --out bench/results --before ../main
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from outputs import write_results

CLAIM_S = 3.0
"""CPU seconds within which ``predict`` on a missing file must answer."""
REFERENCE = "import lightning (for scale)"


def cases(scratch: Path) -> dict[str, list[str]]:
    """Name -> the command's arguments; ``scratch`` holds a model folder that passes the folder check."""
    model = scratch / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({"format": 1}))
    (model / "model.safetensors").touch()
    predict = ["-m", "radsight.cli", "predict", str(scratch / "missing.png"), "--out", str(scratch)]
    return {
        "radsight --help": ["-m", "radsight.cli", "--help"],
        "radsight predict, model folder missing": [*predict, "--model", str(scratch / "absent")],
        "radsight predict, image file missing": [*predict, "--model", str(model)],
        REFERENCE: ["-c", "import lightning"],
    }


def timed(arguments: list[str], tree: Path, scratch: Path) -> tuple[float, float, int]:
    """CPU seconds (user + system), wall seconds and exit code of one run that imports radsight from
    ``tree`` (run in ``scratch``: ``python -m`` puts the working folder first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "100"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    command = [sys.executable, *arguments]
    done = subprocess.run(command, env=env, cwd=scratch, capture_output=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, done.returncode


def measure(tree: Path, repeats: int, scratch: Path) -> dict[str, dict[str, float | int]]:
    results = {}
    for name, arguments in cases(scratch).items():
        runs = [timed(arguments, tree, scratch) for _ in range(repeats)]
        results[name] = {
            "cpu_s_median": round(statistics.median(r[0] for r in runs), 3),
            "wall_s_median": round(statistics.median(r[1] for r in runs), 3),
            "exit_code": runs[-1][2],
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another checkout to measure the same way")
    args = parser.parse_args()
    trees = {"this tree": Path(__file__).resolve().parents[1]}
    if args.before is not None:
        trees = {"before": args.before.resolve(), **trees}
    with tempfile.TemporaryDirectory() as scratch:
        results = {label: measure(tree, args.repeats, Path(scratch)) for label, tree in trees.items()}
    missing_file = results["this tree"]["radsight predict, image file missing"]["cpu_s_median"]
    result = {
        "python": sys.version.split()[0],
        "repeats": args.repeats,
        "trees": {label: str(tree) for label, tree in trees.items()},
        "claim_cpu_s": CLAIM_S,
        "claim_met": missing_file < CLAIM_S,
        "results": results,
    }
    header = " | ".join(f"{label} CPU (s) | {label} wall (s)" for label in trees)
    rows = []
    for name in results["this tree"]:
        cells = " | ".join(
            f"{results[label][name]['cpu_s_median']:.2f} | {results[label][name]['wall_s_median']:.2f}"
            for label in trees
        )
        rows.append(f"| {name} | {cells} |")
    table = [
        f"# CLI start-up (median of {args.repeats} runs; claim: predict on a missing file "
        f"< {CLAIM_S:.0f} s CPU)",
        "",
        f"| command | {header} |",
        "|---|" + "---|---|" * len(trees),
        *rows,
    ]
    write_results(args.out, "cli_startup", result, "\n".join(table))


if __name__ == "__main__":
    main()
