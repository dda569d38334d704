"""Latency of ``radsight serve`` on loopback: ``POST /predict`` answered sequentially, then concurrently.

The server runs as ``radsight serve`` in its own process, as a user starts it; the client sends one file
--sequential times one after the other, then --concurrent requests at once (one thread each, released
together), and reports per phase the p50 / p95 / max latency, the throughput and every failed request (a
non-200 answer, a lost connection, or probabilities unlike the first answer's).

    python bench/serve.py --model demo --out bench/results
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from outputs import write_results
from PIL import Image

READY_TIMEOUT_S = 180.0


def free_port() -> int:
    """A TCP port free on loopback now (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(model: Path, log: Path) -> Iterator[str]:
    """Run ``radsight serve --model MODEL`` on a free loopback port; yield its URL once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "radsight.cli", "serve", "--model", str(model), "--port", str(port)]
    with log.open("w") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ})
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"radsight serve exited with {server.returncode}: {log.read_text()}")
                try:
                    if httpx.get(f"{url}/model", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"radsight serve did not answer within {READY_TIMEOUT_S:.0f} s")
                time.sleep(0.25)
            yield url
        finally:
            server.terminate()
            server.wait(timeout=30)


def phantom_png(path: Path) -> Path:
    """A synthetic chest film like the demo's, as the file to send."""
    from radsight.data.sources.phantoms import PhantomChestXray

    image = PhantomChestXray(1, size=(256, 256), seed=3)[0].image[0].numpy()
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path)
    return path


def one_request(client: httpx.Client, url: str, file: Path, data: bytes) -> tuple[float, str | None, Any]:
    """Latency in seconds, the failure (None: none) and the probabilities of one ``POST /predict``."""
    start = time.perf_counter()
    try:
        response = client.post(f"{url}/predict", files={"file": (file.name, data)}, timeout=120)
    except httpx.HTTPError as error:
        return time.perf_counter() - start, f"{type(error).__name__}: {error}", None
    latency = time.perf_counter() - start
    if response.status_code != 200:
        return latency, f"HTTP {response.status_code}: {response.text[:200]}", None
    return latency, None, response.json()["probabilities"]


def load(url: str, file: Path, sequential: int, concurrent: int) -> dict[str, Any]:
    """Both phases against a running server; failures include answers that differ from the first."""
    data = file.read_bytes()
    results: dict[str, Any] = {}
    with httpx.Client() as client:
        reference = one_request(client, url, file, data)[2]  # warm-up, and the answer all must give
        runs = [one_request(client, url, file, data) for _ in range(sequential)]
        results["sequential"] = summary(runs, reference, wall=sum(r[0] for r in runs))
    barrier = threading.Barrier(concurrent)

    def released() -> tuple[float, str | None, Any]:
        with httpx.Client() as own:
            barrier.wait()
            return one_request(own, url, file, data)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrent) as pool:
        runs = list(pool.map(lambda _: released(), range(concurrent)))
    results["concurrent"] = summary(runs, reference, wall=time.perf_counter() - start)
    return results


def summary(runs: list[tuple[float, str | None, Any]], reference: Any, wall: float) -> dict[str, Any]:
    latencies = sorted(r[0] * 1000 for r in runs)
    differ = "probabilities differ from the first answer"
    failures = [r[1] or differ for r in runs if r[1] or r[2] != reference]
    return {
        "requests": len(runs),
        "failed": len(failures),
        "failures": failures[:10],
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p95_ms": round(float(np.percentile(latencies, 95)), 1),
        "max_ms": round(latencies[-1], 1),
        "mean_ms": round(statistics.fmean(latencies), 1),
        "requests_per_s": round(len(runs) / wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="model folder to serve")
    parser.add_argument("--file", type=Path, help="file to send (default: a 256 x 256 phantom PNG)")
    parser.add_argument("--sequential", type=int, default=200)
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        file = args.file or phantom_png(Path(scratch) / "phantom.png")
        with serving(args.model, Path(scratch) / "server.log") as url:
            phases = load(url, file, args.sequential, args.concurrent)
        result = {
            "model": str(args.model),
            "file": file.name,
            "file_bytes": file.stat().st_size,
            "cpus": len(os.sched_getaffinity(0)),
            "phases": phases,
        }
    rows = [
        f"| {name} | {p['requests']} | {p['failed']} | {p['p50_ms']:.1f} | {p['p95_ms']:.1f} | "
        f"{p['max_ms']:.1f} | {p['requests_per_s']:.1f} |"
        for name, p in phases.items()
    ]
    table = [
        f"# radsight serve, POST /predict on loopback ({result['file']}, {result['cpus']} CPUs)",
        "",
        "| phase | requests | failed | p50 (ms) | p95 (ms) | max (ms) | requests/s |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    write_results(args.out, "serve", result, "\n".join(table))


if __name__ == "__main__":
    main()
