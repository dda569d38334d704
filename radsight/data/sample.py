"""The one record every dataset yields, and the batch every method consumes.

Absent annotations stay ``None`` (per sample) or NaN with a validity flag (in a batch), so that a
missing label, mask or gaze map can never be mistaken for a negative one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from radsight.errors import DataError

if TYPE_CHECKING:
    from radsight.data.image_io import DicomIdentity
    from radsight.data.transforms import Geometry


@dataclass
class SampleMeta:
    """Where a sample came from; ``original_size`` is (height, width) of the file as stored,
    ``geometry`` how the image maps back onto it (None: the image is the file as stored), and ``dicom``
    which study, series and instance it is (None for PNG/JPEG), so results can be filed back with it."""

    source: str
    path: str
    patient_id: str
    view: str | None = None
    original_size: tuple[int, int] | None = None
    pixel_spacing: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    geometry: Geometry | None = None
    dicom: DicomIdentity | None = None


@dataclass
class Sample:
    """One image with every kind of expert signal it has.

    - ``image``: 1 x H x W float32 in [0, 1].
    - ``labels``: float vector over the source's ``label_names``; 1 positive, 0 negative, NaN not annotated.
    - ``boxes``: N x 4 float, xyxy in pixels of ``image``; ``box_labels`` names each box.
    - ``masks``: named H x W bool masks in the frame of ``image`` (lesions, lungs...).
    - ``fixations``: N x 3 float, (x, y, duration in seconds) in pixels of ``image``.
    - ``report``: free text written about the image.
    - ``token_ids``: 1-D int64 token ids (e.g. the tokenised report), for methods that read or write text.
    """

    image: Tensor
    meta: SampleMeta
    labels: Tensor | None = None
    boxes: Tensor | None = None
    box_labels: list[str] | None = None
    masks: dict[str, Tensor] | None = None
    fixations: Tensor | None = None
    report: str | None = None
    gaze_map: Tensor | None = None
    token_ids: Tensor | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the image as it is now."""
        return int(self.image.shape[-2]), int(self.image.shape[-1])

    def replace(self, **changes: Any) -> Sample:
        return replace(self, **changes)


@dataclass
class Batch:
    """Samples stacked for a model.

    Images must share a size (transforms ensure it). Labels of samples without labels become NaN rows;
    gaze maps and named masks are stacked with NaN for samples that lack them, and a bool vector says
    which rows are real. Variable-length annotations stay per-sample lists with ``None`` for absent.
    Token ids are padded to the longest sequence with the pad id: ``token_mask`` marks the real tokens
    (an attention mask) and ``token_valid`` the samples that have token ids at all.
    """

    images: Tensor
    labels: Tensor | None
    boxes: list[Tensor | None]
    box_labels: list[list[str] | None]
    masks: dict[str, Tensor]
    mask_valid: dict[str, Tensor]
    gaze_maps: Tensor | None
    gaze_valid: Tensor | None
    fixations: list[Tensor | None]
    reports: list[str | None]
    meta: list[SampleMeta]
    token_ids: Tensor | None = None
    token_mask: Tensor | None = None
    token_valid: Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        """Move the tensors a model consumes; per-sample lists stay where they are."""

        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return replace(
            self,
            images=self.images.to(device, non_blocking=True),
            labels=move(self.labels),
            masks={k: v.to(device) for k, v in self.masks.items()},
            mask_valid={k: v.to(device) for k, v in self.mask_valid.items()},
            gaze_maps=move(self.gaze_maps),
            gaze_valid=move(self.gaze_valid),
            token_ids=move(self.token_ids),
            token_mask=move(self.token_mask),
            token_valid=move(self.token_valid),
        )


