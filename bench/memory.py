"""Process memory as the benchmarks report it: the current and the peak resident set size, in MB."""

from __future__ import annotations

import os
import resource
from pathlib import Path


def rss_mb() -> float:
    """Resident set size of this process now (psutil when installed, else /proc/self/statm)."""
    try:
        import psutil
    except ImportError:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """Largest resident set size this process has had (getrusage reports kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
