"""Two-process CPU DDP (gloo) reading phantom shards through the training loader: each rank reads its
own samples, every sample once per epoch, in a global seeded order, and a run killed mid-epoch resumes
at the batch where it stopped, ending with the uninterrupted run's weights."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from radsight.config import SourceSpec
from radsight.data.assemble import build_source
from radsight.data.epoch_order import EpochLoader, EpochOrder, SeededItems
from radsight.data.sample import Batch, make_loader
from radsight.data.shards import write_shards
from radsight.data.sources.shards import ShardsSource
from radsight.train import RepeatableEpochs

SIZE, BATCH, EPOCHS, SEED = 18, 2, 2, 7
"""18 phantoms, 2 ranks of batches of 2: 9 samples and 5 steps per rank and epoch (the last batch of 1)."""


class Recording(L.LightningModule):
    """A linear model with dropout (the resumed run must draw the same masks) that writes down, per rank,
    every image it trains on."""

    def __init__(self, log: Path) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(32 * 32, 2))
        self.log_path = log

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        labels = torch.nan_to_num(batch.labels, 0.0)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(self.net(batch.images), labels)
        with (self.log_path / f"rank{self.global_rank}.jsonl").open("a") as log:
            line = {"epoch": self.current_epoch, "batch": batch_idx, "images": [m.path for m in batch.meta]}
            log.write(json.dumps({**line, "loss": loss.item()}) + "\n")
        return loss

    def on_train_end(self) -> None:
        if self.global_rank == 0:
            torch.save(self.state_dict(), self.log_path / "weights.pt")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Killed(Exception):
    pass


class KillAt(Callback):
    """Stops the run, as a kill would, before the given (epoch, batch) trains."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.at = (epoch, batch)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if (trainer.current_epoch, batch_idx) == self.at:
            raise Killed


def fit(shards: Path, out: Path, kill: tuple[int, int] | None = None, resume: Path | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    dataset = ShardsSource(shards)
    loader = make_loader(
        SeededItems(dataset),
        BATCH,
        shuffle=False,
        sampler=EpochOrder(len(dataset), SEED, 0),
        loader=EpochLoader,
    )
    callbacks: list[Callback] = [
        RepeatableEpochs(SEED, 0, loader),
        ModelCheckpoint(dirpath=out, save_last=True, every_n_train_steps=2),
        *([KillAt(*kill)] if kill else []),
    ]
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_fork",
        max_epochs=EPOCHS,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=True,
        default_root_dir=out,
    )
    L.seed_everything(SEED, verbose=False)
    module = Recording(out)
    try:
        trainer.fit(module, loader, ckpt_path=resume, weights_only=True)
    except Exception as error:  # the launcher reports a rank's exception as its own
        if kill is None or "Killed" not in f"{error!r} {error}":
            raise


def seen(out: Path, rank: int) -> list[dict]:
    return [json.loads(line) for line in (out / f"rank{rank}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "shards"
    spec = SourceSpec(name="phantom", options={"n": SIZE, "size": [32, 32], "seed": 3})
    write_shards(build_source(spec), "phantom", spec.options, out, progress=False)
    return out


def test_ranks_read_distinct_samples_and_a_mid_epoch_kill_resumes_exactly(
    shards: Path, tmp_path: Path
) -> None:
    whole = tmp_path / "whole"
    fit(shards, whole)
    ranks = [seen(whole, rank) for rank in (0, 1)]
    for epoch in range(EPOCHS):
        per_rank = [[p for line in log if line["epoch"] == epoch for p in line["images"]] for log in ranks]
        assert [len(images) for images in per_rank] == [SIZE // 2, SIZE // 2]
        assert sorted(per_rank[0] + per_rank[1]) == sorted({p for images in per_rank for p in images})
        assert len(set(per_rank[0]) | set(per_rank[1])) == SIZE  # every sample once per epoch
    orders = [
        [p for line in ranks[0] if line["epoch"] == epoch for p in line["images"]] for epoch in range(2)
    ]
    assert orders[0] != orders[1]  # reshuffled each epoch

    cut = tmp_path / "cut"
    fit(shards, cut, kill=(1, 3))  # the last checkpoint is at global step 8, after epoch 1's batch 2
    resumed = tmp_path / "resumed"
    fit(shards, resumed, resume=cut / "last.ckpt")
    for rank in (0, 1):
        before, after = seen(cut, rank), seen(resumed, rank)
        assert (after[0]["epoch"], after[0]["batch"]) == (1, 3)  # not the epoch's first batch again
        assert before + after == seen(whole, rank)
    expected, found = torch.load(whole / "weights.pt"), torch.load(resumed / "weights.pt")
    assert all(torch.equal(expected[name], found[name]) for name in expected)


@pytest.mark.parametrize("skip", [0, 2])
def test_each_rank_deals_its_slice_of_one_permutation(monkeypatch: pytest.MonkeyPatch, skip: int) -> None:
    """10 images over 3 ranks: 3 each, none twice, one sits the epoch out; ``skip`` passes over the
    first items of this rank's share once."""
    import radsight.data.epoch_order as epoch_order

    shares = []
    for rank in range(3):
        monkeypatch.setattr(epoch_order, "_world", lambda rank=rank: (rank, 3))
        order = EpochOrder(10, seed=4, stage=0, epoch=2)
        assert len(order) == 3
        order.skip = skip
        shares.append([index for _, index in order])
        assert [index for _, index in order][skip:] == shares[-1]  # the next iteration deals it whole
    monkeypatch.setattr(epoch_order, "_world", lambda: (0, 1))
    whole = [index for _, index in EpochOrder(10, seed=4, stage=0, epoch=2)]
    assert shares == [whole[:9][rank::3][skip:] for rank in range(3)]
    assert len({i for share in shares for i in share}) == sum(len(share) for share in shares)
