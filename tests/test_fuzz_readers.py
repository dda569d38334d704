"""The image and mask readers under a seeded mutation fuzzer (tests/reader_fuzz.py): every mutated file
gives a well-formed result or radsight's DataError, never another exception or an empty image.

A run of FUZZ_INPUTS inputs takes about a minute here; ``bench/fuzz_readers.py`` runs the same fuzzer
for longer and reports hangs and memory. The alarm below only turns a reader stuck in a loop into a
failure instead of a stuck suite; it is not a timing claim.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from reader_fuzz import READERS, run, seeds

from radsight.errors import DataError

FUZZ_INPUTS = 3000
STUCK_S = 120.0


@pytest.fixture(autouse=True)
def _quiet_decoders():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on every odd value a mutation writes
        yield


def test_unmutated_seeds_read_except_colour_and_multi_frame(tmp_path: Path) -> None:
    refused = {}
    for seed in seeds():
        path = tmp_path / f"{Path(seed.name).stem}{seed.suffix}"
        path.write_bytes(seed.data)
        try:
            READERS["read_image"][0](path)
        except DataError as error:
            refused[seed.name] = error.problem
    assert set(refused) == {"SC_rgb.dcm", "SC_jpeg_no_color_transform.dcm", "emri_small.dcm"}, refused
    assert "photometric interpretation RGB" in refused["SC_rgb.dcm"]
    assert "expected one grayscale frame" in refused["emri_small.dcm"]


def test_mutated_files_give_a_result_or_one_data_error(tmp_path: Path) -> None:
    report = run(FUZZ_INPUTS, tmp_path, seed=0, hang_s=STUCK_S)
    shown = "\n".join(f"{f.reader} on a mutated {f.seed}: {f.kind}: {f.detail}" for f in report.findings[:20])
    assert not report.findings, f"{len(report.findings)} of {report.calls} calls:\n{shown}"
    assert report.calls == 2 * FUZZ_INPUTS
    # the mutations reach past the format checks: both readers both read and refuse many inputs
    for reader in READERS:
        assert report.outcomes[f"{reader}: read"] > FUZZ_INPUTS // 20, report.outcomes
        assert report.outcomes[f"{reader}: DataError"] > FUZZ_INPUTS // 4, report.outcomes
