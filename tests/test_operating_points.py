"""Operating points: chosen on one split by the recipe's rule, stored as JSON, read back, described."""

from __future__ import annotations

import numpy as np
import pytest

from radsight.config import OperatingPointConfig
from radsight.errors import ConfigError
from radsight.operating_points import (
    OPERATING_POINTS_FILE,
    choose_operating_points,
    read_operating_points,
    write_operating_points,
)


def test_rules_on_a_validation_split_by_hand(tmp_path):
    probs = np.array([[0.9, 0.2], [0.6, 0.4], [0.55, 0.1], [0.3, 0.8]])
    labels = np.array([[1, 0], [1, 0], [0, 0], [1, 0]])  # the second label has no positive on val
    youden = choose_operating_points(OperatingPointConfig(), probs, labels, ["a", "b"], multilabel=True)
    # a: TPR - FPR at 0.9: 1/3, at 0.6: 2/3, at 0.55: 2/3 - 1, at 0.3: 0 -> 0.6
    assert youden.thresholds == {"a": 0.6, "b": None} and youden.chosen_on == "val" and youden.n_images == 4
    assert youden.describe() == (
        "Thresholds were chosen on the val split (4 images) by Youden's index (the threshold maximising "
        "sensitivity + specificity - 1); b lacked positive or negative images there: no threshold."
    )
    assert np.isnan(youden.vector(["b", "a"])[0]) and youden.vector(["b", "a"])[1] == 0.6
    assert youden.positive({"a": 0.6, "b": 0.99}) == {"a": True, "b": None}
    target = OperatingPointConfig(rule="sensitivity", value=1.0)
    assert choose_operating_points(target, probs, labels, ["a", "b"], multilabel=True).thresholds["a"] == 0.3
    fixed = choose_operating_points(
        OperatingPointConfig(rule="fixed", value=0.3), probs, labels, ["a", "b"], multilabel=True
    )
    assert fixed.thresholds == {"a": 0.3, "b": 0.3} and fixed.chosen_on is None
    assert (
        fixed.describe() == "Thresholds are the fixed threshold 0.3 of the recipe, the same for every label."
    )
    assert read_operating_points(tmp_path) is None  # a run folder without them
    write_operating_points(tmp_path, youden)
    assert read_operating_points(tmp_path) == youden
    with pytest.raises(ConfigError, match=r"no threshold for label\(s\) \['c'\]"):
        youden.vector(["c"])


def test_a_damaged_file_is_named(tmp_path):
    (tmp_path / OPERATING_POINTS_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match=r"operating_points\.json: not valid JSON"):
        read_operating_points(tmp_path)
    (tmp_path / OPERATING_POINTS_FILE).write_text('{"rule": "youden"}')
    with pytest.raises(ConfigError, match=r"operating_points\.json: not an operating points record"):
        read_operating_points(tmp_path)
