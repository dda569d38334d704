"""How much a frozen encoder's features say about the labels: the linear-probe AUROC.

A logistic regression on standardised features, scored out of fold (folds grouped by patient and
stratified by the label), so the score is of features the probe never fitted; the mean over labels that
have both classes in every fold. Fixed settings, so that two encoders are compared by their features
only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from radsight.errors import DataError

PROBE_FOLDS = 5
PROBE_C = 1.0  # inverse L2 strength of the logistic regression


def probe_auroc(
    features: np.ndarray,
    labels: np.ndarray,
    patient_ids: Sequence[str],
    *,
    folds: int = PROBE_FOLDS,
    seed: int = 0,
) -> float:
    """Mean over labels of the out-of-fold AUROC of a linear probe; NaN labels leave their images out.

    A label needs at least two images of each class (and two patients) to be scored; a DataError when none
    can be.
    """
    groups = np.asarray(patient_ids)
    scores = []
    for column in np.asarray(labels, dtype=np.float64).T:
        known = ~np.isnan(column)
        y, x, g = column[known].astype(int), features[known], groups[known]
        smallest = min(int(y.sum()), int((1 - y).sum()))
        splits = min(folds, smallest, len(np.unique(g)))
        if splits < 2:
            continue
        out_of_fold = np.zeros(len(y))
        folding = StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=seed)
        for train, held in folding.split(x, y, g):
            if len(np.unique(y[train])) < 2:
                out_of_fold[held] = y[train].mean()
                continue
            probe = make_pipeline(StandardScaler(), LogisticRegression(C=PROBE_C, max_iter=2000))
            probe.fit(x[train], y[train])
            out_of_fold[held] = probe.predict_proba(x[held])[:, 1]
        scores.append(roc_auc_score(y, out_of_fold))
    if not scores:
        raise DataError(None, "linear probe: no label has two images of each class in the validation split")
    return float(np.mean(scores))
