"""``read_image`` and ``read_mask`` under fuzzing, at length: the seeded mutation fuzzer the suite runs
briefly (tests/reader_fuzz.py), and, where atheris is installed, atheris's coverage-guided fuzzer
(libFuzzer) on the same seeds.

Reported: inputs, calls, crashes (an exception other than DataError, or a result with an empty side or
values outside [0, 1]), hangs (a call over --hang-s seconds), the slowest call and the peak resident
memory. Inputs behind a finding are written to ``<out>/fuzz_findings/`` to replay them.

    nice python bench/fuzz_readers.py --inputs 20000 --out bench/results
    nice python bench/fuzz_readers.py --inputs 20000 --atheris-runs 20000 --out bench/results
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from memory import peak_rss_mb
from outputs import write_results

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))  # the fuzzer lives beside the test that runs it briefly

SUFFIXES = (".png", ".jpg", ".dcm")
"""atheris inputs choose their file suffix by their first byte (the reader's choice of decoder)."""


def mutation_run(inputs: int, seed: int, hang_s: float, out: Path) -> dict[str, Any]:
    from reader_fuzz import run

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = run(inputs, Path(folder), seed=seed, hang_s=hang_s)
    wall = time.perf_counter() - started
    findings = out / "fuzz_findings"
    for number, finding in enumerate(report.findings):
        findings.mkdir(parents=True, exist_ok=True)
        (findings / f"{number}-{finding.kind.replace(' ', '_')}-{finding.seed}").write_bytes(finding.data)
    return {
        "engine": "seeded mutation (tests/reader_fuzz.py)",
        "seed": seed,
        "inputs": report.inputs,
        "calls": report.calls,
        "crashes": len(report.of("crash")) + len(report.of("bad result")),
        "hangs": len(report.of("hang")),
        "hang_bound_s": hang_s,
        "slowest_call_s": round(report.slowest_s, 3),
        "outcomes": dict(sorted(report.outcomes.items())),
        "findings": [
            {"reader": f.reader, "seed": f.seed, "kind": f.kind, "detail": f.detail}
            for f in report.findings[:50]
        ],
        "wall_s": round(wall, 1),
        "inputs_per_s": round(report.inputs / wall, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def atheris_child(corpus: Path, runs: int, hang_s: float, artifacts: Path) -> None:
    """Run inside a fresh process: libFuzzer ends the process when it is done."""
    import atheris
    import numpy  # noqa: F401 - imported before instrumentation, which would slow them down for nothing
    import torch  # noqa: F401

    with atheris.instrument_imports():  # coverage of the readers and the decoders' Python layers
        import PIL.Image
        import PIL.PngImagePlugin  # noqa: F401
        import pydicom
        import pydicom.pixels  # noqa: F401

        from radsight.data import image_io
    from reader_fuzz import READERS

    from radsight.errors import DataError

    path = Path(tempfile.mkdtemp())

    def one_input(data: bytes) -> None:
        target = path / f"input{SUFFIXES[data[0] % len(SUFFIXES)] if data else '.png'}"
        target.write_bytes(data[1:])
        for name, (_, check) in READERS.items():
            reader = getattr(image_io, name)
            try:
                problem = check(reader(target))
            except DataError:
                continue
            if problem is not None:
                raise AssertionError(f"{name}: {problem}")

    warnings.simplefilter("ignore")
    flags = [f"-runs={runs}", f"-timeout={int(hang_s)}", "-rss_limit_mb=8192", "-print_final_stats=1"]
    atheris.Setup([sys.argv[0], *flags, f"-artifact_prefix={artifacts}/", str(corpus)], one_input)
    atheris.Fuzz()


def atheris_run(runs: int, hang_s: float, out: Path) -> dict[str, Any] | None:
    """atheris on the same seeds in a child process; None when atheris is not installed."""
    try:
        import atheris  # noqa: F401
    except ImportError:
        return None
    from reader_fuzz import seeds

    artifacts = out / "fuzz_findings" / "atheris"
    artifacts.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as corpus:
        for seed in seeds():
            prefix = bytes([SUFFIXES.index(seed.suffix)])
            (Path(corpus) / seed.name).write_bytes(prefix + seed.data)
        command = [sys.executable, __file__, "--atheris-child", corpus, "--atheris-runs", str(runs)]
        command += ["--hang-s", str(hang_s), "--out", str(artifacts)]
        started = time.perf_counter()
        child = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}
        )
        wall = time.perf_counter() - started
    stats = dict(re.findall(r"stat::(\w+):\s+(\d+)", child.stderr))
    found = sorted(p.name for p in artifacts.iterdir())
    return {
        "engine": "atheris (coverage-guided, libFuzzer)",
        "inputs": int(stats.get("number_of_executed_units", 0)),
        "crashes": len([name for name in found if name.startswith(("crash-", "oom-"))]),
        "hangs": len([name for name in found if name.startswith(("timeout-", "slow-unit-"))]),
        "hang_bound_s": hang_s,
        "exit_code": child.returncode,
        "peak_rss_mb": int(stats.get("peak_rss_mb", 0)),
        "wall_s": round(wall, 1),
        "artifacts": found,
        "last_output": child.stderr.strip().splitlines()[-12:],
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| engine | inputs | crashes | hangs (bound) | slowest call s | peak memory MB | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['engine']} | {r['inputs']} | {r['crashes']} | {r['hangs']} ({r['hang_bound_s']:g} s) "
            f"| {r.get('slowest_call_s', '-')} | {r['peak_rss_mb']} | {r['wall_s']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--inputs", type=int, default=20000, help="mutated inputs (each read as image and mask)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hang-s", type=float, default=10.0, help="a call longer than this is a hang")
    parser.add_argument("--atheris-runs", type=int, default=0, help="atheris inputs (0: no atheris run)")
    parser.add_argument("--atheris-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    if args.atheris_child is not None:
        atheris_child(args.atheris_child, args.atheris_runs, args.hang_s, args.out)
        return
    results = [mutation_run(args.inputs, args.seed, args.hang_s, args.out)]
    if args.atheris_runs:
        coverage_guided = atheris_run(args.atheris_runs, args.hang_s, args.out)
        if coverage_guided is None:
            print("atheris is not installed: only the mutation fuzzer ran")
        else:
            results.append(coverage_guided)
    write_results(args.out, "fuzz_readers", results, table(results))


if __name__ == "__main__":
    main()
