"""Shards written by ``radsight data shard`` as a source (name ``"shards"``): the written source's
samples, field by field, read from a local folder or ``s3://bucket/prefix``.

The root is the shards' folder or URL. S3 credentials and endpoint come from the usual AWS
environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for a MinIO or other
S3-compatible store) or from the option ``storage_options`` (boto3 client arguments, e.g.
``{endpoint_url: http://minio:9000}``); ``cache_dir`` is where litdata keeps downloaded chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from radsight.data.sample import Sample
from radsight.data.shards import ShardReader, labels_subset
from radsight.data.sources.base import BadFilePolicy, Transform, read_or_skip
from radsight.errors import ConfigError


class ShardsSource(Dataset):
    """The samples of a source packed into shards; ``source_name`` is that source's (its patients and
    images are named as the folder source names them, so a run's split is the same either way)."""

    name = "shards"

    def __init__(
        self,
        root: str | Path,
        *,
        labels: Sequence[str] | None = None,
        storage_options: dict[str, Any] | None = None,
        cache_dir: str | None = None,
        transform: Transform | None = None,
        on_bad_file: BadFilePolicy = "raise",
    ) -> None:
        if on_bad_file not in ("raise", "skip"):
            raise ConfigError(f"on_bad_file must be 'raise' or 'skip', not {on_bad_file!r}")
        self.reader = ShardReader(root, storage_options, cache_dir)
        catalog = self.reader.catalog
        self.source_name = catalog.source
        self._label_index = labels_subset(catalog, labels)
        self.label_names = [catalog.label_names[i] for i in self._label_index]
        self.read_options = catalog.read_options
        self.transform = transform
        self.on_bad_file = on_bad_file
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.reader)

    @property
    def patient_ids(self) -> list[str]:
        return list(self.reader.catalog.patient_ids)

    @property
    def image_ids(self) -> list[str]:
        return list(self.reader.catalog.image_ids)

    @property
    def label_matrix(self) -> np.ndarray:
        return self.reader.catalog.label_matrix[:, self._label_index]

    @property
    def annotated(self) -> np.ndarray:
        return np.asarray(self.reader.catalog.annotated, dtype=bool)

    @property
    def predefined_split(self) -> list[str] | None:
        return self.reader.catalog.predefined_split

    def __getitem__(self, index: int) -> Sample | None:
        sample = read_or_skip(lambda: self.reader[index], self.on_bad_file, self.skipped)
        if sample is None:
            return None
        if sample.labels is not None and len(self._label_index) != len(self.reader.catalog.label_names):
            sample = sample.replace(labels=sample.labels[torch.as_tensor(self._label_index)])
        return self.transform(sample) if self.transform is not None else sample
