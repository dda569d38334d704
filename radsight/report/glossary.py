"""What the keys of metrics.json mean, in words a reader knows: a name and a one-line meaning per metric,
and the headline sentence that opens a report.

Keys are composed (``sensitivity_at_youden_macro``, ``lungs_attention_ratio``), so a name is built from
the base metric, its operating point, its averaging and its region; a key this module does not know keeps
its own spelling, with underscores as spaces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from radsight.report.cells import UNDEFINED, number

METRICS: dict[str, tuple[str, str]] = {
    # classification
    "n_images": ("images", "images scored"),
    "n_patients": ("patients", "distinct patients among them: the unit the bootstrap resamples"),
    "n_labels": ("labels", "findings the model predicts"),
    "n_labels_defined": ("labels with both classes", "labels with positive and negative images"),
    "undefined_labels": ("labels with one class only", "left out of every average"),
    "thin_labels": ("thin labels", "too few positive or negative images for a stable estimate"),
    "macro_labels": ("labels averaged", "the labels the macro averages include"),
    "min_class_count": ("fewest images per class", "a label with fewer positive or negative images is thin"),
    "macro_includes_thin": ("thin labels averaged", "whether the macro averages include thin labels"),
    "threshold_rule": ("operating-point rule", "how each label's threshold was chosen (on validation)"),
    "ece_bins": ("calibration bins", "probability bins of the calibration error"),
    "n_boot": ("bootstrap resamples", "patient resamples behind each interval"),
    "ci_level": ("interval level", "coverage of each interval"),
    "ci_method": ("interval method", "bca: bias-corrected and accelerated bootstrap; percentile: plain"),
    "seed": ("bootstrap seed", "seed of the resampling, so the intervals can be reproduced"),
    "auroc": ("AUROC", "chance a positive image scores above a negative one (0.5 = guessing)"),
    "auprc": ("AUPRC", "average precision over all sensitivities (guessing scores the prevalence)"),
    "sensitivity": ("sensitivity", "share of positive images called positive"),
    "specificity": ("specificity", "share of negative images called negative"),
    "f1": ("F1", "harmonic mean of precision and sensitivity"),
    "ece": ("calibration error (ECE)", "gap between probability and observed frequency (0 = calibrated)"),
    "accuracy": ("accuracy", "share of images whose most probable class is the true one"),
    "defined": ("defined", "whether the label has positive and negative images"),
    "thin": ("thin", "too few positive or negative images"),
    "n_positive": ("positive images", "images annotated positive"),
    "n_negative": ("negative images", "images annotated negative"),
    "threshold": ("map threshold", "map value from which a pixel counts as marked"),
    # localization
    "n_boxes": ("lesion boxes", "annotated lesions the maps are scored against"),
    "dice": ("Dice", "overlap of the marked pixels with the lesion (0 = none, 1 = exact)"),
    "iou": ("IoU", "intersection over union of the marked pixels and the lesion"),
    "soft_dice": ("soft Dice", "Dice of the map's own values, without a threshold"),
    "pointing_game": ("pointing game", "share of images whose map peaks on the lesion"),
    "pointing_tolerance_px": ("pointing tolerance (px)", "how far outside the lesion the peak may fall"),
    "energy_pointing_game": ("energy pointing game", "share of the map's mass inside the lesion"),
    "box_iou": ("box IoU", "IoU of the box around the marked pixels with the lesion box"),
    "box_hit_rate": ("box hit rate", "share of lesion boxes matched by the map's box"),
    "box_hit_iou_threshold": ("box hit IoU", "IoU from which a box counts as matched"),
    "attribution_share": ("evidence share", "share of the map's positive evidence inside the region"),
    "attention_ratio": ("attention ratio", "evidence share over area share (1 = no preference)"),
    "mask_area_share": ("area share", "share of the image inside the region"),
    "n_without_attribution": ("maps without evidence", "images whose map has no positive value"),
    # saliency against gaze
    "n_images_with_gaze_map": ("images with a gaze map", "images scored by the distribution metrics"),
    "n_images_with_fixations": ("images with fixations", "images scored by the fixation metrics"),
    "cc": ("correlation with gaze (CC)", "Pearson correlation of map and gaze map (1 = identical)"),
    "kl_divergence": ("KL divergence", "how far the map is from the gaze map (0 = identical)"),
    "kl_divergence_no_eps": ("KL divergence, no epsilon", "KL unsmoothed (infinite where the map is 0)"),
    "kl_divergence_no_eps_n_infinite": ("infinite KL divergences", "images where the map is 0 under gaze"),
    "sim": ("similarity (SIM)", "histogram intersection of map and gaze distributions (1 = identical)"),
    "histogram_similarity": ("histogram similarity", "SIM of the min-max rescaled maps"),
    "nss": ("NSS", "mean standardised map value at fixations (0 = chance)"),
    "auc_judd": ("AUC-Judd", "fixated pixels against all pixels, ranked by the map (0.5 = chance)"),
    "auc_judd_mit": ("AUC-Judd (MIT)", "AUC-Judd with the MIT benchmark's jitter (as published)"),
    "auc_judd_mit_draws": ("AUC-Judd (MIT) draws", "seeded jitter draws averaged"),
    "auc_borji": ("AUC-Borji", "fixated pixels against uniformly drawn ones (0.5 = chance)"),
    "auc_shuffled": ("shuffled AUC", "fixated pixels against other images' fixations: discounts centre bias"),
    "information_gain": ("information gain", "bits per fixation over the centre-bias baseline (0 = no gain)"),
    # captioning (the written draft reports against the images' own)
    "reports": ("reports", "images with a report, each scored against it (cleaned as for training)"),
    "beam_width": ("beam width", "sequences the beam search keeps per image"),
    **{
        f"{strategy}_{key}": (f"{name}, {strategy}", meaning)
        for strategy in ("greedy", "beam")
        for key, (name, meaning) in {
            "bleu4": (
                "BLEU-4",
                "n-gram precision against the reference report, 0 to 1 (sacrebleu, corpus level)",
            ),
            "rouge_l": ("ROUGE-L", "longest common subsequence F-measure against the reference, 0 to 1"),
            "finding_f1": (
                "finding F1",
                "F1 of the findings stated, as extract_findings reads them, per finding",
            ),
        }.items()
    },
}
AVERAGES = {"macro": "mean over labels", "micro": "pooled over labels"}
OPERATING_POINTS = {
    "youden": "at the Youden threshold",
    "threshold": "at the map threshold",
    "sensitivity": "at the target sensitivity",
    "fixed": "at the fixed threshold",
    "best": "at the best threshold",
}
REGION_KEYS = ("attribution_share", "attention_ratio", "mask_area_share", "n_without_attribution", "n_images")


def describe(key: str, regions: tuple[str, ...] = (), section: str = "") -> tuple[str, str]:
    """(name, meaning) of a metrics.json key of ``section``; ``regions`` are the anatomical regions whose
    keys it may carry as a prefix (``lungs_attention_ratio``). A threshold is a label's operating point in
    the classification section and a map threshold elsewhere."""
    if section == "classification" and key == "threshold":
        return "threshold", "the label's operating point, chosen on the validation split"
    for region in regions:
        for suffix in REGION_KEYS:
            if key == f"{region}_{suffix}":
                name, meaning = METRICS[suffix]
                return f"{name}, {region}", meaning.replace("the region", f"the {region}")
    if key.endswith("_chance"):
        name = describe(key.removesuffix("_chance"), regions, section)[0]
        return f"{name}, chance level", "the same score of the same maps with their pixels shuffled"
    base, average = key, None
    if match := re.fullmatch(r"(.+)_(macro|micro)", key):
        base, average = match.groups()
    point = None
    if match := re.fullmatch(r"(.+?)_(?:at_)?(youden|threshold|sensitivity|fixed|best)(_threshold)?", base):
        stem, point, threshold = match.groups()
        if stem in METRICS and stem != "threshold":
            base = stem
            if threshold:  # e.g. dice_best_threshold, youden_threshold
                name = METRICS[stem][0]
                return f"best threshold for {name}", f"the map threshold that gives the best mean {name}"
        else:
            point = None
    if base == "youden_threshold":
        return "Youden threshold", "the label's threshold, chosen on the validation split"
    if base not in METRICS:
        return key.replace("_", " "), ""
    name, meaning = METRICS[base]
    if point:
        at = "at the operating point" if point == "threshold" and section == "classification" else None
        name = f"{name} {at or OPERATING_POINTS[point]}"
    if average:
        name = f"{name} ({AVERAGES[average]})"
    return name, meaning


def headline(metrics: Mapping[str, Mapping[str, Any]], n_images: int) -> str:
    """The sentence under a report's title: on how many images and patients, for which labels, and the
    main numbers with their 95% intervals (macro AUROC and AUPRC, sensitivity and specificity at the
    operating points; the maps' scores where nothing was classified)."""
    section = metrics.get("classification", {})
    patients = section.get("n_patients")
    labels = list(section.get("per_label", {}))
    what = f"{n_images} images" + (f" of {patients} patients" if patients is not None else "")
    what += " evaluated" + (f" for {len(labels)} labels ({', '.join(labels)})" if labels else "")
    keys = ["auroc_macro", "auprc_macro", "accuracy"]
    keys += [k for k in section if re.fullmatch(r"(sensitivity|specificity)_at_\w+_macro", k)]
    numbers = [_stated(section, key) for key in keys if key in section]
    if not numbers:
        maps = {**metrics.get("localization", {}), **metrics.get("saliency", {})}
        numbers = [_stated(maps, key) for key in ("pointing_game", "soft_dice", "cc", "nss") if key in maps]
    if not numbers:
        return f"{what}."
    stated = "; ".join(numbers)
    return f"{what}. {stated[0].upper()}{stated[1:]}."


def _stated(section: Mapping[str, Any], key: str) -> str:
    """``name value (95% CI low to high)`` as a sentence states it."""
    name = describe(key, section="classification")[0]
    value, low, high = section.get(key), section.get(f"{key}_ci_low"), section.get(f"{key}_ci_high")
    if value is None:
        return f"{name} {UNDEFINED}"
    interval = "" if low is None or high is None else f" (95% CI {number(low)} to {number(high)})"
    return f"{name} {number(value)}{interval}"
