"""Rule-based finding extraction from chest radiograph reports, aware of negation and uncertainty.

``extract_findings(text)`` says, for every finding in ``FINDINGS``, whether the report states it:
"No pneumothorax or effusion." negates both, "Small nodule in the right upper lung." states a nodule.
Finding names follow the CheXpert labeller (MIMIC-CXR-JPG, CheXpert) and NIH ChestX-ray14 where those
name it; ``finding_for_label`` maps a source's own label names (IU X-ray's MeSH terms, the phantoms'
"nodule" and "opacity") onto them.

How a sentence is read (after NegEx, Chapman et al. 2001, and the CheXpert labeller's rules):

- the report is cut into sentences, and each sentence into clauses at words that end a negation's
  reach ("but", "however", "which", "with", "there is", ", the" ...), so "No effusion, the heart is
  enlarged" negates the effusion only, while a list ("no rib fracture, pneumothorax, or effusion")
  stays one clause and is negated whole;
- a mention is *negated* when a negation ("no", "without", "negative for", "free of", "not") comes
  before it in its clause, or one of a few phrases follows it ("... is not seen", "... has resolved");
  "no change in", "no increase in" and the like are not negations;
- a mention is *uncertain* when a hedge ("possible", "may", "could", "questionable", "suspicious
  for", "cannot exclude", "versus", "suggest", "?") comes before it in its clause, or "cannot be
  excluded", "is not excluded", "is suspected", "?" follows it. A following hedge outranks a
  negation before; a negation before outranks a hedge before, which it denies ("no opacity to
  suggest pneumonia", "no findings suspicious for pneumonia"); a comma before a hedge starts a new
  clause ("no pneumothorax, possible small effusion"). "Likely", "probable" and "consistent with"
  are commitments and count as stated;
- a finding is *present* when any of its mentions is stated; otherwise *uncertain* when a mention is
  hedged, *absent* when every mention is negated, and not mentioned at all otherwise.

Uncertain findings are not present in ``extract_findings``: a hedge is not an assertion, and counting
it as one would let a report that hedges every finding score as if it found them all. The three-way
reading is ``finding_mentions(text)``, for a caller who wants another policy (CheXpert's "U-Ones").
The IU X-ray de-identification token "XXXX" stands for a redacted word; it is read as an unknown word,
never as a finding or a negation.
"""

from __future__ import annotations

import re
from typing import Literal

Status = Literal["present", "uncertain", "absent"]

_ENLARGED = r"(?:enlarged|enlargement)"
_HEART = r"(?:heart|cardiac\s+(?:silhouette|shadow|size|contour))"
FINDINGS: dict[str, str] = {
    "Cardiomegaly": (
        rf"cardiomegaly|(?:heart|cardiac)\s+{_ENLARGED}|{_ENLARGED}\s+(?:of\s+the\s+)?{_HEART}"
        rf"|borderline\s+{_HEART}|{_HEART}\b[\w\s]{{0,40}}?\b(?:{_ENLARGED}|large|borderline)"
    ),
    "Enlarged Cardiomediastinum": (
        rf"(?:widened|widening\s+of\s+the|{_ENLARGED})\s+(?:superior\s+)?mediastinum"
        rf"|mediastinal\s+(?:widening|{_ENLARGED})|mediastinum\s+(?:is\s+)?(?:widened|{_ENLARGED})"
        rf"|cardiomediastinal\s+(?:silhouette|contour)s?\b[\w\s]{{0,40}}?\b{_ENLARGED}"
        rf"|{_ENLARGED}\s+cardiomediastinal"
    ),
    "Pleural Effusion": r"(?<!pericardial\s)(?<!joint\s)effusions?|pleural\s+fluid|hydrothorax",
    "Pneumothorax": r"(?:hydro)?pneumothora(?:x|ces)|pleural\s+air\s+collections?",
    "Consolidation": r"consolidat(?:ion|ions|ive|ed)",
    "Atelectasis": (
        r"atelecta(?:sis|ses|tic)|(?:lobar|lobe|lung)\s+collapse"
        r"|collapsed?\s+(?:of\s+)?(?:the\s+)?(?:\w+\s+){0,2}(?:lung|lobe)"
    ),
    "Edema": (
        r"(?<!soft\stissue\s)edema|(?<!nasal\s)congestion|congestive|heart\s+failure|chf"
        r"|vascular\s+(?:prominence|engorgement|congestion)|indistinct\s+vascula\w*"
        r"|(?:increased|prominent|engorged|congested)\s+(?:central\s+)?(?:pulmonary\s+|lung\s+)?vascula\w*"
    ),
    "Pneumonia": (
        r"(?:broncho)?pneumonias?|pneumonitis|(?<!granulomatous\s)(?:infection|infectious|infective)"
    ),
    "Lung Opacity": (
        r"opaci(?:ty|ties|fication|fications|fied)|infiltrates?|infiltration"
        r"|air\s?space\s+(?:disease|process)|(?<!bone\s)(?<!bone\smineral\s)densit(?:y|ies)"
    ),
    "Nodule": r"(?:micro)?nodules?",
    "Mass": r"mass(?:es)?(?!\s+effect)",
    "Fracture": r"fractur(?:e|es|ed)|fx",
    "Emphysema": (
        r"(?<!subcutaneous\s)emphysema(?:tous)?|copd|obstructive\s+(?:pulmonary|lung|airways?)\s+disease"
    ),
    "Granuloma": r"granulomas?|granulomatous",
    "Hernia": r"hernia(?:s|tion)?",
    "Support Devices": (
        r"catheters?|pacemakers?|pacers?|defibrillators?|aicd|icd|picc|port-?a-?cath|stents?"
        r"|tubes?|central\s+(?:venous\s+)?lines?|leads|wires?|clips?|devices?|stimulator|hardware"
        r"|prosthetic\s+valve|valve\s+replacement|mediport|port"
    ),
}
"""Finding name -> regular expression of its mentions (lower-case text, matched at word boundaries)."""