def _stack_optional(items: list[Tensor | None], like: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """Stack per-sample tensors, filling absent ones with NaN; None when no sample has one."""
    present = [t for t in items if t is not None]
    if not present:
        return None, None
    shape = present[0].shape
    for t in present:
        if t.shape != shape:
            raise ValueError(f"cannot batch annotations of shapes {tuple(shape)} and {tuple(t.shape)}")
    nan = torch.full(shape, float("nan"), dtype=torch.float32, device=like.device)
    stacked = torch.stack([nan if t is None else t.to(torch.float32) for t in items])
    valid = torch.tensor([t is not None for t in items], dtype=torch.bool)
    return stacked, valid


def _pad_tokens(
    items: list[Tensor | None], pad_id: int
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Token ids padded to B x L with ``pad_id``, the B x L mask of real tokens and the B flags of
    samples that have ids; three Nones when no sample has any."""
    present = [t for t in items if t is not None]
    if not present:
        return None, None, None
    for t in present:
        if t.ndim != 1 or t.dtype != torch.int64:
            raise ValueError(f"token ids must be a 1-D int64 tensor, got {t.dtype} of shape {tuple(t.shape)}")
    length = max(len(t) for t in present)
    ids = torch.full((len(items), length), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(items), length), dtype=torch.bool)
    for row, t in enumerate(items):
        if t is not None:
            ids[row, : len(t)] = t
            mask[row, : len(t)] = True
    return ids, mask, torch.tensor([t is not None for t in items], dtype=torch.bool)


def collate(items: list[Sample | None], pad_id: int = 0) -> Batch:
    """Stack samples into a Batch, keeping absent annotations absent (NaN plus a validity flag).

    ``None`` items are bad files a source skipped (``on_bad_file="skip"``); they are dropped here.
    ``pad_id`` fills token ids beyond each sequence's end (the tokenizer's padding token).
    """
    samples = [s for s in items if s is not None]
    if not samples:
        raise DataError(None, f"all {len(items)} samples of a batch were bad files that were skipped")
    sizes = {s.size for s in samples}
    if len(sizes) > 1:
        raise ValueError(f"images of different sizes {sorted(sizes)} in one batch: add a resize transform")
    images = torch.stack([s.image for s in samples])
    label_lengths = {int(s.labels.numel()) for s in samples if s.labels is not None}
    if len(label_lengths) > 1:
        raise ValueError(f"label vectors of different lengths {sorted(label_lengths)} in one batch")
    labels = None
    if label_lengths:
        (n,) = label_lengths
        labels = torch.stack(
            [s.labels.float() if s.labels is not None else torch.full((n,), float("nan")) for s in samples]
        )
    mask_names = sorted({name for s in samples for name in (s.masks or {})})
    masks: dict[str, Tensor] = {}
    mask_valid: dict[str, Tensor] = {}
    for name in mask_names:
        stacked, valid = _stack_optional([(s.masks or {}).get(name) for s in samples], images)
        assert stacked is not None and valid is not None
        masks[name], mask_valid[name] = stacked, valid
    gaze_maps, gaze_valid = _stack_optional([s.gaze_map for s in samples], images)
    token_ids, token_mask, token_valid = _pad_tokens([s.token_ids for s in samples], pad_id)
    return Batch(
        images=images,
        labels=labels,
        boxes=[s.boxes for s in samples],
        box_labels=[s.box_labels for s in samples],
        masks=masks,
        mask_valid=mask_valid,
        gaze_maps=gaze_maps,
        gaze_valid=gaze_valid,
        fixations=[s.fixations for s in samples],
        reports=[s.report for s in samples],
        meta=[s.meta for s in samples],
        token_ids=token_ids,
        token_mask=token_mask,
        token_valid=token_valid,
    )


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int = 0,
    pad_id: int = 0,
    sampler: Sampler | None = None,
    loader: type[DataLoader] = DataLoader,
) -> DataLoader:
    """A loader of :class:`Batch` (absent annotations stay absent), used by training and evaluation.

    ``sampler`` deals the indices instead of the dataset's order. A loader that does not shuffle draws
    its workers' seed from a generator of its own, so creating one (a validation pass) never moves the
    global random state that the training steps draw from (dropout). ``loader`` is the class built
    (training's resumable one)."""
    return loader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        collate_fn=partial(collate, pad_id=pad_id),
        persistent_workers=num_workers > 0,
        drop_last=False,
        sampler=sampler,
        generator=None if shuffle else torch.Generator(),
    )
