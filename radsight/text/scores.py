"""How close written reports are to their references: BLEU-4, ROUGE-L and finding-level F1.

BLEU-4 is sacrebleu's corpus BLEU (Post, 2018; its standard 13a tokenizer, lower-cased) and ROUGE-L
the mean of rouge-score's per-report F-measure (Lin, 2004; its tokenizer lower-cases too), so neither
rewards casing, which carries no finding. All three scores lie in [0, 1] (sacrebleu's 0-100 BLEU is
divided by 100), 1 for reports identical to their references. The finding-level F1 asks whether a
report states the findings its reference states: ``extract_findings`` reads both, and the F1 of each
finding stated in any reference is averaged (macro), so a common finding does not drown a rare one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rouge_score.rouge_scorer import RougeScorer
from sacrebleu.metrics import BLEU

from radsight.errors import ConfigError
from radsight.text.findings import extract_findings


@dataclass(frozen=True)
class FindingScore:
    """One finding's agreement: ``support`` reference positives, ``predicted`` positives, ``true``
    agreeing positives; precision is NaN when nothing was predicted positive, recall and F1 NaN when
    the reference has no positive."""

    support: int
    predicted: int
    true: int

    @property
    def precision(self) -> float:
        return self.true / self.predicted if self.predicted else math.nan

    @property
    def recall(self) -> float:
        return self.true / self.support if self.support else math.nan

    @property
    def f1(self) -> float:
        return 2 * self.true / (self.support + self.predicted) if self.support else math.nan


def finding_agreement(
    predicted: Sequence[Mapping[str, bool]], reference: Sequence[Mapping[str, bool]]
) -> dict[str, FindingScore]:
    """Per finding, counts of ``predicted`` against ``reference`` (one finding -> present mapping per
    report, paired by position); a finding missing from a report's mapping counts as absent there."""
    _check_pairs(len(predicted), len(reference), "predicted", "reference")
    names = sorted({name for findings in (*predicted, *reference) for name in findings})
    scores = {}
    for name in names:
        pairs = [(bool(p.get(name)), bool(r.get(name))) for p, r in zip(predicted, reference, strict=True)]
        scores[name] = FindingScore(
            support=sum(r for _, r in pairs),
            predicted=sum(p for p, _ in pairs),
            true=sum(p and r for p, r in pairs),
        )
    return scores


def finding_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, FindingScore]:
    """Per finding of ``extract_findings``, how the hypotheses' findings agree with their references'."""
    _check_pairs(len(hypotheses), len(references), "hypotheses", "references")
    return finding_agreement(
        [extract_findings(h) for h in hypotheses], [extract_findings(r) for r in references]
    )


def report_scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    """``bleu4``, ``rouge_l`` and ``finding_f1`` of generated reports against one reference each, all
    in [0, 1]; ``finding_f1`` is NaN when no reference states any finding."""
    _check_pairs(len(hypotheses), len(references), "hypotheses", "references")
    if not hypotheses:
        raise ConfigError("report_scores: no reports to score")
    bleu = BLEU(lowercase=True).corpus_score(list(hypotheses), [list(references)])
    scorer = RougeScorer(["rougeL"])
    rouge = [
        scorer.score(ref, hyp)["rougeL"].fmeasure for hyp, ref in zip(hypotheses, references, strict=True)
    ]
    f1 = [score.f1 for score in finding_scores(hypotheses, references).values() if score.support]
    return {
        "bleu4": bleu.score / 100,
        "rouge_l": sum(rouge) / len(rouge),
        "finding_f1": sum(f1) / len(f1) if f1 else math.nan,
    }


def _check_pairs(n_first: int, n_second: int, first: str, second: str) -> None:
    if n_first != n_second:
        raise ConfigError(f"reports are scored in pairs: {n_first} {first} but {n_second} {second}")
