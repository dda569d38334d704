"""How many threads torch computes with: the CPUs this process may actually use, less its data-loader
workers (separate processes that need CPUs of their own).

Torch counts the machine's cores, not the CPUs a container, a batch scheduler or ``taskset`` grants, so
on a shared or limited machine its threads queue for the same few CPUs and an epoch can take ten
times longer than at one thread. The CPUs granted are the affinity mask (``os.sched_getaffinity``)
capped by the CPU quota of the process's cgroup and its parents (cgroup v2 ``cpu.max``, v1
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``). ``OMP_NUM_THREADS``, when set, is the user's choice.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def _quota_v2(directory: Path) -> float | None:
    """CPUs granted by a cgroup v2 folder's ``cpu.max`` ("max 100000" is unlimited)."""
    fields = (directory / "cpu.max").read_text().split()
    return None if fields[0] == "max" else int(fields[0]) / int(fields[1])


def _quota_v1(directory: Path) -> float | None:
    """CPUs granted by a cgroup v1 cpu folder (a quota of -1 is unlimited)."""
    quota = int((directory / "cpu.cfs_quota_us").read_text())
    period = int((directory / "cpu.cfs_period_us").read_text())
    return None if quota <= 0 or period <= 0 else quota / period


def cgroup_cpu_quota(proc_cgroup: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> float | None:
    """The smallest CPU quota (in CPUs) of this process's cgroup and its ancestors; None when unlimited
    or not readable. A cgroup path missing under ``root`` (a container sees its own cgroup as the
    mount's root) is read from the mount's root."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            mounts, read = [root, root / "unified"], _quota_v2
            mounts = [m for m in mounts if (m / "cgroup.controllers").is_file()][:1]
        elif "cpu" in controllers.split(","):
            mounts, read = [root / controllers, root / "cpu", root / "cpu,cpuacct"], _quota_v1
            mounts = [m for m in mounts if m.is_dir()][:1]
        else:
            continue
        for mount in mounts:
            directory = mount / path.lstrip("/")
            if not directory.is_dir():
                directory = mount
            for level in [directory, *directory.parents]:
                try:
                    quota = read(level)
                except (OSError, ValueError, IndexError):
                    quota = None
                if quota is not None:
                    quotas.append(quota)
                if level == mount:
                    break
    return min(quotas) if quotas else None


@dataclass(frozen=True)
class CpuBudget:
    """The CPUs this process may run on: its affinity mask and its cgroup quota (None: unlimited)."""

    affinity: int
    quota: float | None

    @property
    def cpus(self) -> int:
        """Whole CPUs usable at once: the affinity count, capped by the quota rounded down (at least 1)."""
        if self.quota is None:
            return max(1, self.affinity)
        return max(1, min(self.affinity, math.floor(self.quota)))

    @classmethod
    def of_this_process(cls) -> CpuBudget:
        affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return cls(affinity, cgroup_cpu_quota(PROC_CGROUP, CGROUP_ROOT))


def choose_threads(
    requested: int | None, workers: int, processes: int = 1, budget: CpuBudget | None = None
) -> tuple[int, str]:
    """The intra-op threads for each of ``processes`` training processes on this machine, and why:
    ``requested`` when given, else ``OMP_NUM_THREADS`` when set, else each process's share of the CPUs
    less its ``workers`` data-loader processes, at least 1."""
    if requested is not None:
        return requested, "trainer.threads"
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"]), "OMP_NUM_THREADS"
    budget = budget or CpuBudget.of_this_process()
    quota = "no CPU quota" if budget.quota is None else f"a CPU quota of {budget.quota:g}"
    share = budget.cpus // max(1, processes)
    threads = max(1, share - workers)
    reason = f"{budget.cpus} CPUs usable (affinity {budget.affinity}, {quota})"
    if processes > 1:
        reason += f" shared by {processes} processes"
    return threads, f"{reason}, less {workers} data-loader worker(s)"


def set_torch_threads(requested: int | None, workers: int, processes: int = 1) -> int:
    """Set torch's intra-op threads as :func:`choose_threads` says, and log the choice in one line."""
    threads, reason = choose_threads(requested, workers, processes)
    torch.set_num_threads(threads)
    log.info("torch threads: %d (%s)", threads, reason)
    return threads