_MENTIONS = {name: re.compile(rf"\b(?:{pattern})\b") for name, pattern in FINDINGS.items()}

_LABEL_ALIASES = {
    "effusion": "Pleural Effusion",
    "pulmonary atelectasis": "Atelectasis",
    "opacity": "Lung Opacity",
    "airspace disease": "Lung Opacity",
    "infiltration": "Lung Opacity",
    "calcified granuloma": "Granuloma",
    "pulmonary edema": "Edema",
    "fractures, bone": "Fracture",
    "pulmonary emphysema": "Emphysema",
    "hernia, hiatal": "Hernia",
}
"""Label names of radsight's sources (case aside) that are not a finding's own name."""

# A sentence ends at . ! ; or a line break; a period between digits ("1.5 cm") does not end one. A
# question mark does not: it hedges what it follows ("effusion?") or precedes ("? pneumonia").
_SENTENCE_END = re.compile(r"(?<!\d)\.|\.(?!\d)|[!;\n]")
# Words that end the reach of a negation or hedge: the clause after them is read on its own.
_CLAUSE_BREAK = re.compile(
    r"\b(?:but|however|although|though|except|aside\s+from|apart\s+from|otherwise|whereas|while|which"
    r"|(?<!consistent\s)(?<!compatible\s)(?<!associated\s)with|there\s+(?:is|are|has|have|was|were)"
    r"|and\s+(?:the|there))\b"
    r"|,\s*(?=(?:and\s+|but\s+)?(?:the|this|these|it|heart|lungs?|possible|possibly|questionable|may)\b)"
)
_UNCERTAIN_BEFORE = re.compile(
    r"\b(?:possible|possibly|possibility|may|might|could|questionable|suspicious|suspected|suspect"
    r"|concerning|concern|(?:cannot|can\s?not|can't)\s+(?:be\s+)?(?:\w+\s+)?(?:excluded?|ruled?\s+out)"
    r"|(?:to\s+)?exclude|rule\s+out|r/o|not\s+(?:be\s+)?(?:excluded|ruled\s+out)|differential|versus|vs"
    r"|equivocal|indeterminate|suggests?|suggestive|suggesting|uncertain|question"
    r"|evaluat(?:e|ion)\s+(?:for|of)|assess(?:ment)?\s+for|correlat(?:e|ion)\s+(?:\w+\s+)?for"
    r"|(?:appropriate|right)\s+clinical\s+(?:setting|context))\b|\?"
)
_UNCERTAIN_AFTER = re.compile(
    r"\b(?:cannot|can\s?not|can't)\s+be\s+(?:\w+\s+)?(?:excluded|ruled\s+out)"
    r"|\bnot\s+(?:be\s+)?(?:\w+\s+)?(?:excluded|ruled\s+out)|\b(?:is|are)\s+(?:possible|suspected"
    r"|questioned|not\s+excluded)\b|\bversus\b|\bvs\b|\bmay\s+be\s+present|\bin\s+the\s+differential"
    r"|\b(?:would\s+be|is)\s+a\s+consideration|\?"
)
_PSEUDO_NEGATION = re.compile(
    r"\b(?:no|not)\s+(?:(?:significant|significantly|interval|appreciable|appreciably|substantial"
    r"|substantially|definite|other|acute|new|obvious)\s+)*(?:change|changed|increase|increased|decrease"
    r"|decreased|worsening|worsened|improvement|improved|progression|only)\b"
)
_NEGATION_BEFORE = re.compile(
    r"\b(?:no|not|without|negative\s+for|free\s+of|absence\s+of|absent|resolved|resolution\s+of"
    r"|clear\s+of|neither|nor|removal\s+of|ruled\s+out)\b"
)
_NEGATION_AFTER = re.compile(
    r"\b(?:(?:is|are|was|were)\s+)?not\s+(?:\w+\s+)?(?:seen|identified|present|visualized|appreciated"
    r"|evident|demonstrated|noted|detected)\b|\b(?:has|have)\s+(?:\w+\s+)?(?:resolved|cleared)\b"
    r"|\b(?:is|are)\s+(?:now\s+)?(?:absent|resolved)\b|\bno\s+longer\b"
    r"|\bwithin\s+(?:the\s+)?(?:normal\s+limits|limits\s+of\s+normal)\b"
)


