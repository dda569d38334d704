"""The extractor's agreement with IU Problems codes: a hand-made CSV with hand-computed rates, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli

from radsight.text.agreement import IU_PROBLEMS, iu_agreement

REPORTS = [
    # uid, Problems, findings, impression -> what the extractor states
    (1, "Cardiomegaly;Pleural Effusion", "Mild cardiomegaly.", "No pleural effusion."),  # Cardiomegaly
    (2, "normal", "No pneumothorax.", "Small left pleural effusion."),  # Pleural Effusion
    (3, "Pleural Effusion;Opacity", "Right pleural effusion. Possible basilar opacity.", None),  # Effusion
    (4, "No Indexing", "Cardiomegaly.", None),  # left out: not indexed
    (5, "Cardiac Shadow", "The cardiac silhouette is enlarged.", "XXXX XXXX."),  # Cardiomegaly
]


@pytest.fixture
def iu_root(tmp_path: Path) -> Path:
    root = tmp_path / "iu"
    root.mkdir()
    columns = ["uid", "Problems", "findings", "impression"]
    pd.DataFrame(REPORTS, columns=columns).to_csv(root / "indiana_reports.csv", index=False)
    return root


def test_hand_computed_agreement(iu_root: Path) -> None:
    result = iu_agreement(iu_root)
    assert (result["reports"], result["not_indexed"]) == (4, 1)
    rows = result["findings"]
    assert list(rows) == list(IU_PROBLEMS)
    cardiomegaly = rows["Cardiomegaly"]  # coded in 1 and 5 (Cardiac Shadow), stated in both
    assert (cardiomegaly["support"], cardiomegaly["predicted"], cardiomegaly["true"]) == (2, 2, 2)
    assert (cardiomegaly["precision"], cardiomegaly["recall"]) == (1.0, 1.0)
    effusion = rows["Pleural Effusion"]  # coded in 1 and 3, stated in 2 and 3
    assert (effusion["support"], effusion["predicted"], effusion["true"]) == (2, 2, 1)
    assert (effusion["precision"], effusion["recall"], effusion["f1"]) == (0.5, 0.5, 0.5)
    opacity = rows["Lung Opacity"]  # coded in 3, where the report hedges it
    assert (opacity["precision"], opacity["recall"], opacity["f1"]) == (None, 0.0, 0.0)
    hedged = opacity["uncertain_as_present"]
    assert (hedged["predicted"], hedged["precision"], hedged["recall"]) == (1, 1.0, 1.0)
    pneumothorax = rows["Pneumothorax"]  # negated in 2, coded nowhere
    assert (pneumothorax["support"], pneumothorax["predicted"]) == (0, 0)
    assert (pneumothorax["precision"], pneumothorax["recall"], pneumothorax["f1"]) == (None, None, None)
    # means over the findings where a rate is defined: precision of 2, recall and F1 of 3 findings
    mean = result["mean"]
    assert (mean["precision"], mean["recall"], mean["f1"]) == (0.75, 0.5, 0.5)
    assert mean["uncertain_as_present"] == pytest.approx(
        {"precision": 2.5 / 3, "recall": 2.5 / 3, "f1": 2.5 / 3}
    )


def test_cli_writes_json_and_markdown(iu_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "agreement"
    shown = run_cli("text", "agreement", "--root", iu_root, "--out", out).output
    assert json.loads((out / "agreement.json").read_text()) == iu_agreement(iu_root)
    table = (out / "agreement.md").read_text()
    assert "| Pleural Effusion | 2 | 2 | 0.500 | 0.500 | 0.500 | 0.500 | 0.500 |" in table
    assert "| Lung Opacity | 1 | 0 | undefined | 0.000 | 0.000 | 1.000 | 1.000 |" in table
    assert "| mean |  |  | 0.750 | 0.500 | 0.500 | 0.833 | 0.833 |" in table
    assert "4 indexed reports (1 marked 'No Indexing' left out)" in table
    assert "Pleural Effusion" in shown


def test_cli_missing_reports_file(tmp_path: Path) -> None:
    result = run_cli("text", "agreement", "--root", tmp_path, "--out", tmp_path / "out", expect=2)
    assert result.output == f"error: {tmp_path / 'indiana_reports.csv'}: file not found\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_all_iu_reports(data_root: Path) -> None:
    result = iu_agreement(data_root / "iu-xray-reports")
    assert (result["reports"], result["not_indexed"]) == (3759, 92)
    rows = result["findings"]
    assert rows["Cardiomegaly"]["support"] == 368 and rows["Pleural Effusion"]["support"] == 149
    for name in ("Cardiomegaly", "Pleural Effusion", "Atelectasis", "Lung Opacity", "Granuloma"):
        assert rows[name]["precision"] > 0.9 and rows[name]["recall"] > 0.9, (name, rows[name])
