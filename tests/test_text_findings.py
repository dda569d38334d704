"""The finding extractor: negation, negated lists, uncertainty, "XXXX", phantom reports, label names."""

from __future__ import annotations

import pytest

from radsight.data.sources.phantoms import PhantomChestXray
from radsight.text.findings import FINDINGS, extract_findings, finding_for_label, finding_mentions


def _present(text: str) -> set[str]:
    return {name for name, present in extract_findings(text).items() if present}


def test_every_finding_is_answered() -> None:
    findings = extract_findings("Normal chest.")
    assert list(findings) == list(FINDINGS)
    assert not any(findings.values())
    assert len(FINDINGS) >= 14


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No effusion.", {"Pleural Effusion": "absent"}),
        ("Small left pleural effusion.", {"Pleural Effusion": "present"}),
        ("There is no evidence of pneumothorax.", {"Pneumothorax": "absent"}),
        ("The lungs are clear without focal consolidation.", {"Consolidation": "absent"}),
        ("The heart is not enlarged.", {"Cardiomegaly": "absent"}),
        ("The cardiac silhouette is moderately enlarged.", {"Cardiomegaly": "present"}),
        ("Pleural effusion is not seen.", {"Pleural Effusion": "absent"}),
        ("Previously seen left effusion has resolved.", {"Pleural Effusion": "absent"}),
        ("Negative for pneumonia.", {"Pneumonia": "absent"}),
        # "no change" is not a negation of the finding it speaks of
        ("No interval change in small left effusion.", {"Pleural Effusion": "present"}),
        ("Cardiomegaly is not significantly changed.", {"Cardiomegaly": "present"}),
        # a pericardial effusion is not a pleural one, subcutaneous emphysema not emphysema
        ("Small pericardial effusion.", {}),
        ("Subcutaneous emphysema in the chest wall.", {}),
    ],
)
def test_negation(text: str, expected: dict[str, str]) -> None:
    assert finding_mentions(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("No pneumothorax or effusion.", {"Pneumothorax": "absent", "Pleural Effusion": "absent"}),
        (
            "No displaced rib fractures, pneumothorax, or pleural effusion identified.",
            {"Fracture": "absent", "Pneumothorax": "absent", "Pleural Effusion": "absent"},
        ),
        (
            "There is no focal consolidation, pleural effusion or pneumothorax.",
            {"Consolidation": "absent", "Pleural Effusion": "absent", "Pneumothorax": "absent"},
        ),
        # the negation stops where a new clause starts
        ("No effusion, the heart is enlarged.", {"Pleural Effusion": "absent", "Cardiomegaly": "present"}),
        ("Heart is mildly enlarged, no effusion.", {"Cardiomegaly": "present", "Pleural Effusion": "absent"}),
        (
            "No pneumothorax but there is a small effusion.",
            {"Pneumothorax": "absent", "Pleural Effusion": "present"},
        ),
        ("No edema. Bibasilar atelectasis.", {"Edema": "absent", "Atelectasis": "present"}),
    ],
)
def test_negated_lists_and_their_reach(text: str, expected: dict[str, str]) -> None:
    assert finding_mentions(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Possible small effusion.", {"Pleural Effusion": "uncertain"}),
        ("Pneumonia cannot be excluded.", {"Pneumonia": "uncertain"}),
        ("Cannot exclude a small pneumothorax.", {"Pneumothorax": "uncertain"}),
        (
            "Left basilar opacity may represent atelectasis.",
            {"Lung Opacity": "present", "Atelectasis": "uncertain"},
        ),
        ("Atelectasis versus pneumonia.", {"Atelectasis": "uncertain", "Pneumonia": "uncertain"}),
        ("Findings suspicious for pneumonia.", {"Pneumonia": "uncertain"}),
        ("Pneumonia is not excluded.", {"Pneumonia": "uncertain"}),
        ("Superimposed infection cannot be entirely excluded.", {"Pneumonia": "uncertain"}),
        (
            "Question edema or atypical infection? Heart size normal.",
            {"Edema": "uncertain", "Pneumonia": "uncertain"},
        ),
        ("Effusion? No pneumothorax.", {"Pleural Effusion": "uncertain", "Pneumothorax": "absent"}),
        # a negation denies the hedge after it; a comma before a hedge starts a new clause
        ("No focal opacity to suggest pneumonia.", {"Lung Opacity": "absent", "Pneumonia": "absent"}),
        ("No findings suspicious for pneumonia.", {"Pneumonia": "absent"}),
        (
            "No pneumothorax, possible small effusion.",
            {"Pneumothorax": "absent", "Pleural Effusion": "uncertain"},
        ),
        # commitments are stated
        ("Findings consistent with pneumonia.", {"Pneumonia": "present"}),
        ("Likely bibasilar atelectasis.", {"Atelectasis": "present"}),
        # a stated mention outranks a hedged one, a hedged one a negated one
        ("Possible effusion on the right. Small left effusion.", {"Pleural Effusion": "present"}),
        ("No effusion on the right. Possible small left effusion.", {"Pleural Effusion": "uncertain"}),
    ],
)
def test_uncertainty(text: str, expected: dict[str, str]) -> None:
    assert finding_mentions(text) == expected


def test_uncertain_findings_are_not_present() -> None:
    assert _present("Possible small effusion. May represent pneumonia. Definite nodule.") == {"Nodule"}


def test_deidentification_tokens() -> None:
    text = (
        "The cardiac silhouette and mediastinum size are within normal limits. There are no XXXX of a "
        "pleural effusion. Midline sternotomy XXXX. XXXX XXXX atelectasis. Normal chest x-XXXX."
    )
    assert finding_mentions(text) == {"Pleural Effusion": "absent", "Atelectasis": "present"}


def test_phantom_reports_exactly() -> None:
    assert _present("Small nodule in the right upper lung. No opacity.") == {"Nodule"}
    assert _present("Large opacity in the left lower lung. No nodule.") == {"Lung Opacity"}
    assert _present("Small nodule in the right upper lung. Large opacity in the left middle lung.") == {
        "Nodule",
        "Lung Opacity",
    }
    dataset = PhantomChestXray(40, size=(64, 64), seed=3)
    for index in range(len(dataset)):
        sample = dataset[index]
        stated = _present(sample.report)
        truth = {
            finding_for_label(name)
            for name, value in zip(dataset.label_names, sample.labels, strict=True)
            if value
        }
        assert stated == truth, sample.report


@pytest.mark.parametrize(
    ("label", "finding"),
    [
        ("nodule", "Nodule"),
        ("opacity", "Lung Opacity"),
        ("Pleural Effusion", "Pleural Effusion"),
        ("Effusion", "Pleural Effusion"),
        ("Pulmonary Atelectasis", "Atelectasis"),
        ("Lung Opacity", "Lung Opacity"),
        ("Infiltration", "Lung Opacity"),
        ("Calcified Granuloma", "Granuloma"),
        ("Airspace Disease", "Lung Opacity"),
        ("Pleural_Thickening", None),
        ("No Finding", None),
    ],
)
def test_source_label_names(label: str, finding: str | None) -> None:
    assert finding_for_label(label) == finding
