"""What a report must say in words, next to its tables: which labels the averages leave out and why, and
whether the explanation maps agree with the annotations better than chance.

Each function reads metrics.json sections and returns sentences (none when there is nothing to say).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from radsight.report.cells import number, section_cell

# Localization scores with a chance level (radsight.metrics.localization), as a reader names them.
CHANCE_SCORED = {
    "pointing_game": "pointing game",
    "energy_pointing_game": "energy pointing game",
    "soft_dice": "soft Dice",
    "dice_best": "Dice at the best threshold",
}


def classification_notes(section: Mapping[str, Any]) -> list[str]:
    """Which labels are undefined or thin, and whether the macro averages include them."""
    notes = []
    per_label = section.get("per_label", {})
    undefined = section.get("undefined_labels", [])
    if undefined:
        notes.append(
            f"Undefined (one class among the evaluated images), so left out of every average: "
            f"{', '.join(undefined)}."
        )
    thin = section.get("thin_labels", [])
    if thin:
        counts = ", ".join(
            f"{name} ({per_label[name]['n_positive']} positive, {per_label[name]['n_negative']} negative)"
            for name in thin
        )
        where = (
            "averaged into the macro metrics as the recipe asks (evaluation.macro_includes_thin)"
            if section.get("macro_includes_thin")
            else "left out of the macro averages (set evaluation.macro_includes_thin to include them)"
        )
        notes.append(
            f"Thin labels, with fewer than {section['min_class_count']} positive or negative images: "
            f"{counts}. Their values are shown, marked (thin), and {where}."
        )
    if not section.get("macro_labels") and per_label:
        notes.append("No label enters the macro averages, so they are undefined.")
    return notes


def _verdict(section: Mapping[str, Any], key: str) -> str:
    """Whether a score is above, below or no different from its chance level: by its interval where it
    has one, else by its value."""
    value, chance = section[key], section[f"{key}_chance"]
    low, high = section.get(f"{key}_ci_low"), section.get(f"{key}_ci_high")
    low, high = (value, value) if low is None or high is None else (low, high)
    if low > chance:
        return "above"
    if high < chance:
        return "below"
    return "no different from"


def localization_notes(section: Mapping[str, Any] | None, maps: str) -> list[str]:
    """Whether the ``maps`` (an explanation method's name, or "native") agree with the lesion annotations
    better than chance, in one sentence a reader cannot miss; and the share of evidence in the lungs."""
    if not section:
        return []
    notes = []
    scored = [key for key in CHANCE_SCORED if section.get(key) is not None and f"{key}_chance" in section]
    if scored:
        verdicts = {key: _verdict(section, key) for key in scored}
        parts = "; ".join(
            f"{CHANCE_SCORED[key]} {section_cell(section, key)} against a chance level of "
            f"{number(section[f'{key}_chance'])} ({verdicts[key]} chance)"
            for key in scored
        )
        reference = (
            "chance: the same maps with their pixels shuffled, on the same "
            f"{section['n_images']} annotated lesions"
        )
        above = sum(v == "above" for v in verdicts.values())
        agreement, advice = (
            ("agree with the lesion annotations better than chance", "")
            if above == len(verdicts)
            else ("agree with the lesion annotations only in part", " Read the overlays with care.")
            if above
            else (
                "do not agree with the lesion annotations",
                " Do not read the overlays as showing where the lesions are.",
            )
        )
        notes.append(f"The {maps} maps {agreement}: {parts} ({reference}).{advice}")
    if section.get("lungs_attribution_share") is not None:
        notes.append(
            f"{number(section['lungs_attribution_share'])} of the evidence lies in the lungs, which cover "
            f"{number(section['lungs_mask_area_share'])} of the image (attention ratio "
            f"{section_cell(section, 'lungs_attention_ratio')}; 1 is no preference)."
        )
    return notes
