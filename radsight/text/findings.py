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
  for", "cannot exclude", "versus", "suggest") comes before it in its clause, or "cannot be excluded",
  "is not excluded", "is suspected" follows it. A hedge outranks a negation ("cannot exclude" holds
  "not" inside "exclude" for nothing). "Likely", "probable" and "consistent with" are commitments and
  count as stated;
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
FINDINGS: dict[str, str] = {
    "Cardiomegaly": (
        rf"cardiomegaly|(?:heart|cardiac)\s+{_ENLARGED}|{_ENLARGED}\s+(?:of\s+the\s+)?(?:heart|cardiac)"
        rf"|(?:heart|cardiac\s+(?:silhouette|shadow|size|contour)|heart\s+size)\b[\w\s,]{{0,30}}?\b{_ENLARGED}"
    ),
    "Enlarged Cardiomediastinum": (
        rf"(?:widened|widening\s+of\s+the|{_ENLARGED})\s+(?:superior\s+)?mediastinum"
        rf"|mediastinal\s+(?:widening|{_ENLARGED})|mediastinum\s+(?:is\s+)?(?:widened|{_ENLARGED})"
        rf"|cardiomediastinal\s+(?:silhouette|contour)s?\b[\w\s,]{{0,30}}?\b{_ENLARGED}"
        rf"|{_ENLARGED}\s+cardiomediastinal"
    ),
    "Pleural Effusion": r"(?<!pericardial\s)(?<!joint\s)effusions?|pleural\s+fluid|hydrothorax",
    "Pneumothorax": r"pneumothora(?:x|ces)|hydropneumothorax",
    "Consolidation": r"consolidat(?:ion|ions|ive|ed)",
    "Atelectasis": r"atelecta(?:sis|ses|tic)|(?:lobar|lobe|lung)\s+collapse",
    "Edema": (
        r"(?<!soft\stissue\s)edema|(?:vascular|venous|pulmonary|interstitial)\s+congestion"
        r"|heart\s+failure|chf"
    ),
    "Pneumonia": r"(?:broncho)?pneumonias?|pneumonitis|infection|infectious|infective",
    "Lung Opacity": (
        r"opaci(?:ty|ties|fication|fications|fied)|infiltrates?|infiltration"
        r"|air\s?space\s+(?:disease|process)|(?<!bone\s)(?<!bone\smineral\s)densit(?:y|ies)"
    ),
    "Nodule": r"(?:micro)?nodules?",
    "Mass": r"mass(?:es)?(?!\s+effect)",
    "Fracture": r"fractur(?:e|es|ed)|fx",
    "Emphysema": r"(?<!subcutaneous\s)emphysema(?:tous)?|copd",
    "Granuloma": r"granulomas?|granulomatous",
    "Hernia": r"hernia(?:s|tion)?",
    "Support Devices": (
        r"catheters?|pacemakers?|pacers?|defibrillators?|aicd|icd|picc|port-?a-?cath|stents?"
        r"|(?:endotracheal|tracheostomy|nasogastric|orogastric|feeding|enteric|chest|et|ng)\s+tubes?"
        r"|central\s+(?:venous\s+)?(?:line|catheter)|(?:pacer|pacemaker|sternotomy)\s+(?:leads?|wires?)"
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

# A sentence ends at . ? ! ; or a line break; a period between digits ("1.5 cm") does not end one.
_SENTENCE_END = re.compile(r"(?<!\d)\.|\.(?!\d)|[?!;\n]")
# Words that end the reach of a negation or hedge: the clause after them is read on its own.
_CLAUSE_BREAK = re.compile(
    r"\b(?:but|however|although|though|except|aside\s+from|apart\s+from|otherwise|whereas|while|which"
    r"|(?<!consistent\s)(?<!compatible\s)(?<!associated\s)with|there\s+(?:is|are|has|have|was|were)"
    r"|and\s+(?:the|there))\b"
    r"|,\s*(?=(?:and\s+|but\s+)?(?:the|this|these|it|heart|lungs?)\b)"
)
_UNCERTAIN_BEFORE = re.compile(
    r"\b(?:possible|possibly|may|might|could|questionable|question\s+of|suspicious|suspected|suspect"
    r"|concerning|concern|cannot\s+(?:be\s+)?(?:excluded?|ruled?\s+out)|can\s?not\s+(?:be\s+)?(?:excluded?"
    r"|ruled?\s+out)|can't\s+(?:exclude|rule\s+out)|(?:difficult|hard)\s+to\s+exclude|rule\s+out|r/o"
    r"|differential|versus|vs|equivocal|indeterminate|suggests?|suggestive|suggesting|uncertain"
    r"|not\s+(?:be\s+)?(?:excluded|ruled\s+out))\b|\?"
)
_UNCERTAIN_AFTER = re.compile(
    r"\b(?:cannot|can\s?not|can't)\s+be\s+(?:excluded|ruled\s+out)|\bnot\s+(?:be\s+)?(?:excluded|ruled\s+out)"
    r"|\b(?:is|are)\s+(?:possible|suspected|questioned|not\s+excluded)\b|\bversus\b|\bvs\b|\bmay\s+be\s+present"
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
    """How the clause states the mention that ends at ``clause[end]``."""
    before, after = clause[:end], clause[end:]
    if _UNCERTAIN_BEFORE.search(before) or _UNCERTAIN_AFTER.search(after):
        return "uncertain"
    if _NEGATION_BEFORE.search(_PSEUDO_NEGATION.sub(" ", before)) or _NEGATION_AFTER.search(after):
        return "absent"
    return "present"


def _strongest(found: set[Status]) -> Status:
    """A stated mention outranks a hedged one, which outranks a negated one."""
    return next(status for status in ("present", "uncertain", "absent") if status in found)
