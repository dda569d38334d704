"""Torch threads follow the CPUs a process may use (affinity and cgroup quota), less data-loader workers."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from radsight import threads
from radsight.threads import CpuBudget, cgroup_cpu_quota, choose_threads, set_torch_threads


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_is_the_tightest_of_the_cgroup_and_its_parents(tmp_path):
    root = tmp_path / "cgroup"
    _write(root / "cgroup.controllers", "cpu memory")
    _write(root / "batch" / "cpu.max", "300000 100000")  # the parent: 3 CPUs
    _write(root / "batch" / "job" / "cpu.max", "max 100000")  # the process's own: unlimited
    proc = tmp_path / "proc_cgroup"
    _write(proc, "0::/batch/job\n")
    assert cgroup_cpu_quota(proc, root) == 3.0
    _write(root / "batch" / "job" / "cpu.max", "150000 100000")
    assert cgroup_cpu_quota(proc, root) == 1.5


def test_cgroup_v1_quota_and_a_container_that_sees_its_cgroup_as_the_root(tmp_path):
    root = tmp_path / "cgroup"
    _write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "250000")
    _write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000")
    proc = tmp_path / "proc_cgroup"
    # the host's path of the cgroup does not exist inside the container: its mount's root is the cgroup
    _write(proc, "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n")
    assert cgroup_cpu_quota(proc, root) == 2.5
    _write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "-1")
    assert cgroup_cpu_quota(proc, root) is None


def test_no_cgroup_file_means_no_quota(tmp_path):
    assert cgroup_cpu_quota(tmp_path / "missing", tmp_path) is None


@pytest.mark.parametrize(("affinity", "quota", "cpus"), [(8, None, 8), (8, 2.5, 2), (2, 6.0, 2), (4, 0.5, 1)])
def test_usable_cpus_are_the_affinity_capped_by_the_quota_rounded_down(affinity, quota, cpus):
    assert CpuBudget(affinity, quota).cpus == cpus


def test_the_budget_of_this_process_reads_affinity_and_cgroup(monkeypatch, tmp_path):
    root = tmp_path / "cgroup"
    _write(root / "cgroup.controllers", "cpu")
    _write(root / "cpu.max", "300000 100000")
    _write(tmp_path / "proc", "0::/\n")
    monkeypatch.setattr(threads, "PROC_CGROUP", tmp_path / "proc")
    monkeypatch.setattr(threads, "CGROUP_ROOT", root)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert CpuBudget.of_this_process() == CpuBudget(16, 3.0)


def test_threads_are_the_cpus_less_workers_and_at_least_one(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    budget = CpuBudget(affinity=16, quota=6.0)
    assert choose_threads(None, workers=2, budget=budget) == (
        4,
        "6 CPUs usable (affinity 16, a CPU quota of 6), less 2 data-loader worker(s)",
    )
    assert choose_threads(None, workers=8, budget=budget)[0] == 1
    assert choose_threads(None, workers=0, processes=2, budget=budget)[0] == 3  # two DDP ranks share them
    assert choose_threads(None, workers=0, budget=CpuBudget(2, None)) == (
        2,
        "2 CPUs usable (affinity 2, no CPU quota), less 0 data-loader worker(s)",
    )


def test_a_recipe_value_or_omp_num_threads_is_taken_as_given(monkeypatch):
    budget = CpuBudget(affinity=16, quota=None)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose_threads(None, workers=0, budget=budget) == (3, "OMP_NUM_THREADS")
    assert choose_threads(5, workers=4, budget=budget) == (5, "trainer.threads")


def test_the_choice_is_set_and_logged_in_one_line(monkeypatch, caplog):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads.CpuBudget, "of_this_process", classmethod(lambda cls: cls(4, None)))
    before = torch.get_num_threads()
    try:
        with caplog.at_level(logging.INFO, logger="radsight.threads"):
            assert set_torch_threads(None, workers=1) == 3
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert caplog.messages == [
        "torch threads: 3 (4 CPUs usable (affinity 4, no CPU quota), less 1 data-loader worker(s))"
    ]
