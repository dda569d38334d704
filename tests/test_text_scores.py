"""Report scores: BLEU-4 and ROUGE-L equal to sacrebleu and rouge-score called directly; finding F1."""

from __future__ import annotations

import math

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from radsight.errors import ConfigError
from radsight.text.scores import finding_agreement, finding_scores, report_scores

HYPOTHESES = [
    "Heart size is normal. Small left pleural effusion. No pneumothorax.",
    "The lungs are clear. There is a small nodule in the right upper lobe.",
]
REFERENCES = [
    "The heart is normal in size. There is a small left pleural effusion. No pneumothorax is seen.",
    "Lungs are clear. No nodule. Mild cardiomegaly.",
]


def test_bleu_and_rouge_equal_the_libraries() -> None:
    scores = report_scores(HYPOTHESES, REFERENCES)
    bleu = sacrebleu.corpus_bleu([h.lower() for h in HYPOTHESES], [[r.lower() for r in REFERENCES]])
    assert scores["bleu4"] == pytest.approx(bleu.score / 100, abs=1e-12)
    assert 0.0 < scores["bleu4"] < 1.0
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(HYPOTHESES, REFERENCES, strict=True)]
    assert scores["rouge_l"] == pytest.approx(sum(rouge) / 2, abs=1e-12)


def test_finding_f1_by_hand() -> None:
    # references state Pleural Effusion (report 1) and Cardiomegaly (report 2); the hypotheses state
    # Pleural Effusion (report 1, right) and Nodule (report 2, negated in its reference)
    scores = report_scores(HYPOTHESES, REFERENCES)
    # Pleural Effusion F1 = 1, Cardiomegaly F1 = 0 (missed); Nodule is stated in no reference
    assert scores["finding_f1"] == pytest.approx(0.5)
    detail = finding_scores(HYPOTHESES, REFERENCES)
    assert (detail["Nodule"].support, detail["Nodule"].predicted, detail["Nodule"].true) == (0, 1, 0)
    assert detail["Nodule"].precision == 0.0 and math.isnan(detail["Nodule"].f1)
    assert detail["Cardiomegaly"].recall == 0.0 and math.isnan(detail["Cardiomegaly"].precision)
    assert detail["Pleural Effusion"].f1 == 1.0


def test_identical_reports_score_one() -> None:
    scores = report_scores(REFERENCES, REFERENCES)
    assert scores == pytest.approx({"bleu4": 1.0, "rouge_l": 1.0, "finding_f1": 1.0})


def test_an_empty_report_scores_zero() -> None:
    scores = report_scores(["", ""], REFERENCES)
    assert (scores["bleu4"], scores["rouge_l"], scores["finding_f1"]) == (0.0, 0.0, 0.0)


def test_no_finding_in_any_reference() -> None:
    assert math.isnan(report_scores(["Normal chest."], ["No acute disease."])["finding_f1"])


def test_agreement_counts() -> None:
    predicted = [{"A": True, "B": False}, {"A": True, "B": True}, {"A": False}]
    reference = [{"A": True, "B": True}, {"A": False, "B": True}, {"A": True, "B": False}]
    a, b = finding_agreement(predicted, reference).values()
    assert (a.support, a.predicted, a.true) == (2, 2, 1)
    assert (a.precision, a.recall, a.f1) == (0.5, 0.5, 0.5)
    assert (b.support, b.predicted, b.true) == (2, 1, 1)
    assert (b.precision, b.recall) == (1.0, 0.5) and b.f1 == pytest.approx(2 / 3)


def test_unpaired_or_empty_input() -> None:
    with pytest.raises(ConfigError, match="2 hypotheses but 1 references"):
        report_scores(HYPOTHESES, REFERENCES[:1])
    with pytest.raises(ConfigError, match="no reports to score"):
        report_scores([], [])
