"""How well ``extract_findings`` agrees with the IU X-ray reports' MeSH ``Problems`` codes.

The Problems headings were assigned to each report by the collection's coders, independently of this
extractor, so they are a fair reference for it. ``IU_PROBLEMS`` names the headings that code each
finding; a finding without a heading of its own (enlarged cardiomediastinum: IU codes it under the
anatomical heading "Mediastinum", which also holds other findings) is left out. Reports indexed "No
Indexing" have no codes and are left out too. Each finding gets the extractor's precision and recall
under its policy (uncertain mentions are not present), and again with uncertain mentions counted as
present, since coders often index what a report hedges ("atelectasis versus scarring"), and the
unweighted mean of each rate over the findings.

The extractor's rules were written while reading these reports and their codes, so the rates are
in-sample: on another hospital's wording expect them lower.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from radsight.atomic import write_json, write_text
from radsight.data.sources.iu_xray import load_coded_reports
from radsight.report.cells import number
from radsight.report.writer import markdown_table
from radsight.text.findings import extract_findings, finding_mentions
from radsight.text.scores import FindingScore, finding_agreement

IU_PROBLEMS: dict[str, frozenset[str]] = {
    name: frozenset(headings)
    for name, headings in {
        "Cardiomegaly": {"Cardiomegaly", "Cardiac Shadow"},  # "Cardiac Shadow" is coded /enlarged
        "Pleural Effusion": {"Pleural Effusion"},
        "Pneumothorax": {"Pneumothorax", "Hydropneumothorax"},
        "Consolidation": {"Consolidation"},
        "Atelectasis": {"Pulmonary Atelectasis"},
        "Edema": {"Pulmonary Edema", "Pulmonary Congestion", "Heart Failure"},
        "Pneumonia": {"Pneumonia"},
        "Lung Opacity": {"Opacity", "Airspace Disease", "Infiltrate", "Density"},
        "Nodule": {"Nodule"},
        "Mass": {"Mass"},
        "Fracture": {"Fractures, Bone"},
        "Emphysema": {"Emphysema", "Pulmonary Emphysema", "Pulmonary Disease, Chronic Obstructive"},
        "Granuloma": {"Calcified Granuloma", "Granuloma", "Granulomatous Disease"},
        "Hernia": {"Hernia, Hiatal"},
        "Support Devices": {
            "Catheters, Indwelling",
            "Surgical Instruments",
            "Implanted Medical Device",
            "Medical Device",
            "Tube, Inserted",
            "Stents",
        },
    }.items()
}
"""Finding of ``extract_findings`` -> the IU Problems headings that code it."""


def iu_agreement(root: str | Path) -> dict[str, Any]:
    """Per finding of ``IU_PROBLEMS``, the extractor's agreement with the coders over every indexed
    report of ``<root>/indiana_reports.csv``."""
    reports = load_coded_reports(root)
    coded = [(text, terms) for text, terms in reports if terms is not None]
    codes = [{name: bool(terms & headings) for name, headings in IU_PROBLEMS.items()} for _, terms in coded]
    stated = [extract_findings(text) for text, _ in coded]
    mentions = [finding_mentions(text) for text, _ in coded]
    hedged = [
        {name: mention.get(name) in ("present", "uncertain") for name in IU_PROBLEMS} for mention in mentions
    ]
    policy, uncertain_present = finding_agreement(stated, codes), finding_agreement(hedged, codes)
    findings = {
        name: {
            **_counts(policy[name]),
            "uncertain_as_present": _counts(uncertain_present[name]),
            "problems": sorted(IU_PROBLEMS[name]),
        }
        for name in IU_PROBLEMS
    }
    return {
        "reports": len(coded),
        "not_indexed": len(reports) - len(coded),
        "findings": findings,
        "mean": {
            **_mean(findings.values()),
            "uncertain_as_present": _mean(row["uncertain_as_present"] for row in findings.values()),
        },
    }


def write_agreement(result: dict[str, Any], out: Path) -> None:
    """``agreement.json`` and ``agreement.md`` in ``out``."""
    write_json(out / "agreement.json", result)
    write_text(out / "agreement.md", markdown(result))


def markdown(result: dict[str, Any]) -> str:
    header = ["finding", "coded", "stated", "precision", "recall", "F1", "precision (u+)", "recall (u+)"]
    rows = [
        [name, str(row["support"]), str(row["predicted"])]
        + [number(row[key]) for key in ("precision", "recall", "f1")]
        + [number(row["uncertain_as_present"][key]) for key in ("precision", "recall")]
        for name, row in result["findings"].items()
    ]
    mean = result["mean"]
    rows.append(
        ["mean", "", ""]
        + [number(mean[key]) for key in ("precision", "recall", "f1")]
        + [number(mean["uncertain_as_present"][key]) for key in ("precision", "recall")]
    )
    return "\n".join(
        [
            "# Finding extractor against the IU X-ray Problems codes",
            "",
            f"{result['reports']} indexed reports ({result['not_indexed']} marked 'No Indexing' left out). "
            "coded: reports whose Problems code the finding; stated: reports the extractor says state it. "
            "(u+): with uncertain mentions counted as present. mean: over the findings, unweighted. The "
            "extractor's rules were written on these reports, so the rates are in-sample.",
            "",
            *markdown_table(header, rows),
            "",
        ]
    )


def _counts(score: FindingScore) -> dict[str, Any]:
    """A finding's counts and rates, undefined rates as None (JSON has no NaN)."""
    rates = {"precision": score.precision, "recall": score.recall, "f1": score.f1}
    return {
        "support": score.support,
        "predicted": score.predicted,
        "true": score.true,
        **{key: None if math.isnan(value) else value for key, value in rates.items()},
    }


def _mean(rows: Iterable[dict[str, Any]]) -> dict[str, float | None]:
    """Each rate's unweighted mean over the findings where it is defined."""
    rows = list(rows)
    means = {}
    for key in ("precision", "recall", "f1"):
        values = [row[key] for row in rows if row[key] is not None]
        means[key] = sum(values) / len(values) if values else None
    return means