def finding_mentions(text: str) -> dict[str, Status]:
    """Each finding the report mentions -> "present", "uncertain" or "absent" (rules in the module
    docstring); findings it does not mention are left out."""
    statuses: dict[str, set[Status]] = {}
    for clause in _clauses(text):
        for name, pattern in _MENTIONS.items():
            for match in pattern.finditer(clause):
                statuses.setdefault(name, set()).add(_status(clause, match.end()))
    return {name: _strongest(found) for name, found in statuses.items()}


def extract_findings(text: str) -> dict[str, bool]:
    """Every finding of ``FINDINGS`` -> whether the report states it (negated, hedged and unmentioned
    findings are False; see the module docstring for the rules and the uncertainty policy)."""
    mentions = finding_mentions(text)
    return {name: mentions.get(name) == "present" for name in FINDINGS}


def finding_for_label(label: str) -> str | None:
    """The finding of ``FINDINGS`` a source's label names ("Pulmonary Atelectasis", "nodule",
    "Pleural Effusion"), or None when the extractor has no such finding ("No Finding", "Calcinosis")."""
    by_name = {name.lower(): name for name in FINDINGS}
    key = " ".join(label.replace("_", " ").lower().split())
    return by_name.get(key) or _LABEL_ALIASES.get(key)


def _clauses(text: str) -> list[str]:
    """Lower-case clauses of the report, each read on its own; "XXXX" becomes an unknown word."""
    text = re.sub(r"x{4,}", " unknownword ", text.lower())
    return [
        clause.strip()
        for sentence in _SENTENCE_END.split(text)
        for clause in _CLAUSE_BREAK.split(sentence)
        if clause.strip()
    ]


def _status(clause: str, end: int) -> Status:
    """How the clause states the mention that ends at ``clause[end]`` (rules in the module docstring)."""
    before, after = clause[:end], clause[end:]
    if _UNCERTAIN_AFTER.search(after):
        return "uncertain"
    denied = _blank(_UNCERTAIN_BEFORE, _blank(_PSEUDO_NEGATION, before))
    if _NEGATION_BEFORE.search(denied):
        return "absent"
    if _UNCERTAIN_BEFORE.search(before):
        return "uncertain"
    return "absent" if _NEGATION_AFTER.search(after) else "present"


def _blank(pattern: re.Pattern[str], text: str) -> str:
    """``text`` with the matches of ``pattern`` blanked out, so their words trigger nothing."""
    return pattern.sub(lambda match: " " * len(match.group()), text)


def _strongest(found: set[Status]) -> Status:
    """A stated mention outranks a hedged one, which outranks a negated one."""
    return next(status for status in ("present", "uncertain", "absent") if status in found)
