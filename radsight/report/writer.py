"""Write an evaluation as report.md (figures beside it) and a self-contained report.html (figures embedded).

Both are rendered from the same rows, so they always say the same thing: a headline sentence first, then
per section a table of metrics by their reader's names (:mod:`radsight.report.glossary`) with a one-line
meaning each, and the per-label tables cut into groups of at most :data:`MAX_LABEL_COLUMNS` metrics so that
every table fits the page.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from radsight.atomic import write_text
from radsight.explain.names import NORMALISATIONS, Normalisation
from radsight.metrics.bootstrap import EXCLUDES_ESTIMATE as EXCLUDES_KEY
from radsight.metrics.saliency import MIT_JITTER
from radsight.report.cells import EXCLUDES_ESTIMATE, section_cell
from radsight.report.glossary import describe, headline

CI_SUFFIXES = ("_ci_low", "_ci_high", EXCLUDES_KEY)
THIN = " (thin)"
MAX_LABEL_COLUMNS = 5
"""Metric columns per per-label table (beside the label column); more are split into further tables."""
SUMMARY_HEADER = ["metric", "value [95% CI]", "meaning"]


def summary_rows(section: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(metric, value [95% CI]) for every flat number of a metrics.json section."""
    return [
        (key, section_cell(section, key))
        for key, value in section.items()
        if not isinstance(value, dict) and not key.endswith(CI_SUFFIXES)
    ]


def per_label_rows(section: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """A label-by-metric table from a section's ``per_label`` dict (metrics shown with their CIs); a thin
    label is marked after its name."""
    per_label = section.get("per_label") or {}
    if not per_label:
        return [], []
    columns = [k for k in next(iter(per_label.values())) if not k.endswith(CI_SUFFIXES) and k != "thin"]
    rows = [
        [label + (THIN if values.get("thin") else ""), *(section_cell(values, c) for c in columns)]
        for label, values in per_label.items()
    ]
    return ["label", *columns], rows


def conventions(metrics: Mapping[str, Mapping[str, Any]], map_scale: Normalisation = "max") -> str | None:
    """One line naming the conventions behind the map scores, so they can be set beside published ones."""
    parts = []
    if "localization" in metrics or "saliency" in metrics:
        parts.append(f"explanation maps (CAMs, integrated gradients): {NORMALISATIONS[map_scale]}")
    draws = metrics.get("saliency", {}).get("auc_judd_mit_draws")
    if draws is not None:
        parts.append(
            f"auc_judd ranks tied pixels exactly, auc_judd_mit adds the MIT benchmark's jitter (uniform "
            f"below {MIT_JITTER:g}) and averages {draws} seeded draws; NSS uses the sample standard "
            "deviation; a fixated pixel counts once"
        )
    return f"Conventions: {'; '.join(parts)}." if parts else None


def named_rows(section: Mapping[str, Any], section_name: str = "") -> list[list[str]]:
    """(name, value [95% CI], meaning) for every flat number of a section, named for a reader."""
    regions = _regions(section)
    rows = []
    for key, cell in summary_rows(section):
        name, meaning = describe(key, regions, section_name)
        rows.append([name, cell, meaning])
    return rows


def label_tables(
    section: Mapping[str, Any], section_name: str = ""
) -> list[tuple[list[str], list[list[str]]]]:
    """A section's per-label table, its metrics named for a reader, in groups of MAX_LABEL_COLUMNS."""
    header, rows = per_label_rows(section)
    names = [describe(key, section=section_name)[0] for key in header[1:]]
    tables = []
    for start in range(0, len(names), MAX_LABEL_COLUMNS):
        end = start + MAX_LABEL_COLUMNS
        tables.append((["label", *names[start:end]], [[row[0], *row[1 + start : 1 + end]] for row in rows]))
    return tables


def _regions(section: Mapping[str, Any]) -> tuple[str, ...]:
    """The anatomical regions a localization section scores (its ``<region>_attribution_share`` keys)."""
    suffix = "_attribution_share"
    return tuple(key.removesuffix(suffix) for key in section if key.endswith(suffix))


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table's lines: the header, the rule and one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_cell(cell: str) -> str:
    """A cell, its interval (``value [low, high]``) on a second, smaller line so narrow columns fit."""
    value, bracket, interval = cell.partition(" [")
    if not bracket:
        return f"<td>{html.escape(cell)}</td>"
    return f"<td>{html.escape(value)}<br><small>[{html.escape(interval)}</small></td>"


def write_report(
    out_dir: Path,
    title: str,
    metrics: Mapping[str, Mapping[str, Any]],
    figures: Mapping[str, Path],
    *,
    n_images: int,
    notes: list[str] | None = None,
    map_scale: Normalisation = "max",
) -> tuple[Path, Path]:
    """Render ``metrics`` (metrics.json sections) and ``figures`` (caption -> PNG in out_dir);
    ``map_scale`` is the normalisation of the explanation maps, named in the conventions line."""
    summary = headline(metrics, n_images)
    intro = (
        "Intervals are 95% bias-corrected and accelerated (BCa) bootstrap intervals over patients; "
        f"{EXCLUDES_ESTIMATE} marks an interval that does not contain its estimate."
    )
    md = [f"# {title}", "", f"**{summary}**", "", intro, ""]
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='headline'>{html.escape(summary)}</p>",
        f"<p>{html.escape(intro)}</p>",
    ]
    line = conventions(metrics, map_scale)
    for note in [*([line] if line else []), *(notes or [])]:
        md += [note, ""]
        body.append(f"<p>{html.escape(note)}</p>")
    for name, section in metrics.items():
        md += [f"## {name.capitalize()}", ""]
        body.append(f"<h2>{html.escape(name.capitalize())}</h2>")
        rows = named_rows(section, name)
        md += [*markdown_table(SUMMARY_HEADER, rows), ""]
        body.append(_html_table(SUMMARY_HEADER, rows))
        for header, label_rows in label_tables(section, name):
            md += [*markdown_table(header, label_rows), ""]
            body.append(_html_table(header, label_rows))
    for caption, path in figures.items():
        md += [f"## {caption}", "", f"![{caption}]({Path(path).name})", ""]
        encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        alt = html.escape(caption)
        body.append(f"<h2>{alt}</h2><img alt='{alt}' src='data:image/png;base64,{encoded}'>")
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        ".headline{font-size:1.15em;font-weight:bold}"
        "table{border-collapse:collapse;margin:1em 0;width:100%}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top;"
        "overflow-wrap:anywhere}"
        "td small{color:#555}"
        "img{max-width:100%}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
    )
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    write_text(md_path, "\n".join(md))
    write_text(html_path, page)
    return md_path, html_path
