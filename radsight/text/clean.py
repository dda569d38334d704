"""What of a radiology report a captioning model learns to write: the chosen sections, without the
sentences that compare with an earlier study (which no single image can show).

A report headed like MIMIC-CXR's ("FINDINGS: ... IMPRESSION: ...") keeps the sections the recipe
chooses; text without these headers (covid clinical notes, phantom reports) is one section and is kept
whole. The prior-study sentences are found by the phrases in :data:`PRIOR_STUDY`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

Section = Literal["findings", "impression"]

_HEADER = re.compile(r"\b(FINDINGS|IMPRESSION)\s*:", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

PRIOR_STUDY = re.compile(
    r"\b(prior|previous(ly)?|compar(ed|ison)|interval(ly)?|unchanged|no (significant )?change|"
    r"redemonstrat\w*|again (seen|noted|demonstrated)|as before|since (the )?(last|prior|previous)|"
    r"(increas|decreas|improv|worsen|resolv)(ed|ing) (from|since))\b",
    re.IGNORECASE,
)
"""Phrases by which a sentence refers to an earlier study ("compared with the prior", "unchanged from",
"interval improvement", "again seen"). "Stable" is not among them: it also describes a single film."""


def sections_of(text: str) -> dict[str, str]:
    """The headed sections of ``text`` (lower-case names); ``{}`` when it has no FINDINGS/IMPRESSION
    header. Text before the first header (indication, technique) belongs to no section."""
    found = list(_HEADER.finditer(text))
    return {
        match.group(1).lower(): text[
            match.end() : found[k + 1].start() if k + 1 < len(found) else None
        ].strip()
        for k, match in enumerate(found)
    }


def sentences(text: str) -> list[str]:
    return [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]


def clean_report(text: str, sections: Sequence[Section], strip_prior: bool) -> str:
    """The part of ``text`` to learn: its chosen ``sections`` in that order (all of it when unheaded),
    without prior-study sentences when ``strip_prior``, on one line. Empty when nothing is left."""
    headed = sections_of(text)
    body = " ".join(headed[name] for name in sections if headed.get(name)) if headed else text
    kept = [s for s in sentences(" ".join(body.split())) if not (strip_prior and PRIOR_STUDY.search(s))]
    return " ".join(kept)
